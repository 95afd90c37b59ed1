"""The PostgreSQL store: every method of shared/store/base.py's Store, on a psycopg 3 async
connection pool. SQL: shared/sql/postgres/*.sql (named like SQLite's).

Each method is one transaction on a pooled connection (READ COMMITTED); the hot ones (claim,
the four task outcomes, heartbeats, rescue) are one statement each, run in autocommit: one
round trip, no BEGIN/COMMIT. Task outcomes, and submissions, that arrive together are
group-committed: one statement over arrays for the whole batch (batch.py). psycopg prepares a
statement on a connection after its fifth use (prepare_threshold, left at its default), and
the batched statements' text does not depend on the batch size. The fences that keep
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
import select
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

import msgspec
import psycopg
import structlog
from msgspec import UNSET, UnsetType
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shared.audit import AuditEntry, AuditPage, entry_of_row, entry_row
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
from shared.schemas import (
    Attempt,
    QueuedView,
    Status,
    Task,
    TaskPage,
    to_datetime,
)
from shared.settings import Settings
from shared.sql import Queries
from shared.store import redact
from shared.store.base import (
    COUNTED_TABLES,
    QUEUE_SETTINGS_READ,
    TRANSFER_COLUMNS,
    Claimed,
    Depth,
    DueDelivery,
    DueSchedule,
    EventPage,
    EventStart,
    FailOutcome,
    Fire,
    FirePlan,
    Heartbeat,
    Imported,
    LiveOutput,
    NewTask,
    NextFire,
    PlanFire,
    QueueStats,
    ScheduleFields,
    ScheduleTiming,
    StorageInfo,
    TaskEvent,
    Throughput,
    TransferRow,
    TransferTable,
    WaitingTask,
    WorkerSeen,
    attach_attempts,
    attach_deliveries,
    fill_throughput,
    live_output_from,
    live_output_params,
    throughput_window,
)
from shared.store.claiming import (
    ClaimBudget,
    limited,
    most_urgent,
    per_queue_names,
    queue_overview,
)
from shared.store.counting import (
    Kind,
    TaskCounts,
    by_queue,
    live_depth,
    of_schedule,
    queued_views,
    totals,
)
from shared.store.postgres import schema
from shared.store.postgres.batch import Coalescer
from shared.store.postgres.listener import KEEPALIVES, TASKS_CHANNEL, PostgresListener
from shared.store.postgres.url import explain
from shared.task_events import cursor_key, make_cursor

log = structlog.get_logger("localflow.store.postgres")

P = ParamSpec("P")
Result = TypeVar("Result")
Row = dict[str, Any]

_CURSOR_START = "~"  # sorts after every ULID character (ids are COLLATE "C")
_CHECKOUT_SECONDS = 5.0
_FORCED_CHECK_SECONDS = 5.0  # see change_token
_CONFLICT_RETRIES = 5  # a deadlock or serialization failure is retried this many times
_IDLE_CHECK_SECONDS = 5.0  # a pooled connection idle longer is checked with a round trip


Q = Queries("postgres", "queue")
S = Queries("postgres", "schedules")
D = Queries("postgres", "dashboard")
M = Queries("postgres", "metrics")
_COUNT_UP_TO: dict[Kind, str] = {
    "due": D.count_due_up_to, "waiting": D.count_waiting_up_to,
    "retrying": D.count_retrying_up_to,
}
T = Queries("postgres", "transfer")
A = Queries("postgres", "audit")
W = Queries("postgres", "webhooks")


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
        schedule_id=row["schedule_id"], queue=row["queue"], callback_url=row["callback_url"],
    )


def _due_delivery(row: Row) -> DueDelivery:
    return DueDelivery(id=row["id"], task_id=row["task_id"], url=row["url"],
                       task_status=row["task_status"], tries=row["tries"],
                       token=row["lease_token"])


def _delivery(row: Row) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "task_id", "url", "task_status", "state", "tries",
                               "next_try_at", "created_at", "finished_at")}
    out["history"] = msgspec.json.decode(row["history"])
    return out


def _event(row: Row) -> TaskEvent:
    return TaskEvent(cursor=make_cursor(row["xid"], row["id"]), task_id=row["task_id"],
                     status=row["status"], attempts=row["attempts"], type=row["type"],
                     time=row["time"], queue=row["queue"])


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
        callback_url=row["callback_url"],
    )


def _fields(row: Row) -> ScheduleFields:
    return ScheduleFields(
        name=row["name"], cron_expr=row["cron_expr"], timezone=row["timezone"],
        task_type=row["task_type"], payload=msgspec.json.decode(row["payload"]),
        enabled=bool(row["enabled"]), priority=row["priority"],
        max_attempts=row["max_attempts"], timeout=row["timeout"], overlap=row["overlap"],
        missed=row["missed"], queue=row["queue"], callback_url=row["callback_url"],
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
        "callback_url": task.callback_url,
    }


def _translated(method: Callable[P, Awaitable[Result]]) -> Callable[P, Awaitable[Result]]:
    """Driver errors become the interface's StorageError family, in words, no password."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Result:
        store: PostgresStore = args[0]  # type: ignore[assignment]
        try:
            return await method(*args, **kwargs)
        except StorageError:
            raise
        except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure,
                pg_errors.LockNotAvailable, pg_errors.QueryCanceled) as exc:
            raise StorageBusy(f"database {store.describe()} is busy: {_line(exc)}") from None
        except pg_errors.DiskFull as exc:
            raise StorageFull(f"the disk holding the database {store.describe()} is full; nothing "
                              f"was written ({_line(exc)})") from None
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StorageUnavailable(explain(store.url, exc)) from None
        except psycopg.Error as exc:
            raise StorageError(f"database {store.describe()}: {_line(exc)}") from None

    return wrapper


