"""The storage interface: everything LocalFlow asks of a database, and nothing else.

`Queue` and `Schedules` (shared/queue.py, shared/schedules.py) hold the policy: validation,
defaults, backoff, error messages, when to wake workers. A `Store` holds the data: it moves
tasks between states in transactions, fenced so that concurrent workers, schedulers and API
processes (on one host or many) can never both win. Each backend (shared/store/sqlite/,
shared/store/postgres/) implements `Store`; the contract tests (tests/contract/) run against
every one of them. api/ and worker/ see only this module's protocols and records: no
connection, no SQL, no driver row ever crosses it.

Rules every backend keeps:

- Time is passed in. Every method whose result depends on the time takes `now` (Unix seconds,
  float) and never reads a clock, so tests drive time with shared/clock.py's FakeClock.
- Ids are passed in. Task ids (ULIDs, shared/ids.py) are chosen by the caller (NewTask.id);
  a store generates only claim tokens (random, unguessable, unique per claim).
- Fencing. Every transition out of `running` names the status *and* the claim token in its
  condition; a worker whose lease expired and whose task was claimed again changes nothing,
  and learns so from the return value (False / None), never from an exception.
- Atomicity. Each method is one transaction unless its docstring says otherwise; a method that
  raises has changed nothing.
- Errors. Domain outcomes come back as values (None, False) or as shared/errors.py errors;
  storage trouble is StorageBusy (locked too long: retry), StorageFull (disk full),
  StorageUnavailable (cannot reach or read the database). Driver exceptions never escape.
  No message contains a password.
- Records in, records out: msgspec Structs and dataclasses from here and shared/schemas.py,
  plain str/int/float/dict values. JSON columns are decoded before they leave the store
  (except in TransferStore's rows, which carry a copy's data as stored: see there).
- Audit. A method that takes `audit` (operator actions: cancel, retry, delete, schedule and
  queue changes) inserts those entries in its own transaction when, and only when, the action
  changed something (the docstring says when), so no action commits without its record
  (shared/audit.py says why).
- Statuses are shared/schemas.py STATUSES: queued, running, succeeded, failed, cancelled; the
  edges are docs/state_machine.md.

A backend package exposes two module-level coroutines (see `Backend`): `migrate(settings)` and
`open(settings)`. shared/store/__init__.py chooses the backend from `--db`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec
from msgspec import UnsetType

from shared.audit import AuditEntry, AuditPage
from shared.queue_schemas import QueueGate, QueueInfo
from shared.schedule_schemas import Missed, Overlap, Schedule
from shared.schemas import Attempt, QueuedView, Status, Task, TaskPage
from shared.settings import Settings
from shared.store.counting import TaskCounts

# --------------------------------------------------------------------------------------------
# Records: tasks
# --------------------------------------------------------------------------------------------


class NewTask(msgspec.Struct, kw_only=True):
    """A validated submission with every default filled in, ready to insert (Queue.prepare)."""

    id: str  # a ULID chosen by the caller; the store never makes task ids
    type: str
    payload: dict[str, Any]  # normalised: what will actually run
    priority: int
    max_attempts: int
    timeout: float
    run_at: float  # Unix seconds; not claimable before
    idempotency_key: str | None
    request_hash: str | None  # what the key promises: same key, same hash (Queue.request_hash)
    queue: str = "default"  # a valid queue name (shared/schemas.py QueueName)
    # Where to POST the task when it reaches a final state (docs/webhooks.md); checked by
    # Queue.prepare against the host policy.
    callback_url: str | None = None


class Claimed(msgspec.Struct, kw_only=True):
    """A task as a worker holds it: the token fences everything the worker writes back."""

    id: str
    type: str
    payload: dict[str, Any]
    attempt: int  # the task's attempt number for this claim (1 for the first)
    max_attempts: int
    timeout: float
    priority: int
    run_at: float
    token: str
    queue: str = "default"


class Heartbeat(msgspec.Struct, kw_only=True):
    held: set[str]  # task ids whose lease was extended (still ours)
    cancel: set[str]  # of those, the ones a person asked to cancel


class TaskEvent(msgspec.Struct, kw_only=True):
    """One status change of one task, from the durable event log (GET /api/events)."""

    cursor: str  # "A-B": increases in commit order (shared/task_events.py cursor_key)
    task_id: str
    status: Status
    attempts: int
    type: str
    time: float  # Unix seconds: when the change was made (the task's updated_at)
    queue: str = "default"  # the task's queue (docs/queues.md)


class EventPage(msgspec.Struct, kw_only=True):
    events: list[TaskEvent]  # oldest first
    lost: bool  # the cursor is older than events already pruned: some were never seen


class EventStart(msgspec.Struct, kw_only=True):
    """Where a reader of the event log starts for a time (Store.events_since)."""

    cursor: str  # events_after(cursor) begins with the first kept event stamped at/after it
    lost: bool  # events were pruned and none kept is as old as the time: some may be gone


class LiveOutput(msgspec.Struct, kw_only=True):
    """The recent output of a running attempt (docs/live_output.md): the last bytes of each
    stream as the worker last stored them. It belongs to one claim: a store returns it only
    while the task is running with that claim token."""

    task_id: str
    token: str  # the claim it belongs to (never shown: it fences the worker's writes)
    attempt: int
    stdout: str  # the last bytes of stdout, decoded (bounded by the worker)
    stderr: str
    stdout_bytes: int  # bytes the attempt wrote to stdout so far, all of them
    stderr_bytes: int
    updated_at: float  # Unix seconds: when it was stored
    flushes: int = 1  # how many times this attempt's output was stored (what a flush costs)


def live_output_params(output: LiveOutput, now: float) -> dict[str, Any]:
    """The parameters of a backend's live_output_save query. Shared by the backends."""
    return {"task_id": output.task_id, "token": output.token, "attempt": output.attempt,
            "stdout": output.stdout, "stderr": output.stderr,
            "stdout_bytes": output.stdout_bytes, "stderr_bytes": output.stderr_bytes,
            "now": now}


