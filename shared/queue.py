"""Queue operations shared by the API and the worker. All SQL is in shared/sql/queue.sql."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from shared.clock import Clock, SystemClock
from shared.db import Database, fetchall
from shared.ids import is_valid_id, new_id
from shared.policy import Policy, PolicyError
from shared.schemas import (
    MAX_DELAY,
    MAX_RUN_AT_PAST,
    STATUSES,
    TERMINAL,
    Attempt,
    PayloadError,
    Task,
    TaskCreate,
    TaskPage,
    to_datetime,
    validate_payload,
)
from shared.settings import Settings
from shared.sql import Queries

Q = Queries("queue")
_CURSOR_START = "~"  # sorts after every ULID character


class QueueError(Exception):
    status_code = 400

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field  # the request field at fault ("payload.env"), when there is one


class NotFound(QueueError):
    status_code = 404


class Conflict(QueueError):
    status_code = 409


class InvalidTask(QueueError):
    status_code = 422


class NewTask(msgspec.Struct, kw_only=True):
    """A validated submission with every default filled in, ready to insert."""

    type: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    timeout: float
    run_at: float
    idempotency_key: str | None
    request_hash: str | None


class Claimed(msgspec.Struct, kw_only=True):
    """A task as a worker holds it: the token fences everything the worker writes back."""

    id: str
    type: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout: float
    priority: int
    run_at: float
    token: str


class Heartbeat(msgspec.Struct, kw_only=True):
    held: set[str]  # task ids whose lease was extended
    cancel: set[str]  # of those, the ones a person asked to cancel


def _task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        type=row["type"],
        payload=msgspec.json.decode(row["payload"]),
        status=row["status"],
        priority=row["priority"],
        run_at=to_datetime(row["run_at"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        idempotency_key=row["idempotency_key"],
        result=None if row["result"] is None else msgspec.json.decode(row["result"]),
        last_error=row["last_error"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
        started_at=to_datetime(row["started_at"]),
        finished_at=to_datetime(row["finished_at"]),
        schedule_id=row["schedule_id"],
    )


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        started_at=to_datetime(row["started_at"]),
        finished_at=to_datetime(row["finished_at"]),
        outcome=row["outcome"],
        error=row["error"],
        output=None if row["output"] is None else msgspec.json.decode(row["output"]),
    )


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def request_hash(create: TaskCreate) -> str:
    """What an idempotency key promises: the same request. The key itself is left out."""
    fields = msgspec.structs.asdict(create)
    fields.pop("idempotency_key")
    return hashlib.sha256(msgspec.json.encode(fields, order="sorted")).hexdigest()


class Queue:
    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        settings: Settings | None = None,
        on_runnable: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.settings = settings or Settings()
        self.policy = Policy.from_settings(self.settings)  # what tasks may do (shared/policy.py)
        # Called after a commit that made tasks runnable or asked for a cancel: wakes workers.
        self.on_runnable = on_runnable or (lambda: None)

    # -- submitting ----------------------------------------------------------------------

    def prepare(self, create: TaskCreate) -> NewTask:
        """Validate and fill defaults; raises InvalidTask with a message naming the field."""
        try:
            payload = validate_payload(create.type, create.payload)
        except PayloadError as exc:
            raise InvalidTask(str(exc), exc.field) from None
        try:
            self.policy.check(create.type, payload)
        except PolicyError as exc:
            raise InvalidTask(str(exc), exc.field) from None
        encoded = msgspec.json.encode(create.payload)
        if len(encoded) > self.settings.max_payload_bytes:
            raise InvalidTask(
                f"payload is {len(encoded)} bytes; the limit is {self.settings.max_payload_bytes}",
                "payload",
            )
        now = self.clock.now()
        if create.run_at is not None:
            run_at = create.run_at.timestamp()
            if not now - MAX_RUN_AT_PAST <= run_at <= now + MAX_DELAY:
                raise InvalidTask(
                    f"run_at: {create.run_at.isoformat()} is outside the accepted window, from "
                    f"{MAX_RUN_AT_PAST // 86400} days ago to {MAX_DELAY // 86400} days from now",
                    "run_at",
                )
        else:
            run_at = now + (create.delay or 0.0)
        timeout = (
            create.timeout or getattr(payload, "timeout", None) or self.settings.default_timeout
        )
        return NewTask(
            type=create.type,
            # Stored normalised (defaults filled, method upper-cased): what will actually run.
            payload=msgspec.to_builtins(payload),
            priority=create.priority,
            max_attempts=create.max_attempts or self.settings.default_max_attempts,
            timeout=timeout,
            run_at=run_at,
            idempotency_key=create.idempotency_key,
            request_hash=request_hash(create) if create.idempotency_key else None,
        )

    async def enqueue(self, create: TaskCreate) -> tuple[Task, bool]:
        """Insert one task; returns (task, created). A reused key returns the original."""
        new = self.prepare(create)
        task, created = await self.db.write(lambda conn: self._insert(conn, new))
        if created:
            self.on_runnable()
        return task, created

    async def enqueue_many(self, creates: Sequence[TaskCreate]) -> list[tuple[Task, bool]]:
        """Insert all tasks in one transaction, or none (any invalid one rejects the batch)."""
        news = []
        for index, create in enumerate(creates):
            try:
                news.append(self.prepare(create))
            except InvalidTask as exc:
                where = f"tasks[{index}]"
                raise InvalidTask(
                    f"{where}: {exc}", f"{where}.{exc.field}" if exc.field else where
                ) from None

        def op(conn: sqlite3.Connection) -> list[tuple[Task, bool]]:
            return [self._insert(conn, new) for new in news]

        results = await self.db.write(op)
        self.on_runnable()
        return results

    def _insert(self, conn: sqlite3.Connection, new: NewTask) -> tuple[Task, bool]:
        now = self.clock.now()
        task_id = new_id(now)
        payload = msgspec.json.encode(new.payload).decode()
        cursor = conn.execute(
            Q.insert_task,
            {
                "id": task_id,
                "type": new.type,
                "payload": payload,
                "priority": new.priority,
                "run_at": new.run_at,
                "max_attempts": new.max_attempts,
                "timeout": new.timeout,
                "idempotency_key": new.idempotency_key,
                "request_hash": new.request_hash,
                "now": now,
            },
        )
        if cursor.rowcount == 1:
            when = to_datetime(now)
            return (
                Task(
                    id=task_id, type=new.type, payload=new.payload, status="queued",
                    priority=new.priority, run_at=to_datetime(new.run_at), attempts=0,
                    max_attempts=new.max_attempts, timeout=new.timeout,
                    idempotency_key=new.idempotency_key, result=None, last_error=None,
                    cancel_requested=False, created_at=when, updated_at=when,
                    started_at=None, finished_at=None,
                ),
                True,
            )
        rows = fetchall(conn, Q.get_task_by_key, (new.idempotency_key,))
        existing = next(iter(rows))
        if existing["request_hash"] != new.request_hash:
            raise Conflict(
                f"idempotency key {new.idempotency_key!r} was already used for a different "
                f"request (task {existing['id']}); use a new key for a new request"
            )
        return _task(existing), False

    # -- working -------------------------------------------------------------------------

    async def claim(self, worker_id: str, limit: int, lease: float) -> list[Claimed]:
        """Move up to `limit` runnable tasks to running, most urgent first."""
        if limit <= 0:
            return []
        now = self.clock.now()

        def op(conn: sqlite3.Connection) -> list[Claimed]:
            params = {"now": now, "lease_until": now + lease, "worker_id": worker_id,
                      "limit": limit}
            rows = fetchall(conn, Q.claim, params)
            if rows:
                conn.executemany(
                    Q.insert_attempt, [(r["id"], r["attempts"], worker_id, now) for r in rows]
                )
            return [
                Claimed(
                    id=r["id"], type=r["type"], payload=msgspec.json.decode(r["payload"]),
                    attempt=r["attempts"], max_attempts=r["max_attempts"], timeout=r["timeout"],
                    priority=r["priority"], run_at=r["run_at"], token=r["claim_token"],
                )
                for r in rows
            ]

        claimed = await self.db.write(op)
        # RETURNING gives no order; run the most urgent first.
        claimed.sort(key=lambda c: (-c.priority, c.run_at, c.id))
        return claimed

    async def heartbeat(self, held: Sequence[Claimed], lease: float) -> Heartbeat:
        """Extend the leases of held tasks; says which are still ours and which to cancel."""
        if not held:
            return Heartbeat(held=set(), cancel=set())
        now = self.clock.now()
        tokens = msgspec.json.encode([c.token for c in held]).decode()

        def op(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            params = {"lease_until": now + lease, "now": now, "tokens": tokens}
            return fetchall(conn, Q.extend_leases, params)

        rows = await self.db.write(op)
        return Heartbeat(
            held={r["id"] for r in rows}, cancel={r["id"] for r in rows if r["cancel_requested"]}
        )

    async def complete(self, claimed: Claimed, result: Any) -> bool:
        """running -> succeeded. False if the lease was lost (another attempt owns the task)."""
        return await self._finish(claimed, Q.complete, "succeeded", None, result)

    async def fail(
        self, claimed: Claimed, error: str, result: Any = None, outcome: str = "failed",
        *, retry: bool = True,
    ) -> str | None:
        """running -> queued for a retry after backoff, or failed when no attempts are left
        (or at once with retry=False, for a failure that retrying cannot mend).

        Returns the new status, or None if the lease was lost.
        """
        now = self.clock.now()
        retry_at = now + self.backoff(claimed.attempt)
        params = {
            "id": claimed.id, "token": claimed.token, "now": now, "retry_at": retry_at,
            "error": error, "result": _json(result), "retry": retry,
        }

        def op(conn: sqlite3.Connection) -> str | None:
            rows = fetchall(conn, Q.fail, params)
            if not rows:
                return None
            self._finish_attempt(conn, claimed, now, outcome, error, result)
            return rows[0]["status"]

        return await self.db.write(op)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt`: exponential, capped, with +-25% jitter so a
        burst of failures does not retry as a burst."""
        base = min(self.settings.retry_base * 2 ** (attempt - 1), self.settings.retry_max)
        return base * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not secrecy

    async def release(self, claimed: Claimed) -> bool:
        """running -> queued at once, attempt not spent: the worker is stopping."""
        now = self.clock.now()

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(Q.release, {"id": claimed.id, "token": claimed.token, "now": now})
            if cursor.rowcount != 1:
                return False
            error = "worker shut down before the task finished; returned to the queue"
            self._finish_attempt(conn, claimed, now, "released", error, None)
            return True

        released = await self.db.write(op)
        if released:
            self.on_runnable()
        return released

    async def finish_cancelled(self, claimed: Claimed, result: Any = None) -> bool:
        """running -> cancelled, once the worker stopped what a person cancelled."""
        return await self._finish(claimed, Q.finish_cancelled, "cancelled", "cancelled", result)

    async def _finish(
        self, claimed: Claimed, query: str, outcome: str, error: str | None, result: Any
    ) -> bool:
        now = self.clock.now()
        params = {
            "id": claimed.id, "token": claimed.token, "now": now, "result": _json(result),
            "error": error,
        }
        if query is Q.complete:
            params.pop("error")

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(query, params)
            if cursor.rowcount != 1:
                return False
            self._finish_attempt(conn, claimed, now, outcome, error, result)
            return True

        return await self.db.write(op)

    def _finish_attempt(
        self, conn: sqlite3.Connection, claimed: Claimed, now: float, outcome: str,
        error: str | None, output: Any,
    ) -> None:
        conn.execute(
            Q.finish_attempt,
            {
                "id": claimed.id, "attempt": claimed.attempt, "now": now, "outcome": outcome,
                "error": error, "output": _json(output),
            },
        )

    async def rescue_expired(self) -> list[str]:
        """Return tasks whose lease ran out to the queue (or fail them if out of attempts)."""
        now = self.clock.now()

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = fetchall(conn, Q.rescue_expired, {"now": now})
            conn.executemany(
                Q.lose_attempt,
                [{"id": r["id"], "attempt": r["attempts"], "now": now} for r in rows],
            )
            return [r["id"] for r in rows]

        rescued = await self.db.write(op)
        if rescued:
            self.on_runnable()
        return rescued

    async def cancel_requests(self, worker_id: str) -> set[str]:
        """Tasks this worker holds that a person asked to cancel (a read: no write lock)."""
        rows = await self.db.fetch_all(Q.cancel_requests_for_worker, (worker_id,))
        return {r["id"] for r in rows}

    async def next_run_at(self) -> float | None:
        row = await self.db.fetch_one(Q.next_run_at)
        return None if row is None else row[0]

    async def worker_seen(self, worker_id: str, hostname: str, pid: int, slots: int) -> None:
        params = {"id": worker_id, "hostname": hostname, "pid": pid, "slots": slots,
                  "now": self.clock.now()}

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q.upsert_worker, params)

        await self.db.write(op)

    async def worker_stopped(self, worker_id: str) -> None:
        params = {"id": worker_id, "now": self.clock.now()}

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q.stop_worker, params)

        await self.db.write(op)

    # -- people --------------------------------------------------------------------------

    async def cancel(self, task_id: str) -> Task:
        """queued -> cancelled now; running -> cancel requested (its worker stops it)."""
        now = self.clock.now()

        def op(conn: sqlite3.Connection) -> Task | None:
            params = {"id": task_id, "now": now}
            if conn.execute(Q.cancel_queued, params).rowcount == 0:
                conn.execute(Q.request_cancel, params)
            rows = fetchall(conn, Q.get_task, (task_id,))
            return _task(next(iter(rows))) if rows else None

        # Raise outside the transaction: an exception there would roll back the whole batch.
        task = await self.db.write(op)
        if task is None:
            raise NotFound(f"no task with id {task_id!r}")
        if task.status in TERMINAL and task.status != "cancelled":
            raise Conflict(f"task {task_id} already {task.status}; nothing to cancel")
        self.on_runnable()  # a worker holding it checks for cancels when woken
        return task

    async def retry(self, task_id: str, attempts: int = 1) -> Task:
        """failed/cancelled -> queued, runnable now, with `attempts` more attempts to spend.

        The attempt count keeps counting (history stays readable: attempt 4 follows attempt 3);
        max_attempts becomes attempts + `attempts`. One by default: a person asking for a rerun
        gets one run, not a fresh round of automatic retries of something that may not be safe
        to repeat; they can ask for more.
        """
        now = self.clock.now()

        def op(conn: sqlite3.Connection) -> tuple[bool, Task | None]:
            params = {"id": task_id, "now": now, "extra": attempts}
            changed = conn.execute(Q.retry_task, params).rowcount == 1
            rows = fetchall(conn, Q.get_task, (task_id,))
            return changed, (_task(next(iter(rows))) if rows else None)

        # Raise outside the transaction: an exception there would roll back the whole batch.
        changed, task = await self.db.write(op)
        if task is None:
            raise NotFound(f"no task with id {task_id!r}")
        if not changed:
            raise Conflict(
                f"task {task_id} is {task.status}; only failed or cancelled tasks can be retried"
            )
        self.on_runnable()
        return task

    async def delete(self, task_id: str) -> None:
        """Forget a task and its attempts. Not while it runs: cancel it first."""

        def op(conn: sqlite3.Connection) -> str | None:
            if conn.execute(Q.delete_task, {"id": task_id}).rowcount == 1:
                return "deleted"
            rows = fetchall(conn, Q.get_task, (task_id,))
            return rows[0]["status"] if rows else None

        outcome = await self.db.write(op)
        if outcome is None:
            raise NotFound(f"no task with id {task_id!r}")
        if outcome != "deleted":
            raise Conflict(
                f"task {task_id} is {outcome}; cancel it and wait until it stops before deleting"
            )

    async def get(self, task_id: str) -> Task:
        row = await self.db.fetch_one(Q.get_task, (task_id,))
        if row is None:
            raise NotFound(f"no task with id {task_id!r}")
        return _task(row)

    async def attempts(self, task_id: str) -> list[Attempt]:
        await self.get(task_id)  # 404 for an unknown task rather than an empty list
        return [_attempt(r) for r in await self.db.fetch_all(Q.list_attempts, (task_id,))]

    async def list(
        self,
        status: str | None = None,
        type: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> TaskPage:
        """Newest first; pass next_cursor back to get the following page."""
        if status is not None and status not in STATUSES:
            raise InvalidTask(
                f"unknown status {status!r}: expected one of {', '.join(STATUSES)}", "status"
            )
        if cursor and not is_valid_id(cursor):
            # A cursor is a task id this API handed out; anything else would silently restart
            # at the first page. (Empty, as a cleared form field sends it, is no cursor.)
            raise InvalidTask(
                f"cursor: {cursor!r} is not a cursor: pass back a next_cursor from a listing",
                "cursor",
            )
        params = {"status": status, "type": type, "cursor": cursor or _CURSOR_START,
                  "limit": limit + 1}
        if status and type:
            query = Q.list_by_status_and_type
        elif status:
            query = Q.list_by_status
        elif type:
            query = Q.list_by_type
        else:
            query = Q.list_all
        rows = await self.db.fetch_all(query, params)
        items = [_task(r) for r in rows[:limit]]
        next_cursor = items[-1].id if len(rows) > limit else None
        return TaskPage(items=items, next_cursor=next_cursor)

    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in await self.db.fetch_all(Q.counts_by_status):
            counts[row["status"]] = row["n"]
        return counts
