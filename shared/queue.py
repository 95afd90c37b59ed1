"""The task queue's policy: validation, defaults, backoff, error messages, wake-ups.

Shared by the API and the worker. The data lives behind a Store (shared/store/base.py); this
module never sees a connection or SQL, so it works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from shared import audit
from shared.clock import Clock, SystemClock
from shared.errors import Conflict, IdempotencyConflict, InvalidTask, NotFound, QueueError
from shared.ids import is_valid_id, new_id, new_ids
from shared.policy import Policy, PolicyError
from shared.queue_schemas import QUEUE_NAME_RULE, is_queue_name
from shared.schemas import (
    DEFAULT_QUEUE,
    MAX_DELAY,
    MAX_RUN_AT_PAST,
    STATUSES,
    TERMINAL,
    Attempt,
    PayloadError,
    Task,
    TaskCreate,
    TaskOutput,
    TaskPage,
    to_datetime,
    validate_payload,
)
from shared.settings import Settings
from shared.store.base import Claimed, Heartbeat, LiveOutput, NewTask, Store
from shared.webhooks import Delivery, check_callback_url, delivery_view

__all__ = [
    "Claimed", "Conflict", "Heartbeat", "IdempotencyConflict", "InvalidTask", "NewTask",
    "NotFound", "Queue", "QueueError", "request_hash",
]

RELEASED = "worker shut down before the task finished; returned to the queue"
PRUNE_EVERY = 60.0  # seconds between prunings of the task event log, per process


def request_hash(create: TaskCreate) -> str:
    """What an idempotency key promises: the same request. The key itself is left out."""
    fields = msgspec.structs.asdict(create)
    fields.pop("idempotency_key")
    if fields["queue"] == DEFAULT_QUEUE:
        # Keys stored before queues existed hashed no queue field: the same request still
        # hashes the same.
        fields.pop("queue")
    if fields["callback_url"] is None:
        fields.pop("callback_url")  # likewise for keys stored before webhooks
    return hashlib.sha256(msgspec.json.encode(fields, order="sorted")).hexdigest()


class Queue:
    def __init__(
        self,
        store: Store,
        clock: Clock | None = None,
        settings: Settings | None = None,
        on_runnable: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.settings = settings or Settings()
        self.policy = Policy.from_settings(self.settings)  # what tasks may do (shared/policy.py)
        # Called after a commit that made tasks runnable or asked for a cancel: wakes workers
        # and schedulers in every process (the store's notifier unless a test passes its own).
        # Not after inserts: the store wakes them from the insert's transaction.
        self.on_runnable = on_runnable or store.notify
        self._next_prune = 0.0

    # -- submitting ----------------------------------------------------------------------

    def prepare(
        self, create: TaskCreate, now: float | None = None, task_id: str | None = None
    ) -> NewTask:
        """Validate and fill defaults; raises InvalidTask with a message naming the field.

        `now` and `task_id` let a batch read the clock and make its ids once (enqueue_many)."""
        try:
            payload = validate_payload(create.type, create.payload)
        except PayloadError as exc:
            raise InvalidTask(str(exc), exc.field) from None
        try:
            self.policy.check(create.type, payload)
        except PolicyError as exc:
            raise InvalidTask(str(exc), exc.field) from None
        if create.callback_url is not None:
            check_callback_url(create.callback_url, self.policy.http, self.settings)
        encoded = msgspec.json.encode(create.payload)
        if len(encoded) > self.settings.max_payload_bytes:
            raise InvalidTask(
                f"payload is {len(encoded)} bytes; the limit is {self.settings.max_payload_bytes}",
                "payload",
            )
        if now is None:
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
            id=task_id or new_id(now),
            type=create.type,
            # Stored normalised (defaults filled, method upper-cased): what will actually run.
            payload=msgspec.to_builtins(payload),
            priority=create.priority,
            max_attempts=create.max_attempts or self.settings.default_max_attempts,
            timeout=timeout,
            run_at=run_at,
            idempotency_key=create.idempotency_key,
            request_hash=request_hash(create) if create.idempotency_key else None,
            queue=create.queue,
            callback_url=create.callback_url,
        )

    async def enqueue(self, create: TaskCreate) -> tuple[Task, bool]:
        """Insert one task; returns (task, created). A reused key returns the original."""
        new = self.prepare(create)
        # No on_runnable() here: the store wakes workers from the insert's own transaction
        # (SQLite: just before its COMMIT; PostgreSQL: its NOTIFY). A second wake-up after the
        # commit made an idle worker run one more claim, empty, per task.
        [(task, created)] = await self.store.insert_tasks([new], self.clock.now())
        return task, created

    async def enqueue_many(self, creates: Sequence[TaskCreate]) -> list[tuple[Task, bool]]:
        """Insert all tasks in one transaction, or none (any invalid one rejects the batch)."""
        # One clock read and one run of id making for the whole batch: its tasks are created
        # at the same instant (they commit together anyway).
        now = self.clock.now()
        ids = new_ids(len(creates), now)
        prepare = self.prepare
        news = []
        for index, create in enumerate(creates):
            try:
                news.append(prepare(create, now, ids[index]))
            except InvalidTask as exc:
                where = f"tasks[{index}]"
                raise InvalidTask(
                    f"{where}: {exc}", f"{where}.{exc.field}" if exc.field else where
                ) from None
        return await self.store.insert_tasks(news, now)  # it wakes workers (enqueue)

    # -- working -------------------------------------------------------------------------

    async def claim(
        self, worker_id: str, limit: int, lease: float, queues: Sequence[str] = (),
        on_claimed: Callable[[list[Claimed]], None] | None = None,
    ) -> list[Claimed]:
        """Move up to `limit` runnable tasks to running, most urgent first; only from
        `queues` if given, never beyond a queue's limit, never from a paused queue.
        on_claimed: see Store.claim (may get the tasks before the claim is durable)."""
        if limit <= 0:
            return []
        now = self.clock.now()
        return await self.store.claim(worker_id, limit, now + lease, now, queues or None,
                                      on_claimed=on_claimed)

    async def heartbeat(self, held: Sequence[Claimed], lease: float) -> Heartbeat:
        """Extend the leases of held tasks; says which are still ours and which to cancel."""
        if not held:
            return Heartbeat(held=set(), cancel=set())
        now = self.clock.now()
        return await self.store.extend_leases([c.token for c in held], now + lease, now)

    async def complete(self, claimed: Claimed, result: Any) -> bool:
        """running -> succeeded. False if the lease was lost (another attempt owns the task)."""
        return await self.store.complete(claimed, result, self.clock.now())

    async def complete_many(self, done: Sequence[tuple[Claimed, Any]]) -> list[bool]:
        """complete() for each (claimed, result) in one call: True per task completed, False
        where the lease was lost."""
        return await self.store.complete_many(done, self.clock.now())

    async def fail(
        self, claimed: Claimed, error: str, result: Any = None, outcome: str = "failed",
        *, retry: bool = True,
    ) -> str | None:
        """running -> queued for a retry after backoff, or failed when no attempts are left
        (or at once with retry=False, for a failure that retrying cannot mend).

        Returns the new status, or None if the lease was lost.
        """
        now = self.clock.now()
        retry_at = now + self.backoff(claimed.attempt) if retry else None
        return await self.store.fail(
            claimed, error=error, result=result, outcome=outcome,  # type: ignore[arg-type]
            retry_at=retry_at, now=now,
        )

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt`: exponential, capped, with +-25% jitter so a
        burst of failures does not retry as a burst."""
        base = min(self.settings.retry_base * 2 ** (attempt - 1), self.settings.retry_max)
        return base * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not secrecy

    async def release(self, claimed: Claimed) -> bool:
        """running -> queued at once, attempt not spent: the worker is stopping."""
        released = await self.store.release(claimed, RELEASED, self.clock.now())
        if released:
            self.on_runnable()
        return released

    async def unclaim(self, claimed: Claimed) -> bool:
        """running -> queued as if never claimed: a task claimed ahead that never started."""
        unclaimed = await self.store.unclaim(claimed, self.clock.now())
        if unclaimed:
            self.on_runnable()
        return unclaimed

    async def cancel_unstarted(self, claimed: Claimed) -> bool:
        """running -> cancelled for a task claimed ahead that a person cancelled before it
        started: no attempt spent and none in its history, as if cancelled while queued."""
        return await self.store.unclaim(claimed, self.clock.now(), cancelled=True)

    async def finish_cancelled(self, claimed: Claimed, result: Any = None) -> bool:
        """running -> cancelled, once the worker stopped what a person cancelled."""
        return await self.store.finish_cancelled(claimed, result, "cancelled", self.clock.now())

    async def rescue_expired(self) -> list[str]:
        """Return tasks whose lease ran out to the queue (or fail them if out of attempts)."""
        rescued = await self.store.rescue_expired(self.clock.now())
        if rescued:
            self.on_runnable()
        await self.prune_events()
        return rescued

    async def prune_events(self, *, force: bool = False) -> int:
        """Drop task events older than settings.events_window, at most once a minute (every
        worker's rescue loop calls this, so the log is pruned wherever workers run)."""
        now = self.clock.now()
        if not force and now < self._next_prune:
            return 0
        self._next_prune = now + PRUNE_EVERY
        return await self.store.prune_events(now - self.settings.events_window)

    async def cancel_requests(self, worker_id: str) -> set[str]:
        """Tasks this worker holds that a person asked to cancel (a read: no write lock)."""
        return await self.store.cancel_requests(worker_id)

    async def next_run_at(self, queues: Sequence[str] = ()) -> float | None:
        return await self.store.next_run_at(queues or None)

    async def worker_seen(self, worker_id: str, hostname: str, pid: int, slots: int) -> None:
        await self.store.worker_seen(worker_id, hostname, pid, slots, self.clock.now())

    async def worker_stopped(self, worker_id: str) -> None:
        await self.store.worker_stopped(worker_id, self.clock.now())

    # -- people --------------------------------------------------------------------------

    async def cancel(self, task_id: str) -> Task:
        """queued -> cancelled now; running -> cancel requested (its worker stops it)."""
        now = self.clock.now()
        task = await self.store.cancel(
            task_id, now, audit=audit.of("task.cancel", "task", task_id, now)
        )
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
        changed, task = await self.store.retry(task_id, attempts, now, audit=audit.of(
            "task.retry", "task", task_id, now, details={"attempts": attempts}))
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
        outcome = await self.store.delete(
            task_id, audit=audit.of("task.delete", "task", task_id, self.clock.now())
        )
        if outcome is None:
            raise NotFound(f"no task with id {task_id!r}")
        if outcome != "deleted":
            raise Conflict(
                f"task {task_id} is {outcome}; cancel it and wait until it stops before deleting"
            )

    async def get(self, task_id: str) -> Task:
        task = await self.store.get(task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id!r}")
        return task

    async def live_outputs(self, task_ids: Sequence[str]) -> dict[str, LiveOutput]:
        """The stored live output of those of these tasks that are running (a read)."""
        return await self.store.live_outputs(task_ids)

    async def output(self, task_id: str) -> TaskOutput:
        """A running task's live output tail, else the last attempt's final output."""
        task = await self.get(task_id)
        if task.status == "running":
            live = (await self.live_outputs([task_id])).get(task_id)
            if live is not None:
                return TaskOutput(
                    id=task.id, status=task.status, live=True, attempt=live.attempt,
                    stdout=live.stdout, stderr=live.stderr, stdout_bytes=live.stdout_bytes,
                    stderr_bytes=live.stderr_bytes, updated_at=to_datetime(live.updated_at),
                )
            task = await self.get(task_id)  # it may have finished meanwhile
            if task.status == "running":  # nothing printed yet, or not stored yet
                return TaskOutput(id=task.id, status=task.status, live=True,
                                  attempt=task.attempts, stdout="", stderr="",
                                  stdout_bytes=0, stderr_bytes=0)
        result = task.result if isinstance(task.result, dict) else {}
        return TaskOutput(
            id=task.id, status=task.status, live=False, attempt=task.attempts,
            stdout=_text(result.get("stdout")), stderr=_text(result.get("stderr")),
        )

    async def attempts(self, task_id: str) -> list[Attempt]:
        await self.get(task_id)  # 404 for an unknown task rather than an empty list
        return await self.store.attempts(task_id)

    async def deliveries(self, task_id: str) -> list[Delivery]:
        """The task's webhook deliveries and their tries (docs/webhooks.md), oldest first."""
        await self.get(task_id)  # 404 for an unknown task rather than an empty list
        return [delivery_view(d) for d in await self.store.deliveries(task_id)]

    async def list(
        self,
        status: str | None = None,
        type: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        queue: str | None = None,
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
        if queue is not None and not is_queue_name(queue):
            raise InvalidTask(f"queue: {queue!r} is not a queue name ({QUEUE_NAME_RULE})",
                              "queue")
        return await self.store.list_tasks(
            status=status, type=type, cursor=cursor, limit=limit,  # type: ignore[arg-type]
            queue=queue,
        )

    async def counts(self) -> dict[str, int]:
        return await self.store.counts()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