def live_output_from(row: Any) -> LiveOutput:
    """A task_live_output row (any mapping by column name) as a record. Shared by the
    backends."""
    return LiveOutput(
        task_id=row["task_id"], token=row["claim_token"], attempt=row["attempt"],
        stdout=row["stdout"], stderr=row["stderr"], stdout_bytes=row["stdout_bytes"],
        stderr_bytes=row["stderr_bytes"], updated_at=row["updated_at"], flushes=row["flushes"],
    )


# What `fail` may record as an attempt's outcome.
FailOutcome = Literal["failed", "timeout"]

# --------------------------------------------------------------------------------------------
# Records: schedules
# --------------------------------------------------------------------------------------------


class ScheduleFields(msgspec.Struct, kw_only=True):
    """A schedule's editable fields, validated by Schedules (the store checks nothing)."""

    name: str
    cron_expr: str
    timezone: str
    task_type: str
    payload: dict[str, Any]  # normalised like a task's
    enabled: bool
    priority: int
    max_attempts: int | None  # None: the server default at fire time
    timeout: float | None  # None: the payload's, else the server default
    overlap: Overlap
    missed: Missed
    queue: str = "default"  # the queue of the tasks it makes
    callback_url: str | None = None  # the callback_url of the tasks it makes


class DueSchedule(msgspec.Struct, kw_only=True):
    """A schedule whose next fire has come (enabled, next_fire_at <= now), as fire_due reads it."""

    id: str
    fields: ScheduleFields
    next_fire_at: float  # the stored value: the compare-and-set's expected value


class ScheduleTiming(msgspec.Struct, kw_only=True):
    """What resync needs to know about an enabled schedule whose next fire is in the future."""

    id: str
    cron_expr: str
    timezone: str
    next_fire_at: float


Outcome = Literal["fired", "missed", "overlap", "already fired", "error"]


class Fire(msgspec.Struct, kw_only=True):
    """What one due schedule came to in one scheduler pass."""

    schedule_id: str
    fire_time: float
    outcome: Outcome
    task_id: str | None = None
    late: float = 0.0  # seconds between the fire time and the moment it was handled


class FirePlan(msgspec.Struct, kw_only=True):
    """The cron decision for one due schedule, made by a pure function (Schedules.plan) so no
    cron code lives in a store. The store carries it out, in this order, in one transaction:

    1. Compare-and-set next_fire_at from DueSchedule.next_fire_at to `next_fire_at` (None
       pauses it). If another scheduler moved it first, stop: no Fire for this schedule.
    2. If `missed_fire_time` is set, record a skip ("missed") at that fire time.
    3. If `skip` is set ("missed" or "error"), record a skip at `fire_time` with
       `skip_reason` and return Fire(outcome=skip).
    4. If the schedule's overlap is "skip" and it has a task queued or running, record a skip
       ("overlap") and return Fire(outcome="overlap").
    5. If `task_error` is set, record a skip with that reason and return Fire("error").
    6. Insert `task` with schedule_id and fire_time = `fire_time` (run_at = fire_time). If
       the unique (schedule_id, fire_time) constraint refuses it, record a skip
       ("already fired") and return Fire("already fired").
    7. Record the fire (last_fire_at = fire_time, last_task_id) and return Fire("fired").

    Every Fire carries `late`. "Record a skip" sets last_skip_at and last_skip_reason
    (the reason is the outcome unless given).
    """

    fire_time: float
    next_fire_at: float | None
    late: float
    missed_fire_time: float | None = None
    skip: Literal["missed", "error"] | None = None
    skip_reason: str | None = None
    task: NewTask | None = None  # None only when skip or task_error is set
    task_error: str | None = None  # the task this schedule makes is invalid today


# plan(due, now) -> FirePlan: pure, raises nothing.
PlanFire = Callable[[DueSchedule, float], FirePlan]
# next_fire(timing, now) -> where next_fire_at should be, or None to leave it alone.
NextFire = Callable[[ScheduleTiming, float], float | None]

# --------------------------------------------------------------------------------------------
# Records: webhook deliveries (docs/webhooks.md)
# --------------------------------------------------------------------------------------------


class DueDelivery(msgspec.Struct, kw_only=True):
    """A delivery a deliverer holds (claim_deliveries): the token fences what it writes back."""

    id: str
    task_id: str
    url: str
    task_status: Status  # the final state this delivery reports
    tries: int  # tries already made (0 before the first)
    token: str


# --------------------------------------------------------------------------------------------
# Records: stats, dashboard, health
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    start: float  # Unix seconds at the start of the bucket
    succeeded: int
    failed: int


@dataclass(frozen=True)
class Throughput:
    buckets: list[Bucket]
    bucket_seconds: int

    @property
    def succeeded(self) -> int:
        return sum(b.succeeded for b in self.buckets)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.buckets)

    @property
    def peak(self) -> int:
        return max((b.succeeded + b.failed for b in self.buckets), default=0)


def fill_throughput(
    counts: dict[int, dict[str, int]], now: float, hours: float, bucket_seconds: int
) -> Throughput:
    """Buckets over the last `hours`, oldest first, gaps as 0, from counts keyed by bucket
    number (finished_at // bucket_seconds) then status. Shared by the backends."""
    first, last = throughput_window(now, hours, bucket_seconds)
    return Throughput(
        buckets=[
            Bucket(
                start=float(b * bucket_seconds),
                succeeded=counts.get(b, {}).get("succeeded", 0),
                failed=counts.get(b, {}).get("failed", 0),
            )
            for b in range(first, last + 1)
        ],
        bucket_seconds=bucket_seconds,
    )


