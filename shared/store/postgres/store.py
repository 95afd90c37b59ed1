"""The PostgreSQL store: every method of shared/store/base.py's Store, on a psycopg 3 async
connection pool. SQL: shared/sql/postgres/*.sql (named like SQLite's).

Each method is one transaction on a pooled connection (READ COMMITTED). The fences that keep
many workers and schedulers on many hosts apart are in the SQL: claims take rows with
FOR UPDATE SKIP LOCKED; every transition out of `running` names status and claim token;
idempotency keys and (schedule, fire time) pairs are unique indexes; the scheduler's
compare-and-set on next_fire_at runs in the transaction that inserts the task. Wake-ups are
NOTIFYs sent in the transaction that made work runnable (listener.py).

Driver errors never leave: a lost or unreachable server is StorageUnavailable (the caller
retries; the pool replaces broken connections), a lock or serialization conflict that
outlived its retries is StorageBusy, a full disk StorageFull.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

import msgspec
import psycopg
import structlog
from msgspec import UNSET, UnsetType
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.errors import (
    IdempotencyConflict,
    SchemaNotReady,
    SchemaTooNew,
    StorageBusy,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from shared.queue_schemas import QueueGate, QueueInfo
from shared.schedule_schemas import Schedule
from shared.schemas import STATUSES, Attempt, Status, Task, TaskPage, to_datetime
from shared.settings import Settings
from shared.sql import Queries
from shared.store import redact
from shared.store.base import (
    Claimed,
    Depth,
    DueSchedule,
    FailOutcome,
    Fire,
    FirePlan,
    Heartbeat,
    NewTask,
    NextFire,
    PlanFire,
    QueueStats,
    ScheduleFields,
    ScheduleTiming,
    StorageInfo,
    Throughput,
    WaitingTask,
    WorkerSeen,
    fill_throughput,
    throughput_window,
)
from shared.store.claiming import (
    ClaimBudget,
    limited,
    most_urgent,
    per_queue_names,
    queue_overview,
)
from shared.store.postgres import schema
from shared.store.postgres.listener import KEEPALIVES, PostgresListener
from shared.store.postgres.url import explain

log = structlog.get_logger("localflow.store.postgres")

P = ParamSpec("P")
T = TypeVar("T")
Row = dict[str, Any]

_CURSOR_START = "~"  # sorts after every ULID character (ids are COLLATE "C")
_CHECKOUT_SECONDS = 5.0
_FORCED_CHECK_SECONDS = 5.0  # see change_token
_CONFLICT_RETRIES = 5  # a deadlock or serialization failure is retried this many times


Q = Queries("postgres", "queue")
S = Queries("postgres", "schedules")
D = Queries("postgres", "dashboard")
M = Queries("postgres", "metrics")


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def _task(row: Row) -> Task:
    return Task(
        id=row["id"], type=row["type"], payload=msgspec.json.decode(row["payload"]),
        status=row["status"], priority=row["priority"], run_at=to_datetime(row["run_at"]),
        attempts=row["attempts"], max_attempts=row["max_attempts"], timeout=row["timeout"],
        idempotency_key=row["idempotency_key"],
        result=None if row["result"] is None else msgspec.json.decode(row["result"]),
        last_error=row["last_error"], cancel_requested=bool(row["cancel_requested"]),
        created_at=to_datetime(row["created_at"]), updated_at=to_datetime(row["updated_at"]),
        started_at=to_datetime(row["started_at"]), finished_at=to_datetime(row["finished_at"]),
        schedule_id=row["schedule_id"], queue=row["queue"],
    )


def _gate(row: Row) -> QueueGate:
    return QueueGate(name=row["name"], concurrency=row["concurrency"],
                     paused=bool(row["paused"]))


def _attempt(row: Row) -> Attempt:
    return Attempt(
        attempt=row["attempt"], worker_id=row["worker_id"],
        started_at=to_datetime(row["started_at"]), finished_at=to_datetime(row["finished_at"]),
        outcome=row["outcome"], error=row["error"],
        output=None if row["output"] is None else msgspec.json.decode(row["output"]),
    )


def _schedule(row: Row) -> Schedule:
    return Schedule(
        id=row["id"], name=row["name"], cron_expr=row["cron_expr"], timezone=row["timezone"],
        task_type=row["task_type"], payload=msgspec.json.decode(row["payload"]),
        enabled=bool(row["enabled"]), priority=row["priority"],
        max_attempts=row["max_attempts"], timeout=row["timeout"], overlap=row["overlap"],
        missed=row["missed"], next_fire_at=to_datetime(row["next_fire_at"]),
        last_fire_at=to_datetime(row["last_fire_at"]), last_task_id=row["last_task_id"],
        last_task_status=row["last_task_status"], last_skip_at=to_datetime(row["last_skip_at"]),
        last_skip_reason=row["last_skip_reason"], created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]), queue=row["queue"],
    )


def _fields(row: Row) -> ScheduleFields:
    return ScheduleFields(
        name=row["name"], cron_expr=row["cron_expr"], timezone=row["timezone"],
        task_type=row["task_type"], payload=msgspec.json.decode(row["payload"]),
        enabled=bool(row["enabled"]), priority=row["priority"],
        max_attempts=row["max_attempts"], timeout=row["timeout"], overlap=row["overlap"],
        missed=row["missed"], queue=row["queue"],
    )


def _fields_params(fields: ScheduleFields) -> dict[str, Any]:
    params = msgspec.structs.asdict(fields)
    params["payload"] = _json(fields.payload)
    return params


def _task_params(task: NewTask, now: float) -> dict[str, Any]:
    return {
        "id": task.id, "type": task.type, "payload": _json(task.payload),
        "priority": task.priority, "run_at": task.run_at, "max_attempts": task.max_attempts,
        "timeout": task.timeout, "idempotency_key": task.idempotency_key,
        "request_hash": task.request_hash, "now": now, "queue": task.queue,
    }


def _translated(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Driver errors become the interface's StorageError family, in words, no password."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store: PostgresStore = args[0]  # type: ignore[assignment]
        try:
            return await method(*args, **kwargs)
        except StorageError:
            raise
        except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure,
                pg_errors.LockNotAvailable, pg_errors.QueryCanceled) as exc:
            raise StorageBusy(f"database {store.describe()} is busy: {_line(exc)}") from None
        except pg_errors.DiskFull as exc:
            raise StorageFull(f"database {store.describe()}: disk full ({_line(exc)})") from None
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StorageUnavailable(explain(store.url, exc)) from None
        except psycopg.Error as exc:
            raise StorageError(f"database {store.describe()}: {_line(exc)}") from None

    return wrapper


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresStore:
    engine = "postgresql"

    def __init__(self, url: str, pool: AsyncConnectionPool[Any]) -> None:
        self.url = url
        self._pool = pool
        self._listener: PostgresListener | None = None
        self._writes = 0
        self._closed = False

    @classmethod
    async def open(cls, settings: Settings) -> PostgresStore:
        """Connect, check the schema, open the pool. Raises StorageUnavailable with one line
        (refused, wrong password, no such database...), SchemaNotReady or SchemaTooNew."""
        url = settings.db
        try:
            async with await psycopg.AsyncConnection.connect(url, connect_timeout=10) as conn:
                schema.check_server(url, conn.info.server_version)
                version = await _schema_version(conn)
        except psycopg.Error as exc:
            raise StorageUnavailable(explain(url, exc)) from None
        newest = schema.newest_version()
        if version > newest:
            raise SchemaTooNew(
                f"database {redact(url)} has schema version {version}, but this LocalFlow "
                f"knows only up to {newest}: upgrade LocalFlow, or point --db elsewhere"
            )
        if version < newest:
            raise SchemaNotReady(
                f"database {redact(url)} is at schema version {version}, expected {newest}: "
                "run `localflow migrate` (serve, api and worker migrate on start)"
            )
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            # API requests, claims, heartbeats, acks and the scheduler of one process, at
            # once; PostgreSQL's default allows 100 connections for every process together.
            max_size=max(4, min(20, settings.workers + 4)),
            # Autocommit: a read is one round trip (no BEGIN/COMMIT around it); writes open
            # their transactions explicitly (_write).
            kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": 10,
                    **KEEPALIVES},
            # A connection that died while idle in the pool (server restarted) is found at
            # checkout and replaced, instead of failing the caller's statement.
            check=AsyncConnectionPool.check_connection,
            # How long a caller waits for a connection. While the server is down the pool
            # keeps reconnecting in the background; a caller gets StorageUnavailable after
            # this and retries, rather than hanging for as long as the outage lasts.
            timeout=_CHECKOUT_SECONDS,
            open=False,
            name="localflow",
        )
        try:
            await pool.open(wait=True, timeout=30.0)
        except PoolTimeout as exc:
            await pool.close()
            raise StorageUnavailable(explain(url, exc)) from None
        return cls(url, pool)

    # -- plumbing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._pool.connection() as conn:
            yield conn

    async def _write(self, op: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run op(conn) in one transaction and commit; deadlocks and serialization failures
        (possible between concurrent writers) roll back and run again."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    result = await op(conn)
                self._writes += 1
                return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(0.001 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    async def _rows(conn: psycopg.AsyncConnection[Any], query: str,
                    params: dict[str, Any] | None = None) -> list[Row]:
        cur = await conn.execute(query, params)
        return await cur.fetchall()

    @staticmethod
    async def _count(conn: psycopg.AsyncConnection[Any], query: str,
                     params: dict[str, Any] | None = None) -> int:
        cur = await conn.execute(query, params)
        return cur.rowcount

    @staticmethod
    async def _notify(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(Q.notify)

    # -- Store ---------------------------------------------------------------------------

    def describe(self) -> str:
        return redact(self.url)

    @_translated
    async def schema_version(self) -> int:
        async with self._read() as conn:
            return await _schema_version(conn)

    def newest_schema_version(self) -> int:
        return schema.newest_version()

    def notify(self) -> None:
        """Nothing to do: every write that makes work runnable NOTIFYs in its transaction."""

    def listener(self) -> PostgresListener:
        if self._listener is None:
            self._listener = PostgresListener(self.url)
        return self._listener

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            await self._listener.close()
        await self._pool.close()

    @property
    def write_transactions(self) -> int:
        return self._writes

    # -- tasks ---------------------------------------------------------------------------

    @_translated
    async def insert_tasks(
        self, tasks: Sequence[NewTask], now: float
    ) -> list[tuple[Task, bool]]:
        async def op(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Task, bool]]:
            # Pipeline mode: every INSERT goes out before the first answer comes back, so a
            # batch of n tasks costs about one round trip, not n.
            cursors = []
            async with conn.pipeline():
                for new in tasks:
                    cur = conn.cursor()
                    await cur.execute(Q.insert_task + " RETURNING *", _task_params(new, now))
                    cursors.append(cur)
            results = []
            for new, cur in zip(tasks, cursors, strict=True):
                rows = await cur.fetchall()
                if rows:
                    results.append((_task(rows[0]), True))
                    continue
                existing = await self._rows(conn, Q.get_task_by_key,
                                            {"key": new.idempotency_key})
                if not existing:
                    # The conflict was on the id, not the key: ids are ULIDs, so this is a
                    # caller's bug rather than a race; say so instead of inventing a task.
                    raise StorageError(f"task id {new.id} already exists")
                if existing[0]["request_hash"] != new.request_hash:
                    raise IdempotencyConflict(new.idempotency_key or "", existing[0]["id"])
                results.append((_task(existing[0]), False))
            if any(created for _, created in results):
                await self._notify(conn)
            return results

        if not tasks:
            return []
        return await self._write(op)

    @_translated
    async def claim(
        self, worker_id: str, limit: int, lease_until: float, now: float,
        queues: Sequence[str] | None = None,
    ) -> list[Claimed]:
        if limit <= 0:
            return []
        only = list(queues) if queues else None

        async def op(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
            budget = ClaimBudget(limit, *await self._gates(conn, only, lock=True))
            with_work = None
            if budget.closed and not only:
                with_work = [r["name"] for r in await self._rows(conn, Q.queues_with_work)]
            probe = per_queue_names(budget, only, with_work)
            rows: list[Row] = []
            while (batch := budget.next_batch()) > 0:
                params = {"now": now, "lease_until": lease_until, "worker_id": worker_id,
                          "limit": batch, "closed": budget.closed_list(), "only": only}
                if probe is None:
                    taken = await self._rows(conn, Q.claim, params)
                else:
                    candidates = []
                    for name in probe:
                        if name not in budget.closed:
                            candidates += await self._rows(conn, Q.claim_candidates_in_queue,
                                                           {"queue": name, "now": now,
                                                            "limit": batch})
                    ids = most_urgent(candidates, batch)
                    taken = (await self._rows(conn, Q.claim_ids, {**params, "ids": ids})
                             if ids else [])
                budget.took([r["queue"] for r in taken])
                rows.extend(taken)
            if rows:
                async with conn.cursor() as cur:
                    await cur.executemany(Q.insert_attempt, [
                        {"id": r["id"], "attempt": r["attempts"], "worker_id": worker_id,
                         "now": now} for r in rows
                    ])
            return rows

        rows = await self._write(op)
        claimed = [
            Claimed(
                id=r["id"], type=r["type"], payload=msgspec.json.decode(r["payload"]),
                attempt=r["attempts"], max_attempts=r["max_attempts"], timeout=r["timeout"],
                priority=r["priority"], run_at=r["run_at"], token=r["claim_token"],
                queue=r["queue"],
            )
            for r in rows
        ]
        # RETURNING gives no order; run the most urgent first.
        claimed.sort(key=lambda c: (-c.priority, c.run_at, c.id))
        return claimed

    async def _gates(
        self, conn: psycopg.AsyncConnection[Any], only: list[str] | None, *, lock: bool
    ) -> tuple[list[QueueGate], dict[str, int]]:
        """The queue settings this worker is subject to and, for its limited queues, their
        running tasks. With `lock`, the limited queues' rows stay locked until the caller's
        transaction ends (see lock_limited_queues): the fence of the global limits."""
        gates = [g for g in map(_gate, await self._rows(conn, Q.queue_gates))
                 if not only or g.name in only]
        names = limited(gates)
        if not names:
            return gates, {}
        if lock:
            fresh = {g.name: g for g in map(_gate, await self._rows(
                conn, Q.lock_limited_queues, {"names": names}))}
            gates = [fresh.get(g.name, g) for g in gates]  # as they are now, locked
            names = limited(gates)
            if not names:
                return gates, {}
        rows = await self._rows(conn, Q.running_in_queues, {"names": names})
        return gates, {r["queue"]: r["n"] for r in rows}

    @_translated
    async def extend_leases(
        self, tokens: Sequence[str], lease_until: float, now: float
    ) -> Heartbeat:
        if not tokens:
            return Heartbeat(held=set(), cancel=set())
        params = {"lease_until": lease_until, "now": now, "tokens": list(tokens)}

        async def op(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
            return await self._rows(conn, Q.extend_leases, params)

        rows = await self._write(op)
        return Heartbeat(held={r["id"] for r in rows},
                         cancel={r["id"] for r in rows if r["cancel_requested"]})

    async def _finish_attempt(
        self, conn: psycopg.AsyncConnection[Any], task: Claimed, now: float, outcome: str,
        error: str | None, output: Any,
    ) -> None:
        await conn.execute(Q.finish_attempt, {
            "id": task.id, "attempt": task.attempt, "now": now, "outcome": outcome,
            "error": error, "output": _json(output),
        })

    @_translated
    async def complete(self, task: Claimed, result: Any, now: float) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            params = {"id": task.id, "token": task.token, "now": now, "result": _json(result)}
            if await self._count(conn, Q.complete, params) != 1:
                return False
            await self._finish_attempt(conn, task, now, "succeeded", None, result)
            return True

        return await self._write(op)

    @_translated
    async def fail(
        self, task: Claimed, *, error: str, result: Any, outcome: FailOutcome,
        retry_at: float | None, now: float,
    ) -> Status | None:
        params = {
            "id": task.id, "token": task.token, "now": now, "retry_at": retry_at,
            "retry": retry_at is not None, "error": error, "result": _json(result),
        }

        async def op(conn: psycopg.AsyncConnection[Any]) -> Status | None:
            rows = await self._rows(conn, Q.fail, params)
            if not rows:
                return None
            await self._finish_attempt(conn, task, now, outcome, error, result)
            return rows[0]["status"]

        return await self._write(op)

    @_translated
    async def release(self, task: Claimed, error: str, now: float) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            params = {"id": task.id, "token": task.token, "now": now}
            if await self._count(conn, Q.release, params) != 1:
                return False
            await self._finish_attempt(conn, task, now, "released", error, None)
            await self._notify(conn)
            return True

        return await self._write(op)

    @_translated
    async def finish_cancelled(
        self, task: Claimed, result: Any, error: str, now: float
    ) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            params = {"id": task.id, "token": task.token, "now": now, "result": _json(result),
                      "error": error}
            if await self._count(conn, Q.finish_cancelled, params) != 1:
                return False
            await self._finish_attempt(conn, task, now, "cancelled", error, result)
            return True

        return await self._write(op)

    @_translated
    async def rescue_expired(self, now: float) -> list[str]:
        async def op(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            rows = await self._rows(conn, Q.rescue_expired, {"now": now})
            if rows:
                async with conn.cursor() as cur:
                    await cur.executemany(Q.lose_attempt, [
                        {"id": r["id"], "attempt": r["attempts"], "now": now} for r in rows
                    ])
                await self._notify(conn)
            return [r["id"] for r in rows]

        return await self._write(op)

    @_translated
    async def cancel_requests(self, worker_id: str) -> set[str]:
        async with self._read() as conn:
            rows = await self._rows(conn, Q.cancel_requests_for_worker, {"worker_id": worker_id})
        return {r["id"] for r in rows}

    @_translated
    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        only = list(queues) if queues else None
        async with self._read() as conn:
            closed = ClaimBudget(1, *await self._gates(conn, only, lock=False)).closed_list()
            rows = await self._rows(conn, Q.next_run_at, {"closed": closed, "only": only})
        return rows[0]["min"] if rows else None

    @_translated
    async def worker_seen(
        self, worker_id: str, hostname: str, pid: int, slots: int, now: float
    ) -> None:
        params = {"id": worker_id, "hostname": hostname, "pid": pid, "slots": slots, "now": now}

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(Q.upsert_worker, params)

        await self._write(op)

    @_translated
    async def worker_stopped(self, worker_id: str, now: float) -> None:
        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(Q.stop_worker, {"id": worker_id, "now": now})

        await self._write(op)

    @_translated
    async def cancel(self, task_id: str, now: float) -> Task | None:
        async def op(conn: psycopg.AsyncConnection[Any]) -> Task | None:
            params = {"id": task_id, "now": now}
            changed = await self._count(conn, Q.cancel_queued, params) == 1
            if not changed:
                changed = await self._count(conn, Q.request_cancel, params) == 1
            if changed:
                await self._notify(conn)  # the worker holding it checks for cancels when woken
            rows = await self._rows(conn, Q.get_task, {"id": task_id})
            return _task(rows[0]) if rows else None

        return await self._write(op)

    @_translated
    async def retry(
        self, task_id: str, extra_attempts: int, now: float
    ) -> tuple[bool, Task | None]:
        async def op(conn: psycopg.AsyncConnection[Any]) -> tuple[bool, Task | None]:
            params = {"id": task_id, "now": now, "extra": extra_attempts}
            changed = await self._count(conn, Q.retry_task, params) == 1
            if changed:
                await self._notify(conn)
            rows = await self._rows(conn, Q.get_task, {"id": task_id})
            return changed, (_task(rows[0]) if rows else None)

        return await self._write(op)

    @_translated
    async def delete(self, task_id: str) -> Literal["deleted"] | Status | None:
        async def op(conn: psycopg.AsyncConnection[Any]) -> Literal["deleted"] | Status | None:
            if await self._count(conn, Q.delete_task, {"id": task_id}) == 1:
                return "deleted"
            rows = await self._rows(conn, Q.get_task, {"id": task_id})
            return rows[0]["status"] if rows else None

        return await self._write(op)

    @_translated
    async def get(self, task_id: str) -> Task | None:
        async with self._read() as conn:
            rows = await self._rows(conn, Q.get_task, {"id": task_id})
        return _task(rows[0]) if rows else None

    @_translated
    async def attempts(self, task_id: str) -> list[Attempt]:
        async with self._read() as conn:
            rows = await self._rows(conn, Q.list_attempts, {"id": task_id})
        return [_attempt(r) for r in rows]

    @_translated
    async def list_tasks(
        self, *, status: Status | None, type: str | None, cursor: str | None, limit: int,
        queue: str | None = None,
    ) -> TaskPage:
        params = {"status": status, "type": type, "cursor": cursor or _CURSOR_START,
                  "limit": limit + 1, "queue": queue}
        if queue is not None:
            query = Q.list_by_queue
        elif status and type:
            query = Q.list_by_status_and_type
        elif status:
            query = Q.list_by_status
        elif type:
            query = Q.list_by_type
        else:
            query = Q.list_all
        async with self._read() as conn:
            rows = await self._rows(conn, query, params)
        items = [_task(r) for r in rows[:limit]]
        next_cursor = items[-1].id if len(rows) > limit else None
        return TaskPage(items=items, next_cursor=next_cursor)

    @_translated
    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        async with self._read() as conn:
            for row in await self._rows(conn, Q.counts_by_status):
                counts[row["status"]] = row["n"]
        return counts

    # -- queues --------------------------------------------------------------------------

    @_translated
    async def queues(self) -> list[QueueInfo]:
        async with self._read() as conn:
            counts = [(r["queue"], r["status"], r["n"])
                      for r in await self._rows(conn, Q.counts_by_queue)]
            gates = [_gate(r) for r in await self._rows(conn, Q.all_queue_settings)]
        return queue_overview(counts, gates)

    @_translated
    async def queue(self, name: str) -> QueueInfo:
        async with self._read() as conn:
            counts = [(name, r["status"], r["n"])
                      for r in await self._rows(conn, Q.counts_of_queue, {"name": name})]
            gates = [_gate(r) for r in await self._rows(conn, Q.queue_settings,
                                                         {"name": name})]
        return queue_overview(counts, gates, name)[0]

    @_translated
    async def set_queue(
        self, name: str, *, concurrency: int | UnsetType | None, paused: bool | None,
        now: float,
    ) -> None:
        params = {"name": name, "now": now, "paused": paused,
                  "set_concurrency": concurrency is not UNSET,
                  "concurrency": None if concurrency is UNSET else concurrency}

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(Q.set_queue, params)
            await self._notify(conn)  # resumed, or room made: workers look now

        await self._write(op)

    # -- retention -----------------------------------------------------------------------

    @_translated
    async def take_lease(self, name: str, holder: str, until: float, now: float) -> bool:
        params = {"name": name, "holder": holder, "until": until, "now": now}

        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            return await self._count(conn, Q.take_lease, params) == 1

        return await self._write(op)

    @_translated
    async def prune(self, status: Status, before: float, limit: int) -> int:
        params = {"status": status, "before": before, "limit": limit}

        async def op(conn: psycopg.AsyncConnection[Any]) -> int:
            # Dead rows are PostgreSQL's autovacuum's to reclaim (docs/retention.md).
            return await self._count(conn, Q.prune_batch, params)

        return await self._write(op)

    @_translated
    async def task_id_by_key(self, key: str) -> str | None:
        async with self._read() as conn:
            rows = await self._rows(conn, D.task_id_by_key, {"key": key})
        return rows[0]["id"] if rows else None

    @_translated
    async def task_ids_of_schedule(
        self, schedule_id: str, *, status: Status | None = None, type: str | None = None,
        cursor: str | None = None, limit: int = 50,
    ) -> list[str]:
        params = {"schedule_id": schedule_id, "status": status, "type": type,
                  "cursor": cursor or _CURSOR_START, "limit": limit}
        async with self._read() as conn:
            rows = await self._rows(conn, D.task_ids_of_schedule, params)
        return [r["id"] for r in rows]

    # -- schedules -----------------------------------------------------------------------

    @_translated
    async def insert_schedule(
        self, schedule_id: str, fields: ScheduleFields, next_fire_at: float | None, now: float
    ) -> None:
        params = {**_fields_params(fields), "id": schedule_id, "next_fire_at": next_fire_at,
                  "now": now}

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(S.insert_schedule, params)
            await self._notify(conn)  # wakes schedulers: the first fire may be sooner

        await self._write(op)

    @_translated
    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        async with self._read() as conn:
            rows = await self._rows(conn, S.get_schedule, {"id": schedule_id})
        return _schedule(rows[0]) if rows else None

    @_translated
    async def list_schedules(self, limit: int) -> list[Schedule]:
        async with self._read() as conn:
            rows = await self._rows(conn, S.list_schedules, {"limit": limit})
        return [_schedule(r) for r in rows]

    @_translated
    async def update_schedule(
        self, schedule_id: str, fields: ScheduleFields, *, recompute: bool,
        next_fire_at: float | None, now: float,
    ) -> bool:
        params = {**_fields_params(fields), "id": schedule_id, "recompute": recompute,
                  "next_fire_at": next_fire_at, "now": now}

        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            if await self._count(conn, S.update_schedule, params) != 1:
                return False
            await self._notify(conn)
            return True

        return await self._write(op)

    @_translated
    async def delete_schedule(self, schedule_id: str) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            return await self._count(conn, S.delete_schedule, {"id": schedule_id}) == 1

        return await self._write(op)

    @_translated
    async def run_schedule_now(self, schedule_id: str, task: NewTask, now: float) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            # Recording the fire first locks the schedule's row: a concurrent delete waits
            # for this transaction, so the task never outlives a schedule deleted before it.
            recorded = await self._count(
                conn, S.record_fire, {"id": schedule_id, "fire_time": now, "task_id": task.id}
            )
            if recorded != 1:
                return False
            params = {**_task_params(task, now), "schedule_id": schedule_id,
                      "fire_time": None, "run_at": now}
            params.pop("idempotency_key")
            params.pop("request_hash")
            await conn.execute(S.insert_scheduled_task, params)
            await self._notify(conn)
            return True

        return await self._write(op)

    @_translated
    async def next_due(self) -> float | None:
        async with self._read() as conn:
            rows = await self._rows(conn, S.next_due)
        return rows[0]["min"] if rows else None

    @_translated
    async def fire_due(self, now: float, limit: int, plan: PlanFire) -> list[Fire]:
        async def op(conn: psycopg.AsyncConnection[Any]) -> list[Fire]:
            rows = await self._rows(conn, S.due_schedules, {"now": now, "limit": limit})
            fires = []
            for row in rows:
                due = DueSchedule(id=row["id"], fields=_fields(row),
                                  next_fire_at=row["next_fire_at"])
                fire = await self._carry_out(conn, due, plan(due, now), now)
                if fire is not None:
                    fires.append(fire)
            if any(f.outcome == "fired" for f in fires):
                await self._notify(conn)
            return fires

        return await self._write(op)

    async def _carry_out(
        self, conn: psycopg.AsyncConnection[Any], due: DueSchedule, p: FirePlan, now: float
    ) -> Fire | None:
        """One FirePlan, its steps in base.py's order."""
        sid = due.id

        async def skip(outcome: Any, reason: str | None = None) -> Fire:
            await conn.execute(S.record_skip, {"id": sid, "fire_time": p.fire_time,
                                               "reason": reason or outcome})
            return Fire(schedule_id=sid, fire_time=p.fire_time, outcome=outcome, late=p.late)

        advanced = await self._count(
            conn, S.advance, {"id": sid, "next": p.next_fire_at, "expected": due.next_fire_at}
        )
        if advanced != 1:
            return None  # another scheduler moved it on first: this fire is not ours
        if p.missed_fire_time is not None:
            await conn.execute(S.record_skip, {"id": sid, "fire_time": p.missed_fire_time,
                                               "reason": "missed"})
        if p.skip is not None:
            return await skip(p.skip, p.skip_reason)
        if due.fields.overlap == "skip" and await self._rows(conn, S.has_active_task,
                                                             {"id": sid}):
            return await skip("overlap")
        if p.task_error is not None or p.task is None:
            return await skip("error", p.task_error or "error: no task")
        params = {**_task_params(p.task, now), "schedule_id": sid, "fire_time": p.fire_time,
                  "run_at": p.fire_time}
        params.pop("idempotency_key")
        params.pop("request_hash")
        if await self._count(conn, S.insert_scheduled_task, params) != 1:
            # The unique index: this fire time already has its task (the clock went back).
            return await skip("already fired")
        await conn.execute(S.record_fire, {"id": sid, "fire_time": p.fire_time,
                                           "task_id": p.task.id})
        return Fire(schedule_id=sid, fire_time=p.fire_time, outcome="fired",
                    task_id=p.task.id, late=p.late)

    @_translated
    async def resync(self, now: float, next_fire: NextFire) -> int:
        async def op(conn: psycopg.AsyncConnection[Any]) -> int:
            moved = 0
            for row in await self._rows(conn, S.ahead_schedules, {"now": now}):
                timing = ScheduleTiming(id=row["id"], cron_expr=row["cron_expr"],
                                        timezone=row["timezone"],
                                        next_fire_at=row["next_fire_at"])
                should = next_fire(timing, now)
                if should is not None and should < timing.next_fire_at:
                    moved += await self._count(conn, S.advance, {
                        "id": timing.id, "next": should, "expected": timing.next_fire_at,
                    })
            return moved

        return await self._write(op)

    # -- stats ---------------------------------------------------------------------------

    @_translated
    async def throughput(self, now: float, hours: float, bucket_seconds: int) -> Throughput:
        first, _ = throughput_window(now, hours, bucket_seconds)
        params = {"bucket": bucket_seconds, "since": float(first * bucket_seconds)}
        counts: dict[int, dict[str, int]] = {}
        async with self._read() as conn:
            for row in await self._rows(conn, D.throughput, params):
                counts.setdefault(int(row["bucket"]), {})[row["status"]] = row["n"]
        return fill_throughput(counts, now, hours, bucket_seconds)

    @_translated
    async def oldest_runnable(self, now: float) -> WaitingTask | None:
        async with self._read() as conn:
            rows = await self._rows(conn, D.oldest_runnable, {"now": now})
        if not rows:
            return None
        r = rows[0]
        return WaitingTask(id=r["id"], type=r["type"], priority=r["priority"],
                           run_at=r["run_at"], created_at=r["created_at"])

    @_translated
    async def recent_workers(self, now: float, within: float) -> list[WorkerSeen]:
        async with self._read() as conn:
            workers = await self._rows(conn, D.recent_workers, {"since": now - within})
            running = {r["worker_id"]: r["n"]
                       for r in await self._rows(conn, D.running_by_worker)}
        return [
            WorkerSeen(id=w["id"], hostname=w["hostname"], pid=w["pid"], slots=w["slots"],
                       started_at=w["started_at"], last_seen=w["last_seen"],
                       stopped_at=w["stopped_at"], running=running.get(w["id"], 0))
            for w in workers
        ]

    @_translated
    async def queue_stats(self, now: float, alive_since: float) -> QueueStats:
        # One snapshot for all four answers (REPEATABLE READ): the numbers agree.
        async with self._read() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            depth = await self._rows(conn, M.live_depth)
            totals_rows = await self._rows(conn, M.totals_by_status)
            oldest = await self._rows(conn, M.oldest_runnable, {"now": now})
            alive = await self._rows(conn, M.workers_alive, {"since": alive_since})
        totals = dict.fromkeys(STATUSES, 0)
        for row in totals_rows:
            totals[row["status"]] = row["n"]
        return QueueStats(
            depth=[Depth(status=r["status"], type=r["type"], count=r["n"]) for r in depth],
            totals=totals,
            oldest_runnable_at=oldest[0]["run_at"] if oldest else None,
            workers_alive=alive[0]["n"] if alive else 0,
        )

    @_translated
    async def storage(self) -> StorageInfo:
        async with self._read() as conn:
            size = await self._rows(conn, D.database_size)
            version = await self._rows(conn, D.server_version)
        return StorageInfo(
            engine="PostgreSQL",
            version=version[0]["version"],
            location=self.describe(),
            sizes={"database": int(size[0]["bytes"])},
            details={"connections in pool": str(self._pool.get_stats().get("pool_size", 0))},
        )

    @_translated
    async def change_token(self) -> Hashable:
        """The server's transaction snapshot (next xid to assign, xids in progress): every
        committed write took an xid, so it moves on with every change (and, harmlessly,
        with writes to the server's other databases). One round trip, no table read.

        Plus a bucket of the monotonic clock, so the token also changes every few seconds
        whatever happens: a worker that read the token just after a commit its empty claim
        could not see yet would otherwise idle until woken, and a lost listener connection
        would then leave it waiting. A periodic forced check costs one claim per bucket.
        """
        async with self._read() as conn:
            rows = await self._rows(conn, "SELECT pg_current_snapshot()::text AS snapshot")
        return rows[0]["snapshot"], int(time.monotonic() // _FORCED_CHECK_SECONDS)


async def _schema_version(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT to_regclass('localflow_schema') IS NOT NULL")
    exists = await cur.fetchone()
    if not exists or not _first(exists):
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM localflow_schema")
    row = await cur.fetchone()
    return int(_first(row)) if row else 0


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


__all__ = ["PostgresStore"]