class _SameClaimTwice(Exception):
    """A batch names one claim (task id and token) twice: the fence could not tell the
    callers apart, so the coalescer runs each alone (the second then finds it changed)."""


def _outcome_arrays(tasks: Sequence[Claimed], nows: Sequence[float]) -> dict[str, Any]:
    if len({(t.id, t.token) for t in tasks}) < len(tasks):
        raise _SameClaimTwice
    return {"ids": [t.id for t in tasks], "tokens": [t.token for t in tasks],
            "attempts": [t.attempt for t in tasks], "nows": list(nows)}


class _CheckoutCheck:
    """The pool's check of a connection it hands out, without a round trip for one in
    steady use.

    psycopg_pool's own check (an empty query) costs a round trip per checkout, which on the
    hot path doubled the round trips of every claim and every batch of outcomes. A
    connection the server closed (restart, pg_terminate_backend, idle timeout) has something
    to read on its socket while it sits idle in the pool: the server's goodbye, or EOF. So a
    connection gets the round-trip check only if its socket has input waiting, or it was
    idle for more than _IDLE_CHECK_SECONDS (a connection a firewall dropped without a word),
    or its last use ended in an error. A check that fails makes the pool replace the
    connection before any caller sees it.
    """

    def __init__(self) -> None:
        self._last_ok: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def used(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Record that a use of `conn` ended without an error."""
        self._last_ok[conn] = time.monotonic()

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        last_ok = self._last_ok.pop(conn, None)
        if (last_ok is None or time.monotonic() - last_ok > _IDLE_CHECK_SECONDS
                or _has_input(conn)):
            await AsyncConnectionPool.check_connection(conn)


def _has_input(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server sent anything to a connection with no query running (raises if
    the connection is closed, which fails the check as it should)."""
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresStore:
    engine = "postgresql"

    def __init__(
        self, url: str, pool: AsyncConnectionPool[Any], checkout_check: _CheckoutCheck
    ) -> None:
        self.url = url
        self._pool = pool
        self._checkout_check = checkout_check
        self._listener: PostgresListener | None = None
        self._task_listener: PostgresListener | None = None
        self._writes = 0
        self._closed = False
        # Group commit of the task outcomes (batch.py): one statement per batch.
        self._completes = Coalescer(self._complete_batch, name="complete")
        self._fails = Coalescer(self._fail_batch, name="fail")
        self._releases = Coalescer(self._release_batch, name="release")
        self._cancels = Coalescer(self._cancelled_batch, name="finish-cancelled")
        # Submissions: bounded by tasks, not calls (a batch request carries many).
        self._inserts = Coalescer(self._insert_batch, name="insert", max_batch=1000,
                                  size=lambda call: len(call[0]))

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
        checkout_check = _CheckoutCheck()
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
            # checkout and replaced, instead of failing the caller's statement; without a
            # round trip for a connection in steady use (_CheckoutCheck).
            check=checkout_check,
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
        return cls(url, pool, checkout_check)

    # -- plumbing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection (autocommit). Every use goes through here, so the checkout
        check knows which connections were in use a moment ago without an error."""
        async with self._pool.connection() as conn:
            yield conn
            self._checkout_check.used(conn)

    _read = _connection

    async def _write(
        self, op: Callable[[psycopg.AsyncConnection[Any]], Awaitable[Result]]
    ) -> Result:
        """Run op(conn) in one transaction and commit; deadlocks and serialization failures
        (possible between concurrent writers) roll back and run again."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                async with self._connection() as conn, conn.transaction():
                    result = await op(conn)
                self._writes += 1
                return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(0.001 * 2**attempt)
        raise AssertionError("unreachable")

    async def _statement(self, query: str, params: dict[str, Any]) -> list[Row]:
        """One write statement in autocommit: a transaction of its own in one round trip
        (no BEGIN/COMMIT). Deadlocks and serialization failures run it again."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                async with self._connection() as conn:
                    cur = await conn.execute(query, params)
                    rows = await cur.fetchall() if cur.description is not None else []
                self._writes += 1
                return rows
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

    def task_listener(self) -> PostgresListener:
        """NOTIFYs on localflow_tasks come from a trigger (migrations/postgres/004)."""
        if self._task_listener is None:
            self._task_listener = PostgresListener(self.url, TASKS_CHANNEL, wake_on_connect=True)
        return self._task_listener

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for coalescer in (self._inserts, self._completes, self._fails, self._releases,
                          self._cancels):
            await coalescer.wait_idle()  # every outcome handed in gets written and answered
        for listener in (self._listener, self._task_listener):
            if listener is not None:
                await listener.close()
        await self._pool.close()

    @property
    def write_transactions(self) -> int:
        return self._writes

    async def release_memory(self) -> None:
        # Nothing to free: the caches are the server's (shared_buffers), not this process's,
        # and a pooled connection keeps only its small buffers.
        return None

    # -- tasks ---------------------------------------------------------------------------

    @_translated
    async def insert_tasks(
        self, tasks: Sequence[NewTask], now: float
    ) -> list[tuple[Task, bool]]:
        if not tasks:
            return []
        # Submissions that arrive together (an API under load) share one statement and one
        # commit (batch.py); a call whose key conflicts is then run alone (see _insert_batch).
        return await self._inserts.submit((tasks, now))

    async def _insert_batch(
        self, calls: Sequence[tuple[Sequence[NewTask], float]]
    ) -> list[list[tuple[Task, bool]]]:
        new = [(task, now) for tasks, now in calls for task in tasks]
        params = {
            "ids": [t.id for t, _ in new], "types": [t.type for t, _ in new],
            "payloads": [_json(t.payload) for t, _ in new],
            "priorities": [t.priority for t, _ in new], "run_ats": [t.run_at for t, _ in new],
            "max_attempts": [t.max_attempts for t, _ in new],
            "timeouts": [t.timeout for t, _ in new],
            "keys": [t.idempotency_key for t, _ in new],
            "hashes": [t.request_hash for t, _ in new], "nows": [n for _, n in new],
            "queues": [t.queue for t, _ in new],
            "callback_urls": [t.callback_url for t, _ in new],
        }
        keys = [t.idempotency_key for t, _ in new if t.idempotency_key is not None]
        if not keys:
            # Nothing can conflict: one statement in autocommit, one round trip.
            inserted = await self._statement(Q.insert_tasks, params)
            by_id = {r["id"]: r for r in inserted}
            return [[(_task(by_id[t.id]), True) for t in tasks] for tasks, _ in calls]

        async def op(conn: psycopg.AsyncConnection[Any]) -> list[list[tuple[Task, bool]]]:
            by_id = {r["id"]: r for r in await self._rows(conn, Q.insert_tasks, params)}
            holders: dict[str, Row] = {}
            if len(by_id) < len(new):  # a key was taken: read who holds it (this batch too)
                holders = {r["idempotency_key"]: r for r in
                           await self._rows(conn, Q.get_tasks_by_keys, {"keys": keys})}
            results = []
            for tasks, _ in calls:
                answer = []
                for task in tasks:
                    if task.id in by_id:
                        answer.append((_task(by_id[task.id]), True))
                        continue
                    holder = holders.get(task.idempotency_key or "")
                    if holder is None:
                        # The conflict was on the id, not the key: ids are ULIDs, so this is
                        # a caller's bug rather than a race; say so instead of inventing one.
                        raise StorageError(f"task id {task.id} already exists")
                    if holder["request_hash"] != task.request_hash:
                        # Rolls the whole batch back; the coalescer then runs each call
                        # alone, so only this one fails, and it inserts none of its tasks.
                        raise IdempotencyConflict(task.idempotency_key or "", holder["id"])
                    answer.append((_task(holder), False))
                results.append(answer)
            return results

        return await self._write(op)

    @_translated
    async def claim(
        self, worker_id: str, limit: int, lease_until: float, now: float,
        queues: Sequence[str] | None = None,
        on_claimed: Callable[[list[Claimed]], None] | None = None,  # never called here
    ) -> list[Claimed]:
        if limit <= 0:
            return []
        only = list(queues) if queues else None

        # Queue settings (docs/queues.md). With none in the way -- no paused or limited queue,
        # a worker serving every queue -- a claim is one statement in autocommit: the tasks
        # taken and their attempt rows inserted (queue.sql claim). Otherwise it runs in a
        # transaction with the limited queues' rows locked (shared/store/claiming.py).
        gates = [g for g in map(_gate, await self._statement(Q.queue_gates, {}))
                 if not only or g.name in only]
        if not only and not gates:
            rows = await self._statement(Q.claim, {
                "now": now, "lease_until": lease_until, "worker_id": worker_id,
                "limit": limit, "closed": [], "only": None})
        else:
            rows = await self._claim_in_queues(limit, only, now, lease_until, worker_id)
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

    async def _claim_in_queues(
        self, limit: int, only: list[str] | None, now: float, lease_until: float,
        worker_id: str,
    ) -> list[Row]:
        """The claim under queue settings: one transaction, the limited queues' rows locked
        while their running tasks are counted and claimed against (shared/store/claiming.py).
        Every statement inserts its tasks' attempt rows itself (queue.sql claim, claim_ids)."""

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
            return rows

        return await self._write(op)

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
        rows = await self._statement(
            Q.extend_leases, {"lease_until": lease_until, "now": now, "tokens": list(tokens)}
        )
        return Heartbeat(held={r["id"] for r in rows},
                         cancel={r["id"] for r in rows if r["cancel_requested"]})

    # The four outcomes: each call joins its kind's next batch (batch.py), and each batch is
    # one statement (queue.sql). The result says, per call, whether its fence held.

    @_translated
    async def complete(self, task: Claimed, result: Any, now: float) -> bool:
        return await self._completes.submit((task, result, now))

    async def complete_many(
        self, items: Sequence[tuple[Claimed, Any]], now: float
    ) -> list[bool]:
        # The coalescer already makes one statement of the completions that arrive together.
        return list(await asyncio.gather(*(self.complete(t, r, now) for t, r in items)))

    async def _complete_batch(self, items: Sequence[tuple[Claimed, Any, float]]) -> list[bool]:
        params = _outcome_arrays([t for t, _, _ in items], [n for _, _, n in items])
        params["results"] = [_json(r) for _, r, _ in items]
        done = {(r["id"], r["token"]) for r in await self._statement(Q.complete, params)}
        return [(t.id, t.token) in done for t, _, _ in items]

    @_translated
    async def fail(
        self, task: Claimed, *, error: str, result: Any, outcome: FailOutcome,
        retry_at: float | None, now: float,
    ) -> Status | None:
        return await self._fails.submit((task, error, result, outcome, retry_at, now))

    async def _fail_batch(
        self, items: Sequence[tuple[Claimed, str, Any, str, float | None, float]]
    ) -> list[Status | None]:
        params = _outcome_arrays([i[0] for i in items], [i[5] for i in items])
        params.update(errors=[i[1] for i in items], results=[_json(i[2]) for i in items],
                      outcomes=[i[3] for i in items], retry_ats=[i[4] for i in items])
        status = {(r["id"], r["token"]): r["status"]
                  for r in await self._statement(Q.fail, params)}
        return [status.get((i[0].id, i[0].token)) for i in items]

    @_translated
    async def release(self, task: Claimed, error: str, now: float) -> bool:
        # The statement NOTIFYs: the task is runnable again at once.
        return await self._releases.submit((task, error, now))

    async def _release_batch(self, items: Sequence[tuple[Claimed, str, float]]) -> list[bool]:
        params = _outcome_arrays([t for t, _, _ in items], [n for _, _, n in items])
        params["errors"] = [e for _, e, _ in items]
        done = {(r["id"], r["token"]) for r in await self._statement(Q.release, params)}
        return [(t.id, t.token) in done for t, _, _ in items]

    @_translated
    async def unclaim(self, task: Claimed, now: float, *, cancelled: bool = False) -> bool:
        # Rare (a worker stopping, or slots held by long handlers): one statement, not batched.
        rows = await self._statement(
            Q.unclaim, {**_outcome_arrays([task], [now]), "cancelled": cancelled})
        return any(r["id"] == task.id and r["token"] == task.token for r in rows)

    @_translated
    async def finish_cancelled(
        self, task: Claimed, result: Any, error: str, now: float
    ) -> bool:
        return await self._cancels.submit((task, result, error, now))

    async def _cancelled_batch(
        self, items: Sequence[tuple[Claimed, Any, str, float]]
    ) -> list[bool]:
        params = _outcome_arrays([i[0] for i in items], [i[3] for i in items])
        params.update(results=[_json(i[1]) for i in items], errors=[i[2] for i in items])
        done = {(r["id"], r["token"]) for r in await self._statement(Q.finish_cancelled, params)}
        return [(i[0].id, i[0].token) in done for i in items]

    @_translated
    async def rescue_expired(self, now: float) -> list[str]:
        # One statement: the tasks, their attempt rows as lost, and the NOTIFY (queue.sql).
        return [r["id"] for r in await self._statement(Q.rescue_expired, {"now": now})]

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
        await self._statement(Q.upsert_worker, params)

    @_translated
    async def worker_stopped(self, worker_id: str, now: float) -> None:
        await self._statement(Q.stop_worker, {"id": worker_id, "now": now})

    @_translated
    async def cancel(
        self, task_id: str, now: float, audit: Sequence[AuditEntry] = ()
    ) -> Task | None:
        async def op(conn: psycopg.AsyncConnection[Any]) -> Task | None:
            params = {"id": task_id, "now": now}
            changed = await self._count(conn, Q.cancel_queued, params) == 1
            if not changed:
                changed = await self._count(conn, Q.request_cancel, params) == 1
            if changed:
                await _record(conn, audit)
                await self._notify(conn)  # the worker holding it checks for cancels when woken
            rows = await self._rows(conn, Q.get_task, {"id": task_id})
            return _task(rows[0]) if rows else None

        return await self._write(op)

    @_translated
    async def retry(
        self, task_id: str, extra_attempts: int, now: float, audit: Sequence[AuditEntry] = ()
    ) -> tuple[bool, Task | None]:
        async def op(conn: psycopg.AsyncConnection[Any]) -> tuple[bool, Task | None]:
            params = {"id": task_id, "now": now, "extra": extra_attempts}
            changed = await self._count(conn, Q.retry_task, params) == 1
            if changed:
                await _record(conn, audit)
                await self._notify(conn)
            rows = await self._rows(conn, Q.get_task, {"id": task_id})
            return changed, (_task(rows[0]) if rows else None)

        return await self._write(op)

    @_translated
    async def delete(
        self, task_id: str, audit: Sequence[AuditEntry] = ()
    ) -> Literal["deleted"] | Status | None:
        async def op(conn: psycopg.AsyncConnection[Any]) -> Literal["deleted"] | Status | None:
            if await self._count(conn, Q.delete_task, {"id": task_id}) == 1:
                await _record(conn, audit)
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
    async def get_many(self, task_ids: Sequence[str]) -> list[Task]:
        if not task_ids:
            return []
        async with self._read() as conn:
            rows = await self._rows(conn, Q.get_tasks, {"ids": list(task_ids)})
        found = {r["id"]: _task(r) for r in rows}
        return [found[i] for i in task_ids if i in found]

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
    async def events_after(self, cursor: str | None, limit: int) -> EventPage:
        xid, after = (0, 0) if cursor is None else cursor_key(cursor)
        async with self._read() as conn:
            rows = await self._rows(conn, Q.events_after, {"xid": xid, "id": after,
                                                           "limit": limit})
            horizon = (await self._rows(conn, Q.events_horizon))[0]
        lost = cursor is not None and (xid, after) < (horizon["xid"], horizon["id"])
        return EventPage(events=[_event(r) for r in rows], lost=lost)

    @_translated
    async def events_head(self) -> str:
        async with self._read() as conn:
            return await self._head(conn)

    async def _head(self, conn: psycopg.AsyncConnection[Any]) -> str:
        rows = await self._rows(conn, Q.events_head)
        if not rows:
            rows = await self._rows(conn, Q.events_horizon)
        return make_cursor(rows[0]["xid"], rows[0]["id"])

    @_translated
    async def events_newest(self) -> str:
        async with self._read() as conn:
            rows = await self._rows(conn, Q.events_newest)
            if not rows:
                rows = await self._rows(conn, Q.events_horizon)
        return make_cursor(rows[0]["xid"], rows[0]["id"])

    @_translated
    async def events_since(self, since: float) -> EventStart:
        async with self._read() as conn:
            row = (await self._rows(conn, Q.events_since, {"since": since}))[0]
            head = cursor_key(await self._head(conn))
        horizon = (row["horizon_xid"], row["horizon_id"])
        # Just before the first (ids are unique, so (xid, id - 1) sorts right before it), but
        # never past the head: below it, nothing can still commit behind the cursor.
        start = head if row["id"] is None else min((row["xid"], row["id"] - 1), head)
        lost = horizon > (0, 0) and (row["oldest"] is None or since < row["oldest"])
        return EventStart(cursor=make_cursor(*start), lost=lost)

    @_translated
    async def prune_events(self, before: float) -> int:
        async def op(conn: psycopg.AsyncConnection[Any]) -> int:
            gone = await self._rows(conn, Q.events_prune, {"before": before})
            if gone:
                newest = max((r["xid"], r["id"]) for r in gone)
                await conn.execute(Q.events_raise_horizon, {"xid": newest[0], "id": newest[1]})
            return len(gone)

        return await self._write(op)

    @_translated
    async def save_live_output(
        self, outputs: Sequence[LiveOutput], ended: Sequence[tuple[str, str]], now: float
    ) -> None:
        saves = [live_output_params(o, now) for o in outputs]
        clears = [{"task_id": task_id, "token": token} for task_id, token in ended]
        if not saves and not clears:
            return

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cur:
                if saves:
                    await cur.executemany(Q.live_output_save, saves)
                if clears:
                    await cur.executemany(Q.live_output_clear, clears)

        await self._write(op)

    @_translated
    async def live_outputs(self, task_ids: Sequence[str]) -> dict[str, LiveOutput]:
        if not task_ids:
            return {}
        async with self._read() as conn:
            rows = await self._rows(conn, Q.live_outputs, {"ids": list(task_ids)})
        return {r["task_id"]: live_output_from(r) for r in rows}

    @_translated
    async def statuses(self, task_ids: Sequence[str]) -> dict[str, Status]:
        if not task_ids:
            return {}
        async with self._read() as conn:
            rows = await self._rows(conn, Q.statuses, {"ids": list(task_ids)})
        return {r["id"]: r["status"] for r in rows}

    @_translated
    async def counts(self) -> dict[str, int]:
        return totals(await self.task_counts())

    @_translated
    async def task_counts(self) -> list[tuple[str, str, str, int]]:
        async with self._read() as conn:
            return await self._task_counts(conn)

    async def _task_counts(
        self, conn: psycopg.AsyncConnection[Any]
    ) -> list[tuple[str, str, str, int]]:
        return [(r["queue"], r["type"], r["status"], int(r["n"]))
                for r in await self._rows(conn, D.task_counts)]

    # -- queues --------------------------------------------------------------------------

    @_translated
    async def queues(self) -> list[QueueInfo]:
        async with self._read() as conn:
            counts = by_queue(await self._task_counts(conn))
            gates = [_gate(r) for r in await self._rows(conn, Q.all_queue_settings)]
        return queue_overview(counts, gates)

    @_translated
    async def queue(self, name: str) -> QueueInfo:
        async with self._read() as conn:
            counts = by_queue(await self._task_counts(conn), name)
            gates = [_gate(r) for r in await self._rows(conn, Q.queue_settings,
                                                         {"name": name})]
        return queue_overview(counts, gates, name)[0]

    @_translated
    async def set_queue(
        self, name: str, *, concurrency: int | UnsetType | None, paused: bool | None,
        now: float, audit: Sequence[AuditEntry] = (),
    ) -> None:
        params = {"name": name, "now": now, "paused": paused,
                  "set_concurrency": concurrency is not UNSET,
                  "concurrency": None if concurrency is UNSET else concurrency}

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(Q.set_queue, params)
            await _record(conn, audit)
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
        cursor: str | None = None, limit: int = 50, queue: str | None = None,
    ) -> list[str]:
        params = {"schedule_id": schedule_id, "status": status, "type": type, "queue": queue,
                  "cursor": cursor or _CURSOR_START, "limit": limit}
        async with self._read() as conn:
            rows = await self._rows(conn, D.task_ids_of_schedule, params)
        return [r["id"] for r in rows]

    @_translated
    async def queued_view_ids(
        self, view: QueuedView, now: float, *, type: str | None = None,
        schedule_id: str | None = None, cursor: str | None = None, limit: int = 50,
        scan: int = 2000, queue: str | None = None,
    ) -> tuple[list[str], str | None]:
        start = cursor or _CURSOR_START
        params = {"view": view, "now": now, "type": type, "schedule_id": schedule_id,
                  "queue": queue,
                  "cursor": start, "scan": scan, "limit": limit}
        async with self._read() as conn:
            ids = [r["id"] for r in await self._rows(conn, D.queued_view_ids, params)]
            if len(ids) == limit:
                return ids, ids[-1]
            end = await self._rows(conn, D.queued_window_end,
                                   {"cursor": start, "offset": scan - 1})
        return ids, (end[0]["id"] if end else None)

    @_translated
    async def search_task_ids(
        self, needle: str, *, status: Status | None = None, type: str | None = None,
        schedule_id: str | None = None, cursor: str | None = None, floor: str | None = None,
        limit: int = 50, scan: int = 2000, queue: str | None = None,
    ) -> tuple[list[str], str | None]:
        params = {"needle": needle, "status": status, "type": type, "schedule_id": schedule_id,
                  "cursor": cursor or _CURSOR_START, "floor": floor or "", "scan": scan,
                  "limit": limit, "queue": queue}
        async with self._read() as conn:
            ids = [r["id"] for r in await self._rows(conn, D.search_ids, params)]
            if len(ids) == limit:
                return ids, ids[-1]
            end = await self._rows(conn, D.search_window_end, {**params, "offset": scan - 1})
        return ids, (end[0]["id"] if end else None)

    @_translated
    async def run_waiting_now(self, task_id: str, now: float) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            changed = await self._count(conn, D.run_waiting_now, {"id": task_id, "now": now})
            if changed:
                await self._notify(conn)
            return changed == 1

        return await self._write(op)

    @_translated
    async def attempt_seconds(self, task_ids: Sequence[str], now: float) -> dict[str, float]:
        if not task_ids:
            return {}
        async with self._read() as conn:
            rows = await self._rows(conn, D.attempt_seconds, {"ids": list(task_ids), "now": now})
        return {r["task_id"]: float(r["seconds"]) for r in rows}

    # -- schedules -----------------------------------------------------------------------

    @_translated
    async def insert_schedule(
        self, schedule_id: str, fields: ScheduleFields, next_fire_at: float | None, now: float,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        params = {**_fields_params(fields), "id": schedule_id, "next_fire_at": next_fire_at,
                  "now": now}

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(S.insert_schedule, params)
            await _record(conn, audit)
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
        next_fire_at: float | None, now: float, audit: Sequence[AuditEntry] = (),
    ) -> bool:
        params = {**_fields_params(fields), "id": schedule_id, "recompute": recompute,
                  "next_fire_at": next_fire_at, "now": now}

        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            if await self._count(conn, S.update_schedule, params) != 1:
                return False
            await _record(conn, audit)
            await self._notify(conn)
            return True

        return await self._write(op)

    @_translated
    async def delete_schedule(
        self, schedule_id: str, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            if await self._count(conn, S.delete_schedule, {"id": schedule_id}) != 1:
                return False
            await _record(conn, audit)
            return True

        return await self._write(op)

    @_translated
    async def run_schedule_now(
        self, schedule_id: str, task: NewTask, now: float, audit: Sequence[AuditEntry] = ()
    ) -> bool:
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
            await _record(conn, audit)
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
    async def count_tasks(
        self, now: float, *, type: str | None = None, schedule_id: str | None = None,
        queue: str | None = None, cap: int | None = None,
    ) -> TaskCounts:
        """Without a schedule filter: the trigger-kept counts and bounded index counts
        (shared/store/counting.py), a few short reads at any size, a queue filter included
        (both are per queue and type); under a schedule filter, that schedule's kept counts
        (migration 010) in one read-only snapshot."""
        if not schedule_id:
            async with self._read() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                rows = await self._task_counts(conn)

                async def count_up_to(
                    of_queue: str, task_type: str, kind: Kind, limit: int
                ) -> int:
                    found = await self._rows(conn, _COUNT_UP_TO[kind], {
                        "queue": of_queue, "type": task_type, "now": now, "limit": limit})
                    return int(found[0]["n"])

                return await queued_views(rows, count_up_to, type=type, queue=queue, cap=cap)
        async with self._read() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            rows = [(r["queue"], r["type"], r["status"], r["n"]) for r in await self._rows(
                conn, D.schedule_task_counts, {"schedule_id": schedule_id})]

            async def count_views(limit: int) -> dict[str, int]:
                found = await self._rows(conn, D.count_schedule_queued_views, {
                    "schedule_id": schedule_id, "type": type, "queue": queue, "now": now,
                    "limit": limit})
                return {r["key"]: int(r["n"]) for r in found}

            return await of_schedule(rows, count_views, type=type, queue=queue, cap=cap)

    @_translated
    async def running_task_ids(self, limit: int = 200) -> dict[str, list[str]]:
        async with self._read() as conn:
            rows = await self._rows(conn, D.running_task_ids, {"limit": limit})
        held: dict[str, list[str]] = {}
        for r in rows:
            held.setdefault(r["worker_id"] or "", []).append(r["id"])
        return held

    @_translated
    async def recent_workers(self, now: float, within: float) -> list[WorkerSeen]:
        async with self._read() as conn:
            workers = await self._rows(conn, D.recent_workers, {"since": now - within})
        return [
            WorkerSeen(id=w["id"], hostname=w["hostname"], pid=w["pid"], slots=w["slots"],
                       started_at=w["started_at"], last_seen=w["last_seen"],
                       stopped_at=w["stopped_at"], running=int(w["running"]))
            for w in workers
        ]

    @_translated
    async def queue_stats(self, now: float, alive_since: float) -> QueueStats:
        # One snapshot for all four answers (REPEATABLE READ): the numbers agree.
        async with self._read() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            counted = await self._task_counts(conn)
            oldest = await self._rows(conn, D.oldest_runnable, {"now": now})
            alive = await self._rows(conn, M.workers_alive, {"since": alive_since})
            gates = await self._rows(conn, M.queue_settings, {"limit": QUEUE_SETTINGS_READ})
        return QueueStats(
            depth=[Depth(status=s, type=t, count=n, queue=q)
                   for s, t, q, n in live_depth(counted)],
            totals=totals(counted),
            oldest_runnable_at=oldest[0]["run_at"] if oldest else None,
            workers_alive=alive[0]["n"] if alive else 0,
            queue_settings=[_gate(r) for r in gates],
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

    # -- the audit trail -----------------------------------------------------------------

    @_translated
    async def record_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return

        async def op(conn: psycopg.AsyncConnection[Any]) -> None:
            await _record(conn, entries)

        await self._write(op)

    @_translated
    async def list_audit(
        self, *, action: str | None, target: str | None, cursor: str | None, limit: int
    ) -> AuditPage:
        params = {"action": action, "target": target, "cursor": cursor or _CURSOR_START,
                  "limit": limit + 1}
        query = ((A.list_by_action_and_target if action else A.list_by_target) if target
                 else (A.list_by_action if action else A.list_all))
        async with self._read() as conn:
            rows = await self._rows(conn, query, params)
        items = [entry_of_row(r) for r in rows[:limit]]
        next_cursor = items[-1].id if len(rows) > limit and items else None
        return AuditPage(items=items, next_cursor=next_cursor)

    @_translated
    async def prune_audit(self, before: float, limit: int) -> int:
        rows = await self._statement(A.prune + " RETURNING id",
                                     {"before": before, "limit": limit})
        return len(rows)

    # -- webhook deliveries (docs/webhooks.md) ---------------------------------------------

    @_translated
    async def claim_deliveries(
        self, limit: int, lease_until: float, now: float
    ) -> list[DueDelivery]:
        if limit <= 0:
            return []
        rows = await self._statement(
            W.claim_deliveries, {"limit": limit, "lease_until": lease_until, "now": now}
        )
        rows.sort(key=lambda r: (r["next_try_at"], r["id"]))  # RETURNING keeps no order
        return [_due_delivery(r) for r in rows]

    @_translated
    async def record_delivery_try(
        self, delivery_id: str, token: str, attempt: dict[str, Any], *,
        next_try_at: float | None, delivered: bool, now: float,
    ) -> bool:
        params = {"id": delivery_id, "token": token, "attempt": _json(attempt),
                  "next_try_at": next_try_at, "delivered": delivered, "now": now}

        async def op(conn: psycopg.AsyncConnection[Any]) -> bool:
            return await self._count(conn, W.record_try, params) == 1

        return await self._write(op)

    @_translated
    async def deliveries(self, task_id: str) -> list[dict[str, Any]]:
        async with self._read() as conn:
            rows = await self._rows(conn, W.deliveries_of_task, {"id": task_id})
        return [_delivery(r) for r in rows]

    @_translated
    async def next_delivery_at(self) -> float | None:
        async with self._read() as conn:
            rows = await self._rows(conn, W.next_delivery_at)
        return rows[0]["at"] if rows else None

    # -- copying (localflow copy) --------------------------------------------------------

    @_translated
    async def table_counts(self) -> dict[str, int]:
        async with self._read() as conn:
            rows = await self._rows(conn, T.table_counts)
        return {name: int(rows[0][name]) for name in COUNTED_TABLES}

    @_translated
    async def export_rows(
        self, table: TransferTable, after: str, limit: int
    ) -> list[TransferRow]:
        query = {"workers": T.export_workers, "schedules": T.export_schedules,
                 "tasks": T.export_tasks, "audit": T.export_audit}[table]
        # One snapshot for a batch of tasks and their attempts.
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = await self._rows(conn, query, {"after": after, "limit": limit})
            if table == "tasks" and rows:
                attempts = await self._rows(
                    conn, T.export_attempts, {"after": after, "last": rows[-1]["id"]}
                )
                attach_attempts(rows, attempts)
                deliveries = await self._rows(
                    conn, T.export_deliveries, {"after": after, "last": rows[-1]["id"]}
                )
                attach_deliveries(rows, deliveries)
        return rows

    @_translated
    async def import_rows(self, table: TransferTable, rows: Sequence[TransferRow]) -> Imported:
        query = {"workers": T.insert_worker, "schedules": T.insert_schedule,
                 "tasks": T.insert_task, "audit": T.insert_audit}[table]
        columns = TRANSFER_COLUMNS[table]

        async def op(conn: psycopg.AsyncConnection[Any]) -> Imported:
            if not rows:
                return Imported(rows=0, skipped=0, attempts=0)
            inserted: set[str] = set()
            async with conn.cursor() as cur:
                # One round trip for the batch (pipelined); RETURNING names the rows that
                # went in, one result set per row (empty where ON CONFLICT skipped it).
                await cur.executemany(
                    query, [{c: row[c] for c in columns} for row in rows], returning=True
                )
                while True:
                    for found in await cur.fetchall():
                        inserted.add(found["id"])
                    if not cur.nextset():
                        break
                attempts = [a for row in rows if row["id"] in inserted
                            for a in row.get("attempt_rows", ())]
                if attempts:
                    await cur.executemany(T.insert_attempt, attempts)
                deliveries = [d for row in rows if row["id"] in inserted
                              for d in row.get("delivery_rows", ())]
                if deliveries:
                    await cur.executemany(T.insert_delivery, deliveries)
            return Imported(rows=len(inserted), skipped=len(rows) - len(inserted),
                            attempts=len(attempts), deliveries=len(deliveries))

        return await self._write(op)


async def _record(conn: psycopg.AsyncConnection[Any], entries: Sequence[AuditEntry]) -> None:
    """Audit entries, in the transaction of the action they record."""
    for e in entries:
        await conn.execute(A.insert_audit, entry_row(e))


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