def throughput_window(now: float, hours: float, bucket_seconds: int) -> tuple[int, int]:
    """The first and last bucket numbers the chart shows."""
    return int((now - hours * 3600) // bucket_seconds) + 1, int(now // bucket_seconds)


@dataclass(frozen=True)
class WaitingTask:
    id: str
    type: str
    priority: int
    run_at: float
    created_at: float


@dataclass(frozen=True)
class WorkerSeen:
    id: str
    hostname: str
    pid: int
    slots: int
    started_at: float
    last_seen: float
    stopped_at: float | None
    running: int  # tasks it holds now


@dataclass(frozen=True)
class Depth:
    status: Status  # queued or running
    type: str
    count: int
    queue: str = "default"


QUEUE_SETTINGS_READ = 1000  # queue settings /metrics reads at most (it names far fewer)


@dataclass(frozen=True)
class QueueStats:
    """What /metrics reports about the queue, read at scrape time."""

    depth: list[Depth]  # unfinished tasks by status, type and queue (only non-zero rows)
    totals: dict[str, int]  # every status in STATUSES, finished ones included (0 if none)
    oldest_runnable_at: float | None  # min run_at of queued tasks with run_at <= now
    workers_alive: int  # workers not stopped whose last_seen >= alive_since
    # Queues with stored settings (limit, pause), by name; at most QUEUE_SETTINGS_READ.
    queue_settings: list[QueueGate] = field(default_factory=list)


@dataclass(frozen=True)
class StorageInfo:
    """The system page's storage facts, in terms both engines can fill.

    `sizes`: labelled byte counts, e.g. {"database file": n, "write-ahead log": n} on SQLite,
    {"database": n} on PostgreSQL. `details`: other labelled facts worth showing, e.g.
    {"pages": "1200 x 4 KiB, 3 free"} or {"server": "PostgreSQL 15.4"}. Never a password.
    """

    engine: str  # "SQLite", "PostgreSQL"
    version: str  # the engine's version
    location: str  # the file path, or the redacted URL (Store.describe())
    sizes: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Change notification
# --------------------------------------------------------------------------------------------


class Listener(Protocol):
    """Wake-ups from other processes (on any host the backend reaches): "runnable work may
    have been committed, or a cancel asked for; look now".

    One per store, so one per process: Store.listener() returns the same object every time,
    and the worker and the scheduler both subscribe to it. It starts listening on the first
    subscribe (or wait) and stops on the last unsubscribe or Store.close(). Wake-ups only ever
    make things faster: a lost one (socket error, dropped connection) must never stall anyone,
    because every user also polls. A listener reconnects on its own and never raises from
    subscribe, wait or a callback.
    """

    def subscribe(self, on_wake: Callable[[], None]) -> Callable[[], None]:
        """Call `on_wake()` (on the event loop, cheaply, never awaited) on every wake-up from
        now on; returns the function that unsubscribes. Needs a running event loop."""
        ...

    async def wait(self, seconds: float) -> bool:
        """Wait until the next wake-up, at most `seconds`; True if woken."""
        ...


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class TaskStore(Protocol):
    """Tasks, their attempts, and the workers that run them."""

    async def insert_tasks(
        self, tasks: Sequence[NewTask], now: float
    ) -> list[tuple[Task, bool]]:
        """Insert every task in one transaction, in order; returns (task, created) for each.

        A task whose idempotency_key is already in the database is not inserted: if the
        stored request_hash equals the new one, it returns (the stored task, False); if not,
        it raises IdempotencyConflict(key, stored id) and inserts none of `tasks`. Two keys
        equal within one call behave as if inserted one after the other. Inserted tasks are
        queued with attempts 0, created_at = updated_at = now.

        Wakes every Listener from the transaction itself (no notify() needed after it): a
        listener may so be woken before the tasks are visible to its reads, and must look
        again with a write (a claim waits for this transaction's lock) rather than trust a
        read made meanwhile (worker/pool.py, `_remember_idle`).
        """
        ...

    async def claim(
        self, worker_id: str, limit: int, lease_until: float, now: float,
        queues: Sequence[str] | None = None,
        on_claimed: Callable[[list[Claimed]], None] | None = None,
    ) -> list[Claimed]:
        """Move up to `limit` queued tasks with run_at <= now to running, most urgent first
        (priority desc, run_at, id), and return them in that order.

        on_claimed: a backend may call it on the event loop with the same list (the same
        objects) before the claim is durable, i.e. while its commit runs, and always before
        the claim returns; the claim may still fail after it (then it raises, and nothing
        was claimed). Once at most. SQLite does; PostgreSQL does not (docs/state_machine.md,
        "Started before the claim is durable").

        Queues (docs/queues.md): only tasks of `queues` if given (None: every queue); never
        a task of a paused queue; and never so many that a queue with a concurrency limit
        has more than that many tasks running, counted across every process and host in
        the claim's own transaction (shared/store/claiming.py).

        Each claimed task: attempts + 1, a fresh claim_token, lease_until, worker_id,
        started_at kept if set (else now), an attempt row (attempt number, worker_id,
        started_at = now). Two concurrent claims never return the same task. limit <= 0
        returns [] without touching the database.
        """
        ...

    async def extend_leases(
        self, tokens: Sequence[str], lease_until: float, now: float
    ) -> Heartbeat:
        """Set lease_until for every running task whose claim_token is in `tokens`; returns
        which task ids were extended and which of those have cancel_requested. A token that
        no longer matches (task finished, rescued, re-claimed) is simply absent."""
        ...

    async def complete(self, task: Claimed, result: Any, now: float) -> bool:
        """running -> succeeded, fenced on (id, status running, claim_token): result stored,
        last_error cleared, lease and token cleared, finished_at = now; the attempt row
        finished with outcome "succeeded" and output = result. False if the fence fails
        (nothing changed)."""
        ...

    async def complete_many(
        self, items: Sequence[tuple[Claimed, Any]], now: float
    ) -> list[bool]:
        """complete() for each (task, result), one answer per item in order, written together
        where the backend can (one awaited call for a worker's whole batch of successes)."""
        ...

    async def fail(
        self, task: Claimed, *, error: str, result: Any, outcome: FailOutcome,
        retry_at: float | None, now: float,
    ) -> Status | None:
        """running -> queued (run_at = retry_at) if retry_at is not None and attempts <
        max_attempts, else running -> failed (finished_at = now). Fenced like complete.
        Stores result and last_error = error, clears token, lease and worker_id; finishes the
        attempt row with `outcome`, `error`, output = result. Returns the new status
        ("queued" or "failed"), or None if the fence fails."""
        ...

    async def release(self, task: Claimed, error: str, now: float) -> bool:
        """running -> queued at once (run_at = now), the attempt not spent (attempts - 1):
        the worker is stopping. Fenced like complete; finishes the attempt row with outcome
        "released" and `error`. False if the fence fails."""
        ...

    async def unclaim(self, task: Claimed, now: float, *, cancelled: bool = False) -> bool:
        """running -> queued as if it had never been claimed: a task a worker claimed ahead
        and never started (docs/state_machine.md, "Claimed ahead"). attempts - 1, its attempt
        row deleted (it never ran, so the history has nothing to show), started_at cleared if
        that was its first claim, its place in line (run_at) kept. cancelled: a person
        cancelled it meanwhile, so -> cancelled instead (finished_at = now, last_error
        "cancelled"), as a queued task's cancel leaves it. Fenced like release; False if the
        fence fails."""
        ...

    async def finish_cancelled(
        self, task: Claimed, result: Any, error: str, now: float
    ) -> bool:
        """running -> cancelled (finished_at = now, last_error = error), after the worker
        stopped a task a person cancelled. Fenced like complete; attempt outcome "cancelled".
        False if the fence fails."""
        ...

    async def rescue_expired(self, now: float) -> list[str]:
        """Every running task whose lease_until < now: to cancelled if cancel_requested, else
        queued (run_at = now) if attempts < max_attempts, else failed; token, lease and
        worker cleared; last_error = "lease expired: the worker running attempt N stopped
        heartbeating (crashed or killed)"; its open attempt row finished with outcome "lost"
        and error "lease expired: the worker stopped heartbeating (crashed or killed)".
        Returns the ids. Safe to run from many processes at once."""
        ...

    async def cancel_requests(self, worker_id: str) -> set[str]:
        """Ids of running tasks held by `worker_id` with cancel_requested (a read)."""
        ...

    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        """The earliest run_at of any queued task, due or not (a read); None if none. Only
        tasks a claim with these `queues` could take: paused and full queues left out."""
        ...

    async def worker_seen(
        self, worker_id: str, hostname: str, pid: int, slots: int, now: float
    ) -> None:
        """Insert the worker (started_at = last_seen = now) or set last_seen = now and
        stopped_at = NULL."""
        ...

    async def worker_stopped(self, worker_id: str, now: float) -> None:
        """stopped_at = last_seen = now (nothing if unknown)."""
        ...

    async def cancel(
        self, task_id: str, now: float, audit: Sequence[AuditEntry] = ()
    ) -> Task | None:
        """queued -> cancelled (finished_at = now, last_error "cancelled"); running ->
        cancel_requested = true (its worker stops it); any other status unchanged. Returns
        the task as it is after this, or None if there is no such task. `audit` is written
        when a queued task was cancelled or a running one asked to stop."""
        ...

    async def retry(
        self, task_id: str, extra_attempts: int, now: float, audit: Sequence[AuditEntry] = ()
    ) -> tuple[bool, Task | None]:
        """failed/cancelled -> queued, run_at = now, max_attempts = attempts +
        extra_attempts, cancel_requested cleared, finished_at cleared. Returns (changed, the
        task as it is after this); (False, task) if it was in another status; (False, None)
        if there is no such task. `audit` is written when changed."""
        ...

    async def delete(
        self, task_id: str, audit: Sequence[AuditEntry] = ()
    ) -> Literal["deleted"] | Status | None:
        """Delete a task that is not running, with its attempts. Returns "deleted"; the
        task's status if it is running (nothing deleted); None if there is no such task.
        `audit` is written when deleted."""
        ...

    async def get(self, task_id: str) -> Task | None:
        ...

    async def get_many(self, task_ids: Sequence[str]) -> list[Task]:
        """These tasks in one read, in the order of `task_ids`; unknown ids are left out
        (a page of 50 is one query, not 50: on PostgreSQL each is a round trip)."""
        ...

    async def attempts(self, task_id: str) -> list[Attempt]:
        """The task's attempt rows, oldest first ([] for an unknown task)."""
        ...

    async def list_tasks(
        self, *, status: Status | None, type: str | None, cursor: str | None, limit: int,
        queue: str | None = None,
    ) -> TaskPage:
        """Newest first (id descending), only ids < cursor when a cursor is given, filtered
        by status, type and/or queue; at most `limit` items, next_cursor = the last item's id when
        more exist, else None. The caller has validated status."""
        ...

    async def counts(self) -> dict[str, int]:
        """Tasks by status: every status in STATUSES is a key (0 if none)."""
        ...

    async def queues(self) -> list[QueueInfo]:
        """Every queue that has tasks or settings, by name, with its counts by status (from
        the kept counts, task_counts: a read of a few rows at any size)."""
        ...

    async def queue(self, name: str) -> QueueInfo:
        """One queue (counts all 0, no limit, not paused if it has neither tasks nor
        settings)."""
        ...

    async def set_queue(
        self, name: str, *, concurrency: int | UnsetType | None, paused: bool | None,
        now: float, audit: Sequence[AuditEntry] = (),
    ) -> None:
        """Store a queue's settings, creating its row: `concurrency` (None: no limit) unless
        UNSET, `paused` unless None. Wakes workers (a resumed queue is picked up at once).
        `audit` is always written."""
        ...

    async def take_lease(self, name: str, holder: str, until: float, now: float) -> bool:
        """Hold the named lease until `until` if it is free, expired (until < now) or already
        `holder`'s; True if `holder` holds it now. One transaction."""
        ...

    async def prune(self, status: Status, before: float, limit: int) -> int:
        """Delete up to `limit` tasks in `status` (a finished one) with finished_at < before,
        oldest first, with their attempts, in one short transaction; never a task that is
        some schedule's last_task_id. Returns how many. SQLite also hands the freed pages
        back to the file system when the file has auto_vacuum=INCREMENTAL."""
        ...

    async def task_id_by_key(self, key: str) -> str | None:
        """The id of the task submitted with this idempotency key, if any."""
        ...

    async def task_ids_of_schedule(
        self, schedule_id: str, *, status: Status | None = None, type: str | None = None,
        cursor: str | None = None, limit: int = 50, queue: str | None = None,
    ) -> list[str]:
        """Ids of the tasks a schedule made, newest first, only ids < cursor if given,
        narrowed by status, type and queue."""
        ...

    async def queued_view_ids(
        self, view: QueuedView, now: float, *, type: str | None = None,
        schedule_id: str | None = None, cursor: str | None = None, limit: int = 50,
        scan: int = 2000, queue: str | None = None,
    ) -> tuple[list[str], str | None]:
        """Ids of queued tasks in one derived view (shared/schemas.py QUEUED_VIEWS: ready =
        run_at <= now; retrying = not due and attempts > 0; scheduled = not due, no attempt),
        newest first, only ids < cursor if given, narrowed by type, schedule and queue.

        Looks at no more than the `scan` newest queued tasks below the cursor, so finding 60
        retrying tasks among a million delayed ones costs a bounded window per call. Returns
        up to `limit` ids and the cursor to go on from: the last id returned when `limit`
        were found, else the end of the window looked at, or None when no queued task is
        left below it. A call may return fewer than `limit` ids (even none) with a cursor."""
        ...

    async def search_task_ids(
        self, needle: str, *, status: Status | None = None, type: str | None = None,
        schedule_id: str | None = None, cursor: str | None = None, floor: str | None = None,
        limit: int = 50, scan: int = 2000, queue: str | None = None,
    ) -> tuple[list[str], str | None]:
        """Ids of tasks whose payload (a shell task's command and arguments, an http task's
        URL...), last error or result (stderr, an error body) contains `needle`, newest
        first, only ids < cursor and >= floor when given, narrowed by status, type, schedule
        and queue. `needle` is matched without regard to ASCII case (the caller lowers it).

        A substring search has no index to use, so it looks at no more than the `scan` newest
        tasks (under the filters) below the cursor: one page costs a bounded read however big
        the table. Returns up to `limit` ids and the cursor to go on from, as queued_view_ids
        does: the last id returned when `limit` were found, else the end of the window, or
        None when no task is left below it (or above the floor)."""
        ...

    async def run_waiting_now(self, task_id: str, now: float) -> bool:
        """A queued task that is not due yet (delayed, or in its backoff before a retry):
        run_at = now, so the next claim may take it. Fenced on (status queued, run_at > now):
        any other task is left as it is and the answer is False. Notifies listeners when it
        changed something (the task is runnable now)."""
        ...

    async def attempt_seconds(self, task_ids: Sequence[str], now: float) -> dict[str, float]:
        """Per task id: the seconds its attempts took, summed (finished_at - started_at; an
        attempt still open counts up to `now`). Backoff waits between attempts are not
        counted. A task with no attempt rows is absent. A read."""

    async def events_after(self, cursor: str | None, limit: int) -> EventPage:
        """Task events after `cursor` (None: from the oldest kept), oldest first, at most
        `limit`. Every status change is an event, written by the transaction that made it
        (a trigger: insert, claim, finish, retry, rescue, cancel); events are returned in
        commit order, and never one that could still be followed by an event with a smaller
        cursor (PostgreSQL: only below the oldest open transaction), so a reader that stores
        the last cursor it got misses nothing. `lost` when events after the cursor were
        already pruned. The cursor is "A-B" with A, B decimal (shared/task_events.py)."""
        ...

    async def events_head(self) -> str:
        """The cursor of the newest event events_after can return now (or the pruning
        horizon, "0-0" at first, when none is kept): where a new reader starts."""
        ...

    async def events_newest(self) -> str:
        """The cursor of the newest event committed, readable or not: on PostgreSQL it may be
        above the oldest open transaction, so events_after does not return it yet (SQLite:
        events_head). A reader whose cursor has reached it has read every event committed
        before this was asked: how a stream tells that its replay is done."""
        ...

    async def events_since(self, since: float) -> EventStart:
        """A cursor to read the log from `since` (Unix seconds) on: just before the kept event
        with the earliest stamp at or after it (one seek of the time index), but never past
        events_head (PostgreSQL: an event committed above the oldest open transaction is not
        readable yet, and one still to commit would land behind a cursor past it); the head
        when no kept event is that recent. Events are stamped by the writing process's clock
        and logged in commit order, so the two orders agree only up to clock differences
        between writers and the length of transactions: a reader that needs every event from
        a moment on asks for a little earlier. `lost` when events were pruned and `since` is
        earlier than every kept event's stamp (or none is kept): events stamped at or after
        it may be among the pruned. A read."""
        ...

    async def prune_events(self, before: float) -> int:
        """Delete events older than `before` (Unix seconds) that no reader could still be
        waiting behind; remember the newest pruned cursor. Returns how many went."""
        ...

    async def statuses(self, task_ids: Sequence[str]) -> dict[str, Status]:
        """The status of each of these tasks, in one read (any number of ids); an id with no
        task (never was, or deleted) is absent. What waiters re-read on each wake-up."""
        ...

    async def save_live_output(
        self, outputs: Sequence[LiveOutput], ended: Sequence[tuple[str, str]], now: float
    ) -> None:
        """In one transaction: store each output (replacing the task's row, updated_at = now,
        `flushes` counted up for the same claim, 1 for a new one), fenced on (task running,
        claim_token = output.token): an attempt that ended meanwhile stores nothing; then
        delete the rows of `ended` (task id, claim token) pairs, the claims that ended."""
        ...

    async def live_outputs(self, task_ids: Sequence[str]) -> dict[str, LiveOutput]:
        """The stored live output of each of these tasks that is running with the claim the
        output belongs to (a read); others (finished, re-claimed, never stored) are absent."""
        ...


class WebhookStore(Protocol):
    """Webhook deliveries (docs/webhooks.md). A delivery is never made by a call here: the
    transaction that moves a task with a callback_url into succeeded, failed or cancelled
    writes it (a trigger in each backend), so every path into a final state (complete, fail,
    cancel, rescue_expired, anything later) records one, durably, before anyone tries it.
    It is pending and due at the task's updated_at. Deleting a task deletes its deliveries."""

    async def claim_deliveries(
        self, limit: int, lease_until: float, now: float
    ) -> list[DueDelivery]:
        """Up to `limit` pending deliveries with next_try_at <= now whose lease is free
        (none, or lease_until < now: its deliverer died), earliest due first, each given a
        fresh token and lease_until. Two concurrent claims never return the same delivery.
        limit <= 0 returns [] without touching the database."""
        ...

    async def record_delivery_try(
        self, delivery_id: str, token: str, attempt: dict[str, Any], *,
        next_try_at: float | None, delivered: bool, now: float,
    ) -> bool:
        """Fenced on (id, state pending, token): tries + 1, `attempt` (a JSON object: at,
        duration, status_code, error) appended to the history, lease cleared. Then delivered
        (state delivered, finished_at = now) if `delivered`; else pending again at
        `next_try_at`, or failed (given up, finished_at = now) if it is None. False (nothing
        changed) if the fence fails."""
        ...

    async def deliveries(self, task_id: str) -> list[dict[str, Any]]:
        """The task's deliveries, oldest first, each a dict: id, task_id, url, task_status,
        state, tries, history (decoded list), next_try_at, created_at, finished_at (Unix
        seconds or None). [] for an unknown task."""
        ...

    async def next_delivery_at(self) -> float | None:
        """The earliest next_try_at of any pending delivery, leased or not (a read)."""
        ...


class ScheduleStore(Protocol):
    """Cron schedules. Exactly-once firing rests on two fences every backend keeps: the
    compare-and-set on next_fire_at (in the transaction that inserts the task) and a unique
    constraint on tasks (schedule_id, fire_time) for non-null fire times."""

    async def insert_schedule(
        self, schedule_id: str, fields: ScheduleFields, next_fire_at: float | None, now: float,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        """`audit` is always written."""
        ...

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """With last_task_status (the status of last_task_id, None if gone or never)."""
        ...

    async def list_schedules(self, limit: int) -> list[Schedule]:
        """By name (case-insensitive), then id."""
        ...

    async def update_schedule(
        self, schedule_id: str, fields: ScheduleFields, *, recompute: bool,
        next_fire_at: float | None, now: float, audit: Sequence[AuditEntry] = (),
    ) -> bool:
        """Replace the fields; next_fire_at is written only if `recompute` (so a fire a
        scheduler committed since the caller read the schedule is never undone). False if
        there is no such schedule; `audit` is written when it was updated."""
        ...

    async def delete_schedule(
        self, schedule_id: str, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        """Delete the schedule; its tasks stay (keeping schedule_id). False if absent;
        `audit` is written when deleted."""
        ...

    async def run_schedule_now(
        self, schedule_id: str, task: NewTask, now: float, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        """In one transaction: if the schedule exists, insert `task` with its schedule_id and
        no fire_time, and record the fire (last_fire_at = now, last_task_id). False (nothing
        inserted) if the schedule is gone; `audit` is written when True."""
        ...

    async def next_due(self) -> float | None:
        """The earliest next_fire_at of any enabled schedule (a read)."""
        ...

    async def fire_due(self, now: float, limit: int, plan: PlanFire) -> list[Fire]:
        """In one write transaction: read up to `limit` enabled schedules with
        next_fire_at <= now (earliest first), call plan(due, now) for each and carry the plan
        out as FirePlan describes. Returns the Fires (none for a schedule whose
        compare-and-set another scheduler won). The caller loops while a full batch came
        back. Safe with any number of schedulers on any number of hosts."""
        ...

    async def resync(self, now: float, next_fire: NextFire) -> int:
        """After the clock went back: for each enabled schedule with next_fire_at > now,
        call next_fire(timing, now); where it returns a time earlier than the stored one,
        compare-and-set next_fire_at to it. Returns how many moved."""
        ...


class StatsStore(Protocol):
    """Reads for /metrics, the dashboard and /health. None of them writes."""

    async def throughput(self, now: float, hours: float, bucket_seconds: int) -> Throughput:
        """Succeeded and failed tasks per finished_at bucket over the last `hours`
        (fill_throughput does the gap filling). Like count_tasks, never holds up pages and
        the API (SQLite: the counting connection, a slice of the window at a time)."""
        ...

    async def oldest_runnable(self, now: float) -> WaitingTask | None:
        """The queued task that has been due longest: the earliest run_at <= now (ties by
        id). Must not read a backlog of tasks that are not due yet (e.g. walk the claim
        index once per distinct priority, stopping at the first due row of each)."""
        ...

    async def count_tasks(
        self, now: float, *, type: str | None = None, schedule_id: str | None = None,
        queue: str | None = None, cap: int | None = None,
    ) -> TaskCounts:
        """Tasks per status under these filters: type, schedule, queue (every status in
        STATUSES a key, 0 if none), plus the queued ones split into QUEUED_VIEWS (ready +
        scheduled + retrying == queued when all three are exact). Without a schedule filter
        it must cost the same at any size: stored statuses from the trigger-kept task_counts
        (009, per queue and type, so the type and queue filters are a sum of a few rows),
        exact; the views from bounded index counts (shared/store/counting.py, the indexes
        lead with queue and type), exact unless both ready and scheduled pass `cap`
        (COUNT_CAP unless given), when those two are lower bounds named in `at_least`. With
        a schedule filter the same at any size: stored statuses from that schedule's kept
        counts (schedule_task_counts, 010, per queue and type too), and its views from its
        queued tasks only, read only when it has some; past `cap` of them the three views
        are lower bounds named in `at_least`."""
        ...

    async def task_counts(self) -> list[tuple[str, str, str, int]]:
        """(queue, type, status, n) for every combination with tasks, from the counts the
        database keeps in the transaction of every change (migration 009): a read of a few
        rows at any size. What /metrics, the status counts and the queues overview use."""
        ...

    async def running_task_ids(self, limit: int = 200) -> dict[str, list[str]]:
        """The running tasks by the worker that holds them (worker id -> task ids, newest
        first), at most `limit` tasks in all: the dashboard links each worker to its tasks.
        A read of the running tasks only."""
        ...

    async def recent_workers(self, now: float, within: float) -> list[WorkerSeen]:
        """Workers with last_seen >= now - within, most recent first (at most 50), each with
        the number of running tasks it holds."""
        ...

    async def queue_stats(self, now: float, alive_since: float) -> QueueStats:
        """Everything /metrics reads at scrape time. Should not queue behind the API's reads
        or writes (SQLite: its own read-only connection)."""
        ...

    async def storage(self) -> StorageInfo:
        ...

    async def change_token(self) -> Hashable:
        """A cheap value that changes whenever any process committed a change to the data
        (it may change spuriously, never stay the same across a commit). Polled by the idle
        worker and the dashboard: no table scan. SQLite: PRAGMA data_version; PostgreSQL,
        e.g.: pg_snapshot_xmax(pg_current_snapshot())."""
        ...

    @property
    def write_transactions(self) -> int:
        """Write transactions this process committed (a counter for /metrics)."""
        ...


class AuditStore(Protocol):
    """The audit trail (docs/audit.md). Entries are written with the actions they record
    (the `audit` parameters above); these are for the rest."""

    async def record_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Insert entries on their own: for an action that is not one transaction (a
        dashboard bulk action: one entry with the count, after its many small ones)."""
        ...

    async def list_audit(
        self, *, action: str | None, target: str | None, cursor: str | None, limit: int
    ) -> AuditPage:
        """Newest first (id descending), only ids < cursor when given, filtered by action
        and/or target_id (exact); at most `limit`, next_cursor = the last item's id when more
        exist, else None. A read."""
        ...

    async def prune_audit(self, before: float, limit: int) -> int:
        """Delete up to `limit` entries with at < before, oldest first, in one short
        transaction. Returns how many."""
        ...


# --------------------------------------------------------------------------------------------
# Copying between stores (`localflow copy`)
# --------------------------------------------------------------------------------------------

# The tables a copy moves, in the order it moves them. Attempts travel with their tasks (a
# task row carries them), so no batch ever holds an attempt without its task.
TransferTable = Literal["workers", "schedules", "tasks", "audit"]
TRANSFER_TABLES: tuple[TransferTable, ...] = ("workers", "schedules", "tasks", "audit")

# Every column a copied row carries, per table: all of them, so ids, statuses, timestamps,
# claim tokens, leases, idempotency keys and request hashes, schedule state and fire times
# arrive unchanged. An attempt's own integer id is the one thing not carried: it is the
# target's to assign (it is never shown, and ids of two sources would collide); attempts are
# inserted oldest first, so their order is kept.
TRANSFER_COLUMNS: dict[str, tuple[str, ...]] = {
    "workers": ("id", "hostname", "pid", "slots", "started_at", "last_seen", "stopped_at"),
    "schedules": (
        "id", "name", "cron_expr", "timezone", "task_type", "payload", "enabled", "priority",
        "max_attempts", "timeout", "overlap", "missed", "next_fire_at", "last_fire_at",
        "last_task_id", "last_skip_at", "last_skip_reason", "created_at", "updated_at", "queue",
        "callback_url",
    ),
    "tasks": (
        "id", "type", "payload", "status", "priority", "run_at", "attempts", "max_attempts",
        "timeout", "idempotency_key", "request_hash", "claim_token", "lease_until", "worker_id",
        "cancel_requested", "result", "last_error", "created_at", "updated_at", "started_at",
        "finished_at", "schedule_id", "fire_time", "queue", "callback_url",
    ),
    "task_attempts": (
        "task_id", "attempt", "worker_id", "started_at", "finished_at", "outcome", "error",
        "output",
    ),
    "audit": (
        "id", "at", "action", "target_kind", "target_id", "count", "channel", "actor",
        "details",
    ),
    "webhook_deliveries": (
        "id", "task_id", "url", "task_status", "state", "tries", "history", "next_try_at",
        "lease_until", "lease_token", "created_at", "finished_at",
    ),
}
# The row counts table_counts reports: the copied tables and the attempts.
COUNTED_TABLES = ("workers", "schedules", "tasks", "task_attempts", "audit", "webhook_deliveries")

# One row as a copy moves it: TRANSFER_COLUMNS' names to plain values (str, int, float, None;
# bool for `enabled` and `cancel_requested`). JSON columns (payload, result, output, an audit
# entry's details) stay the text that was stored, byte for byte: a copy has no reason to
# decode them. A task row also has "attempt_rows": its attempt rows, oldest first, and
# "delivery_rows": its webhook deliveries (history as stored text), oldest first.
TransferRow = dict[str, Any]


def attach_attempts(tasks: list[TransferRow], attempts: Sequence[TransferRow]) -> None:
    """Give each task row of an export batch its attempt rows (oldest first, as read).
    Shared by the backends."""
    by_task: dict[str, list[TransferRow]] = {t["id"]: [] for t in tasks}
    for attempt in attempts:
        if attempt["task_id"] in by_task:
            by_task[attempt["task_id"]].append(dict(attempt))
    for task in tasks:
        task["attempt_rows"] = by_task[task["id"]]


def attach_deliveries(tasks: list[TransferRow], deliveries: Sequence[TransferRow]) -> None:
    """Give each task row of an export batch its webhook delivery rows. Shared by the
    backends."""
    by_task: dict[str, list[TransferRow]] = {t["id"]: [] for t in tasks}
    for delivery in deliveries:
        if delivery["task_id"] in by_task:
            by_task[delivery["task_id"]].append(dict(delivery))
    for task in tasks:
        task["delivery_rows"] = by_task[task["id"]]


@dataclass(frozen=True)
class Imported:
    rows: int  # rows inserted
    skipped: int  # rows not inserted because they collide with one already there
    attempts: int  # attempt rows inserted with their tasks
    deliveries: int = 0  # webhook delivery rows inserted with their tasks


class TransferStore(Protocol):
    """Bulk reads and writes for copying one database into another (localflow/copy.py), in
    bounded batches. Not for a live system: a copy reads a stopped one (docs/scaling.md)."""

    async def table_counts(self) -> dict[str, int]:
        """Rows in each of COUNTED_TABLES (a read)."""
        ...

    async def export_rows(
        self, table: TransferTable, after: str, limit: int
    ) -> list[TransferRow]:
        """Up to `limit` rows of `table` whose id sorts after `after` ("" for the first
        batch), by id: keyset paging, so each batch costs the same however far the copy is."""
        ...

    async def import_rows(self, table: TransferTable, rows: Sequence[TransferRow]) -> Imported:
        """Insert `rows` (as export_rows returns them) in one transaction, values unchanged.
        A row that collides with one already there (same id, idempotency key, or schedule
        and fire time) is skipped and counted, and a skipped task's attempts are not
        inserted: running the same copy twice inserts nothing the second time. Sends no
        wake-up (nobody is expected to be running)."""
        ...


class Store(TaskStore, WebhookStore, ScheduleStore, StatsStore, AuditStore, TransferStore,
            Protocol):
    """One opened database. Made by a backend's `open(settings)`; closed by close()."""

    engine: str  # "sqlite" or "postgresql"

    def describe(self) -> str:
        """Where the data is, for logs, /debug and the system page: a path, or a URL
        without its password ("postgresql://app@db:5432/localflow")."""
        ...

    async def schema_version(self) -> int:
        """The schema version the database is at. Raises StorageUnavailable if unreachable."""
        ...

    def newest_schema_version(self) -> int:
        """The schema version this LocalFlow's migrations for this engine reach."""
        ...

    def notify(self) -> None:
        """Tell every Listener (any process) that runnable work was committed or a cancel
        asked for. Called by Queue/Schedules after such a commit returns; cheap, never
        raises, coalesces many calls in one event-loop turn. A backend that notifies inside
        the transaction itself (PostgreSQL NOTIFY) may do nothing here."""
        ...

    def listener(self) -> Listener:
        """This process's one Listener (the same object on every call)."""
        ...

    def task_listener(self) -> Listener:
        """This process's one Listener of task changes (the same object on every call): it
        wakes after any process, on any host the backend reaches, committed a change of some
        task's status (submitted, claimed, finished, retried, cancelled, rescued). Sent by the
        store itself with every such commit: no caller has to remember. Unlike listener(),
        it also wakes once when it (re)connects, since changes may have been missed; waiters
        (shared/task_watch.py) re-read then. Same rules: a lost wake-up only delays."""
        ...

    async def release_memory(self) -> None:
        """Free what the store keeps in this process's memory only to go faster, such as
        SQLite's page caches (refilled from the OS's file cache as they are used again).
        Changes no data and no answer; harmless at any time, also after close(). Called when
        the API has gone idle after a load (localflow/idle_memory.py)."""
        ...

    async def close(self) -> None:
        """Finish queued writes, stop the listener, close connections. Idempotent."""
        ...


class Backend(Protocol):
    """What a backend module (shared.store.sqlite, shared.store.postgres) exposes."""

    async def migrate(self, settings: Settings) -> int:
        """Bring the schema to the newest version; returns it. Safe when several processes
        start at once (one migrates, the others wait and find nothing to do). Raises
        SchemaTooNew if the database is newer than this LocalFlow, StorageUnavailable if it
        cannot be reached."""
        ...

    async def open(self, settings: Settings) -> Store:
        """Open a migrated database. Raises SchemaNotReady (run `localflow migrate`),
        SchemaTooNew, or StorageUnavailable."""
        ...
