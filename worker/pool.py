"""The worker: claims tasks into free slots; one coroutine per slot runs them in turn.

Loop: wait for (wake-up | slot freed | poll interval | stop) -> claim up to the free slots ->
start each. While recent handlers are short, it claims ahead (`_ahead`: more the shorter they
are), tasks waiting in `_ready` for a slot: the next claim's commit then overlaps the running
batch instead of leaving every slot idle for one fsync per batch. Side loops (heartbeat,
rescuer) are small `*_once` methods that tests call directly.
A slot awaits each handler inline and hands a success to `_acks`, written for the whole turn's
successes in one call (`Queue.complete_many`) without the slot waiting for it: a slot so runs
short tasks back to back with no asyncio task, no future and no task switch per task (bench/
README.md, "Worker end to end, second pass"). Failures and stops are written as before, awaited.
On stop: claim nothing more, give running tasks `grace` seconds, then stop them and return them
to the queue without spending their attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import structlog

from shared.clock import Clock, SystemClock
from shared.errors import StorageBusy, StorageError, StorageFull, StorageUnavailable
from shared.queue import Claimed, Queue
from shared.retention import Pruner
from shared.schemas import PayloadError, validate_payload
from shared.settings import Settings
from worker.handlers import HANDLERS, Handler, HandlerContext, TaskFailed
from worker.live_output import LiveOutputs
from worker.task_identity import task_user_from

log = structlog.get_logger("localflow.worker")

# Why an in-flight task was stopped from outside, which decides what is written back.
_CANCELLED, _SHUTDOWN, _LOST, _TIMEOUT = "cancelled", "shutdown", "lost", "timeout"
_RETURNED = "returned"  # claimed ahead, but waited too long for a slot
# Seconds past a task's own timeout before the worker stops a handler that did not stop itself.
BACKSTOP_GRACE = 1.0
# Claiming ahead (docs/state_machine.md, "Claimed ahead"): only while handlers take less than
# PREFETCH_SHORT seconds on average, so a worker busy with long tasks never holds tasks that
# another worker could run; one that waited PREFETCH_HOLD seconds for a slot goes back to the
# queue (its attempt not spent).
PREFETCH_SHORT = 0.05
PREFETCH_HOLD = 2.0
# How many ahead: at least `slots`, and more while handlers are so short that more still start
# within PREFETCH_WAIT seconds (on the recent average), up to PREFETCH_MAX. Why: each claim is a
# transaction, and at 8 slots a transaction per 8-12 no-op tasks cost ~650 us of CPU each
# (begin, the claim's fixed per-statement cost, commit's WAL writes and fsync): 0.125 commits
# per task against 0.016 at 64 slots (bench/README.md, "Worker end to end, second pass"). 448
# rather than 128: a 64-slot worker of no-op tasks then claims ~500 at a time instead of ~190,
# 0.002 commits per task instead of 0.005, ~4 us less CPU per task (bench/README.md, "Session
# 4: 64 slots"); the 0.1 s rule still bounds it for anything but sub-millisecond handlers.
PREFETCH_WAIT = 0.1
PREFETCH_MAX = 448


class _TaskLog:
    """A task's logger, bound (task_id, task_type, attempt) when its first line is written:
    a task that succeeds logs nothing, and structlog's bind cost ~2.5 us of each no-op task."""

    __slots__ = ("_bound", "_claimed")

    def __init__(self, claimed: Claimed) -> None:
        self._claimed = claimed
        self._bound: Any = None

    def __getattr__(self, name: str) -> Any:  # .info, .warning, ... (slots never get here)
        if self._bound is None:
            c = self._claimed
            self._bound = log.bind(task_id=c.id, task_type=c.type, attempt=c.attempt)
        return getattr(self._bound, name)


def _logger(c: Claimed) -> Any:
    return _TaskLog(c)


T = TypeVar("T")
# Storage trouble that passes (a full disk freed, a lock released, a server back): an outcome
# the worker holds is kept and written once the database takes writes again. Dropping it
# would let the lease expire and run a finished command a second time.
TRANSIENT = (StorageBusy, StorageFull, StorageUnavailable)
OUTCOME_RETRY_FIRST = 0.1  # seconds before the first retry of an outcome; doubles from there
OUTCOME_RETRY_MAX = 2.0
OUTCOME_LOG_EVERY = 5.0  # seconds between "still not written" lines for one task


class _Unwritten:
    """What _write_outcome returns for an outcome given up at shutdown."""


UNWRITTEN = _Unwritten()


class Worker:
    def __init__(
        self,
        queue: Queue,
        settings: Settings,
        *,
        handlers: dict[str, Handler] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.handlers = handlers or HANDLERS
        self.clock = clock or SystemClock()
        self.slots = settings.workers
        # Who task programs run as (worker/task_identity.py); checked at start-up by the CLI.
        self.task_user = task_user_from(settings.task_user)
        suffix = secrets.token_hex(3)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{suffix}"
        # Tasks started and not yet written back (handler running or waiting for a slot
        # coroutine, or outcome being written): heartbeated, and what shutdown waits for.
        self.inflight: dict[str, Claimed] = {}
        self._in_handler: set[str] = set()  # tasks given a slot: the slots in use
        # Started, waiting for a slot coroutine to take them (at most `slots` with the running).
        self._assigned: deque[Claimed] = deque()
        self._idle_slots: list[asyncio.Future[None]] = []  # one per slot coroutine waiting
        self._slot_tasks: list[asyncio.Task[None]] = []
        self._handling: dict[str, asyncio.Task[Any]] = {}  # task id -> what runs its handler
        self._detached: set[asyncio.Task[None]] = set()  # outcome writers outside the slots
        self._acks: list[tuple[Claimed, Any, float]] = []  # successes to write, this turn
        self._acks_starting = 0  # their writers created, not yet queued on the store
        self._all_written = asyncio.Event()  # set whenever `inflight` is empty
        self._all_written.set()
        # Claimed ahead, waiting for a slot (with when they were claimed, time.monotonic()):
        # `running` in the database, under this worker's lease, not yet in `inflight`.
        self._ready: deque[tuple[Claimed, float]] = deque()
        self._handler_seconds: float | None = None  # moving average of handler run times
        self._stop_reason: dict[str, str] = {}
        # The backstop timeouts: one heap of (deadline, task id, claim token) and one timer for
        # the earliest, instead of a timer per task (asyncio.timeout's TimerHandle was the top
        # entry of the worker's profile at 64 slots). Entries of finished tasks stay until they
        # come up or the heap is rebuilt.
        self._deadlines: list[tuple[float, str, str]] = []
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_armed = float("inf")
        self._nudge = asyncio.Event()
        self._peer_woke = False
        self._wakes = 0  # wake-ups received so far (_remember_idle)
        self._idle_until: float | None = None  # skip claims until then if nothing changed
        self._seen_version: Hashable = None
        # Tasks whose outcome is known but not yet written (the database refuses writes).
        self.pending_outcomes: set[str] = set()
        self._abandon_outcomes = asyncio.Event()  # set at shutdown once the grace is spent
        # Hooks for metrics (issue: metrics); each gets the Claimed and a label. Besides the
        # task events (started, succeeded, retried, failed, cancelled, timeout), every attempt
        # whose end was written reports "attempt:<its outcome>" once.
        self.on_event: Callable[[str, Claimed, float], None] = lambda *_: None
        # Called after each claim with (tasks claimed, seconds the claim took).
        self.on_claim: Callable[[int, float], None] = lambda *_: None
        self.pruner = Pruner(queue.store, settings, self.id, self.clock)
        # Running shell tasks' output tails, stored once a second (worker/live_output.py).
        self.live_output = LiveOutputs(queue.store, self.clock)
        # Liveness, for the worker's /health: the loop runs, and when it last went round.
        self.running = False
        self.last_loop = 0.0  # time.monotonic()

    # -- main loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        # The process's one listener (shared with the scheduler): wake-ups from any process.
        unsubscribe = self.queue.store.listener().subscribe(self._on_peer_wake)
        stop_watch = asyncio.create_task(self._nudge_on(stop))
        side = [
            asyncio.create_task(self._every(self.heartbeat_interval, self.heartbeat_once)),
            asyncio.create_task(self._every(self.rescue_interval, self.rescue_once)),
            # Retention (shared/retention.py): one worker at a time prunes old tasks.
            asyncio.create_task(self._every(self.settings.prune_interval, self.prune_once)),
            asyncio.create_task(
                self._every(self.settings.live_output_interval, self.live_output_once)
            ),
        ]
        try:
            await self.queue.worker_seen(self.id, socket.gethostname(), os.getpid(), self.slots)
            await self.rescue_once()  # tasks left by a worker that died while we were down
        except Exception:
            # The heartbeat and rescue loops do both again shortly; do not die over it.
            log.exception("start-up bookkeeping failed; continuing")
        log.info("worker started", worker_id=self.id, slots=self.slots)
        self.running = True
        try:
            while not stop.is_set():
                self.last_loop = time.monotonic()
                try:
                    started = await self.claim_once()
                except Exception as exc:
                    # A database locked for longer than the busy limit, or a full disk: the
                    # worker must outlive it, so wait a poll interval and try again.
                    if isinstance(exc, StorageError):
                        log.warning("claim failed; retrying after the poll interval",
                                    error=str(exc))
                    else:
                        log.exception("claim failed; retrying after the poll interval")
                    started = 0
                    await self._wait(self.settings.poll)
                    continue
                if started and self._room() > 0:
                    # One turn of the loop first: the tasks just started that end at once queue
                    # their acknowledgements, which then share the next claim's transaction.
                    await asyncio.sleep(0)
                    continue  # the queue may hold more than we took
                await self._wait(self._wait_timeout())
                if self._peer_woke:
                    self._peer_woke = False
                    await self.cancel_requested_once()
        finally:
            self.running = False
            unsubscribe()
            stop_watch.cancel()
            await self._drain()
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            try:
                await self.queue.worker_stopped(self.id)
            except StorageError as exc:  # bookkeeping only: others see it stop heartbeating
                log.warning("could not record the worker as stopped", error=str(exc))
            log.info("worker stopped", worker_id=self.id)

    async def claim_once(self) -> int:
        """Claim into free slots (and ahead, while handlers are short) and start what fits;
        returns how many were claimed."""
        self._return_held_too_long()
        room = self._room()
        idle_slot = len(self._in_handler) < self.slots and not self._ready
        # Ahead of need, claim only in chunks of a quarter of what may be held (half the
        # slots when as many are claimed ahead): a claim per freed slot would cost a
        # transaction (and its fsync) per task or two.
        if room <= 0 or (not idle_slot and room < max(1, (self.slots + self._ahead()) // 4)):
            return 0
        if await self._nothing_changed():
            return 0
        if self._acks:
            self._write_acks()
        if self._acks_starting:
            # Successes first: written before (or with) this claim, a task never counts twice
            # against the slots or a queue's limit.
            await asyncio.sleep(0)
        began = time.perf_counter()
        # The store may hand the claimed tasks over before the claim's COMMIT returns: their
        # handlers then start while its fsync runs (docs/state_machine.md, "Started before
        # the claim is durable"). Only for an idle worker, where that is the pickup latency:
        # a busy one's claims already overlap running tasks, and its short tasks' successes,
        # queued during the commit, would take a commit of their own instead of sharing the
        # next claim's (bench/README.md, "Session 4: pickup": commits per task doubled).
        idle = not self.inflight and not self._ready
        early: list[Claimed] = []
        answered = False

        def start_early(tasks: list[Claimed]) -> None:
            if not early and not answered:  # once (a claim retried after a failed COMMIT)
                early.extend(tasks)
                self._place(tasks)

        wakes = self._wakes
        try:
            claimed = await self.queue.claim(self.id, room, self.settings.lease,
                                             self.settings.queues,
                                             on_claimed=start_early if idle else None)
        except Exception:
            # The claim rolled back: the tasks started early were never ours. Their handlers
            # stop; anything they write is fenced out by their claim token.
            for c in early:
                self._stop_task(c.id, _LOST)
            raise
        finally:
            answered = True
        self.on_claim(len(claimed), time.perf_counter() - began)
        self._place(self._not_started(early, claimed) if early else claimed)
        if not claimed:
            await self._remember_idle(wakes)
        return len(claimed)

    def _place(self, claimed: list[Claimed]) -> None:
        now = time.monotonic()
        for c in claimed:
            # A free slot means _ready is empty (a slot that frees takes from it first).
            if len(self._in_handler) < self.slots:
                self._start(c)
            else:
                self._ready.append((c, now))

    def _not_started(self, early: list[Claimed], claimed: list[Claimed]) -> list[Claimed]:
        """What the claim's answer adds to the tasks started early: nothing, unless its
        COMMIT failed and the store ran it again (Database._run_batch runs the ops of a failed
        batch alone). Then a task started early and claimed again takes the new claim's token;
        one not claimed again is stopped (never ours); one new is returned to be started."""
        final = {c.id: c for c in claimed}
        for c in early:
            again = final.pop(c.id, None)
            if again is None:
                self._stop_task(c.id, _LOST)
            elif again is not c:
                old = c.token
                c.token, c.attempt = again.token, again.attempt
                for deadline, task_id, token in list(self._deadlines):
                    if task_id == c.id and token == old:
                        heapq.heappush(self._deadlines, (deadline, task_id, c.token))
        return [c for c in claimed if c.id in final]

    def _room(self) -> int:
        """How many tasks the next claim may take: the free slots, plus those it may hold
        ahead (_ahead)."""
        return self.slots - len(self._in_handler) - len(self._ready) + self._ahead()

    def _ahead(self) -> int:
        """How many tasks may wait claimed for a slot: none unless recent handlers were short
        (under PREFETCH_SHORT on average); then `slots`, or more, up to PREFETCH_MAX, as long
        as the last of them would still start within about PREFETCH_WAIT seconds."""
        seconds = self._handler_seconds
        if seconds is None or seconds >= PREFETCH_SHORT:
            return 0
        starts_in_time = int(self.slots * PREFETCH_WAIT / max(seconds, 1e-6))
        return max(self.slots, min(PREFETCH_MAX, starts_in_time))

    def _start(self, c: Claimed) -> None:
        """Give c a slot: the next slot coroutine free takes it."""
        self._in_handler.add(c.id)
        self._track(c)
        if not self._slot_tasks:
            self._slot_tasks = [asyncio.create_task(self._slot(), name=f"slot-{i}")
                                for i in range(self.slots)]
        self._assigned.append(c)
        if self._idle_slots:
            waiter = self._idle_slots.pop()
            if not waiter.done():
                waiter.set_result(None)

    def _start_detached(self, c: Claimed) -> None:
        """Write a stop's outcome for a task that never got a slot (claimed ahead), in a task
        of its own: the slots may all be held by long handlers."""
        self._track(c)
        task = asyncio.create_task(self._execute(c), name=f"task-{c.id}")
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    def _track(self, c: Claimed) -> None:
        self.inflight[c.id] = c
        self._all_written.clear()

    def _forget(self, task_id: str) -> None:
        """c is written back (or given up): no longer ours to heartbeat or wait for."""
        self.inflight.pop(task_id, None)
        self._stop_reason.pop(task_id, None)
        if not self.inflight:
            self._all_written.set()
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()  # nothing left to time out
                self._deadline_timer, self._deadline_armed = None, float("inf")
                self._deadlines.clear()

    async def _slot(self) -> None:
        """One slot: run the tasks given to it, one after another, until cancelled."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while True:
            if not self._assigned:
                waiter: asyncio.Future[None] = loop.create_future()
                self._idle_slots.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._idle_slots:
                        self._idle_slots.remove(waiter)
                continue
            await self._execute(self._assigned.popleft())
            if me is not None and me.cancelling():
                raise asyncio.CancelledError  # cancelled from outside (not a task's stop)

    def _take_ready(self, task_id: str) -> Claimed | None:
        for entry in self._ready:
            if entry[0].id == task_id:
                self._ready.remove(entry)
                return entry[0]
        return None

    def _return_held_too_long(self) -> None:
        now = time.monotonic()
        if self._ready and now - self._ready[0][1] > PREFETCH_HOLD:
            # The slots are held by long handlers: no claiming ahead until one ends quickly
            # again, or the same tasks would go back and forth (a `released` attempt each).
            self._handler_seconds = None
            while self._ready:
                self._stop_task(self._ready[0][0].id, _RETURNED)

    async def _nothing_changed(self) -> bool:
        # While idle, a poll costs one cheap read of the store's change token instead of a
        # write transaction: no commit anywhere and no delayed task due means nothing to claim.
        if self._idle_until is None or self.clock.now() >= self._idle_until:
            return False
        return await self.queue.store.change_token() == self._seen_version

    async def _remember_idle(self, wakes: int) -> None:
        """After a claim that found nothing: what to compare later polls with, unless a
        wake-up came since the claim began (`wakes`, the count then). A submission wakes
        workers from its own transaction, before its COMMIT (SQLiteStore.insert_tasks), so
        these reads may not see its task yet; taken as "nothing changed", the worker would
        sleep until its poll with the task queued. Not recorded, the next claim looks again
        (and waits for that transaction's lock)."""
        version = await self.queue.store.change_token()
        due = await self.queue.next_run_at(self.settings.queues)
        if self._wakes != wakes:
            return
        self._seen_version = version
        self._idle_until = due if due is not None else float("inf")

    def _wait_timeout(self) -> float:
        timeout = self.settings.poll
        if self._idle_until is not None and len(self._in_handler) < self.slots:
            timeout = min(timeout, max(0.0, self._idle_until - self.clock.now()))
        return timeout

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._nudge.wait()
        self._nudge.clear()

    def _on_peer_wake(self) -> None:
        self._peer_woke = True
        self._wakes += 1
        self._idle_until = None
        self._nudge.set()

    async def _nudge_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._nudge.set()

    # -- one task ------------------------------------------------------------------------

    async def _execute(self, c: Claimed) -> None:
        started = self.clock.now()
        bound = _logger(c)
        self.on_event("started", c, 0.0)
        handed_off = False  # a success waits in _acks: written (and forgotten) there
        try:
            kind, value = await self._attempt(c)
            if kind in ("stopped", "unstarted"):
                await self._stopped_from_outside(c, ran=kind == "stopped")
            elif kind == "succeeded":
                # Written with this turn's other successes, without waiting here: the task
                # stays in `inflight` (heartbeated, waited for at shutdown) until it is.
                if not self._acks:
                    asyncio.get_running_loop().call_soon(self._write_acks)
                self._acks.append((c, value, started))
                handed_off = True
            else:
                error, result, outcome, retry = value
                status = await self._write_outcome(
                    c, bound, lambda: self.queue.fail(c, error, result, outcome, retry=retry)
                )
                if status is UNWRITTEN:
                    return
                if kind == "crashed":
                    bound.error("task handler crashed", error=error, now=status or "lease lost")
                elif status == "failed":  # no attempts left: someone should look
                    bound.warning("task failed", error=error, now=status)
                else:
                    bound.info("task attempt failed", error=error, now=status or "lease lost")
                if status is not None:  # written: the attempt ended as `outcome`
                    self.on_event(f"attempt:{outcome}", c, 0.0)
                if outcome == "timeout":  # counted apart, and also as retried or failed below
                    self.on_event("timeout", c, self._since(started))
                self.on_event(
                    "retried" if status == "queued" else "failed", c, self._since(started)
                )
        except Exception:
            # Never let an error escape this task unseen ("Task exception was never retrieved").
            bound.exception("writing the task's outcome failed")
        finally:
            if not handed_off:
                self._in_handler.discard(c.id)
                self._forget(c.id)

    def _write_acks(self) -> None:
        """The turn's successes: one write for all, in a task of its own."""
        acks, self._acks = self._acks, []
        if acks:
            self._acks_starting += 1
            task = asyncio.create_task(self._write_acks_now(acks))
            self._detached.add(task)
            task.add_done_callback(self._detached.discard)

    async def _write_acks_now(self, acks: list[tuple[Claimed, Any, float]]) -> None:
        self._acks_starting -= 1  # (the write is queued before this step's first wait)
        try:
            done = await self.queue.complete_many([(c, value) for c, value, _ in acks])
        except Exception:
            # Refused (a locked database, a full disk) or broken: each on its own, retried
            # until the database takes writes, as any outcome (_write_outcome).
            await asyncio.gather(*(self._ack_alone(*ack) for ack in acks))
            return
        for (c, _, started), ok in zip(acks, done, strict=True):
            self._acked(c, ok, started)

    async def _ack_alone(self, c: Claimed, value: Any, started: float) -> None:
        try:
            done = await self._write_outcome(
                c, _logger(c), lambda: self.queue.complete(c, value))
            if done is not UNWRITTEN:
                self._acked(c, bool(done), started)
                return
        except Exception:
            _logger(c).exception("writing the task's outcome failed")
        self._forget(c.id)

    def _acked(self, c: Claimed, ok: bool, started: float) -> None:
        if ok:
            self.on_event("succeeded", c, self._since(started))
            self.on_event("attempt:succeeded", c, 0.0)
        else:
            _logger(c).warning("task finished after its lease was lost; result not recorded")
        self._forget(c.id)

    async def _write_outcome(
        self, c: Claimed, bound: Any, write: Callable[[], Awaitable[T]]
    ) -> T | _Unwritten:
        """Write an outcome, retrying with backoff while the database refuses writes.

        The task stays in `inflight` meanwhile, so heartbeats keep its lease (they too are
        retried until the database takes writes), and this worker's rescuer waits for it: the
        command, which has finished, must not run again. Gives up only at shutdown, after the
        grace (then the lease expires and the task runs again: at-least-once).
        """
        began = time.monotonic()
        delay, logged_at = OUTCOME_RETRY_FIRST, float("-inf")
        try:
            while True:
                try:
                    return await write()
                except TRANSIENT as exc:
                    self.pending_outcomes.add(c.id)
                    waited = time.monotonic() - began
                    if self._abandon_outcomes.is_set():
                        bound.error(
                            "outcome not recorded: the database refused writes until shutdown; "
                            "the task runs again once its lease expires", error=str(exc),
                            waited=round(waited, 1),
                        )
                        self.pending_outcomes.discard(c.id)
                        return UNWRITTEN
                    if waited - logged_at >= OUTCOME_LOG_EVERY:
                        logged_at = waited
                        bound.warning("outcome not written yet; retrying until the database "
                                      "takes writes", error=str(exc), waited=round(waited, 1))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._abandon_outcomes.wait()
                delay = min(delay * 2, OUTCOME_RETRY_MAX)
        finally:
            if c.id in self.pending_outcomes:
                self.pending_outcomes.discard(c.id)
                bound.info("outcome written after the database refused writes",
                           waited=round(time.monotonic() - began, 1))

    async def _attempt(self, c: Claimed) -> tuple[str, Any]:
        """Run the handler; say how it ended. The slot is free as soon as it ends, before the
        outcome is written: the next claim then shares a commit with this acknowledgement."""
        began, runs = time.monotonic(), c.id not in self._stop_reason
        try:
            if not runs:  # stopped while it waited for a slot (claimed ahead): never runs
                return "unstarted", None
            return "succeeded", await self._run_handler(c)
        except asyncio.CancelledError:
            if self._stop_reason.get(c.id) != _TIMEOUT:
                return "stopped", None
            # Our backstop stopped it: a timed-out attempt, not a stop from outside.
            self._stop_reason.pop(c.id, None)
            return "failed", (f"timed out after {c.timeout:g}s", None, "timeout", True)
        except TaskFailed as exc:  # TaskTimedOut included: its outcome says `timeout`
            return "failed", (str(exc), exc.result, exc.outcome, not exc.permanent)
        except TimeoutError:
            return "failed", (f"timed out after {c.timeout:g}s", None, "timeout", True)
        except Exception as exc:
            log.exception("task handler crashed", task_id=c.id, task_type=c.type)
            return "crashed", (f"handler error: {exc!r}", None, "failed", True)
        finally:
            if runs:
                seconds, avg = time.monotonic() - began, self._handler_seconds
                self._handler_seconds = seconds if avg is None else avg + (seconds - avg) * 0.1
            self._in_handler.discard(c.id)
            if self._ready and len(self._in_handler) < self.slots:
                self._start(self._ready.popleft()[0])  # a task claimed ahead takes the slot
            self._nudge.set()

    async def _run_handler(self, c: Claimed) -> dict[str, Any]:
        handler = self.handlers.get(c.type)
        if handler is None:
            raise TaskFailed(
                f"this worker has no handler for task type {c.type!r}", permanent=True
            )
        try:
            payload = validate_payload(c.type, c.payload)
        except PayloadError as exc:
            raise TaskFailed(str(exc), permanent=True) from None
        ctx = HandlerContext(
            c.id, c.attempt, c.timeout, self.settings.output_limit, self.queue.policy,
            run_as=self.task_user, watch_output=self.live_output.watcher(c),
        )
        # Handlers enforce the timeout themselves (the shell handler kills its process
        # group); this is the backstop for one that does not.
        self._add_deadline(c, asyncio.get_running_loop().time() + c.timeout + BACKSTOP_GRACE)
        me = asyncio.current_task()
        assert me is not None
        cancels_before = me.cancelling()
        self._handling[c.id] = me  # what _stop_task cancels, only while the handler runs
        try:
            return await handler(payload, ctx)
        finally:
            self._handling.pop(c.id, None)
            if c.id in self._stop_reason:
                # Our stop of this task (even one its handler swallowed), not of the slot
                # running it: the slot goes on with its next task.
                while me.cancelling() > cancels_before:
                    me.uncancel()
            self.live_output.ended(c)

    def _add_deadline(self, c: Claimed, deadline: float) -> None:
        if len(self._deadlines) > 2 * len(self._in_handler) + 64:
            # Bounded memory: drop the entries of tasks that have finished.
            self._deadlines = [d for d in self._deadlines if d[1] in self._in_handler]
            heapq.heapify(self._deadlines)
        heapq.heappush(self._deadlines, (deadline, c.id, c.token))
        if deadline < self._deadline_armed:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_armed = deadline
        self._deadline_timer = asyncio.get_running_loop().call_at(deadline, self._deadlines_due)

    def _deadlines_due(self) -> None:
        self._deadline_timer, self._deadline_armed = None, float("inf")
        now = asyncio.get_running_loop().time()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, task_id, token = heapq.heappop(self._deadlines)
            entry = self.inflight.get(task_id)
            if entry is not None and entry.token == token:  # this attempt, still running
                self._stop_task(task_id, _TIMEOUT)
        if self._deadlines:
            self._arm(self._deadlines[0][0])

    async def _stopped_from_outside(self, c: Claimed, *, ran: bool = True) -> None:
        reason = self._stop_reason.get(c.id, _SHUTDOWN)
        bound = _logger(c)
        if reason == _CANCELLED:
            # Claimed ahead and never started: cancelled with no attempt row, as if it had
            # been cancelled while queued (an attempt row would say it ran).
            done = await self._write_outcome(c, bound, lambda: (
                self.queue.finish_cancelled(c) if ran else self.queue.cancel_unstarted(c)))
            if done is not UNWRITTEN:
                bound.info("task cancelled" if ran else "task cancelled before it started")
                self.on_event("cancelled", c, 0.0)
                if done and ran:
                    self.on_event("attempt:cancelled", c, 0.0)
        elif reason in (_SHUTDOWN, _RETURNED) and not ran:
            # Claimed ahead and never started: back as if never claimed, with no attempt row
            # (a `released` attempt would say it ran).
            done = await self._write_outcome(c, bound, lambda: self.queue.unclaim(c))
            if done is not UNWRITTEN:
                bound.info("task returned to the queue unstarted: " + (
                    "worker stopping" if reason == _SHUTDOWN else "it waited too long for a slot"
                ))
        elif reason in (_SHUTDOWN, _RETURNED):
            done = await self._write_outcome(c, bound, lambda: self.queue.release(c))
            if done is not UNWRITTEN:
                bound.info("task returned to the queue: " + (
                    "worker stopping" if reason == _SHUTDOWN else "it waited too long for a slot"
                ))
                if done:
                    self.on_event("attempt:released", c, 0.0)
        else:
            _logger(c).warning("task stopped: its lease was lost to another worker")

    def _stop_task(self, task_id: str, reason: str) -> None:
        # Only a handler is stopped: a task already writing its outcome is left to finish it.
        entry = self.inflight.get(task_id)
        if entry is None and reason != _TIMEOUT:
            waiting = self._take_ready(task_id)
            if waiting is not None:
                # Claimed ahead, never started: it starts now only to write the stop's outcome
                # (cancelled, released, or nothing for a lost lease) without running.
                self._stop_reason[task_id] = reason
                self._start_detached(waiting)
            return
        if entry is not None and task_id in self._in_handler and task_id not in self._stop_reason:
            runner = self._handling.get(task_id)
            if runner is None and reason == _TIMEOUT:
                return  # its handler has ended
            # Waiting for a slot coroutine: it will write the stop's outcome without running.
            self._stop_reason[task_id] = reason
            if runner is not None:
                runner.cancel()

    def _since(self, started: float) -> float:
        return max(0.0, self.clock.now() - started)

    # -- side loops ----------------------------------------------------------------------

    @property
    def heartbeat_interval(self) -> float:
        return max(0.05, min(self.settings.lease / 3, 10.0))

    @property
    def rescue_interval(self) -> float:
        return max(0.1, min(self.settings.lease / 2, 15.0))

    async def heartbeat_once(self) -> None:
        """Extend our leases; stop what a person cancelled and what we no longer hold."""
        held = list(self.inflight.values()) + [c for c, _ in self._ready]
        beat = await self.queue.heartbeat(held, self.settings.lease)
        for c in held:
            if c.id not in beat.held:  # (one that has finished meanwhile is left alone)
                self._stop_task(c.id, _LOST)
            elif c.id in beat.cancel:
                self._stop_task(c.id, _CANCELLED)
        await self.queue.worker_seen(self.id, socket.gethostname(), os.getpid(), self.slots)

    async def cancel_requested_once(self) -> None:
        if self.inflight or self._ready:
            for task_id in await self.queue.cancel_requests(self.id):
                self._stop_task(task_id, _CANCELLED)

    async def prune_once(self) -> None:
        await self.pruner.prune_once()

    async def live_output_once(self) -> None:
        await self.live_output.flush_once()

    async def rescue_once(self) -> None:
        if self.pending_outcomes:
            # Our own tasks' leases may have run out while the database refused writes; the
            # outcomes we hold go first, or the rescue would run finished commands again.
            return
        rescued = await self.queue.rescue_expired()
        if rescued:
            log.warning("rescued tasks whose lease expired", count=len(rescued), ids=rescued[:20])

    async def _every(self, interval: float, once: Callable[[], Awaitable[None]]) -> None:
        """Run `once` forever; an error is logged and retried, never fatal to the worker."""
        while True:
            await asyncio.sleep(interval)
            try:
                await once()
            except StorageError as exc:  # busy, full, unreachable: it passes; no traceback
                log.warning("background step failed; retrying", step=once.__name__,
                            error=str(exc))
            except Exception:
                log.exception("background step failed", step=once.__name__)

    async def _drain(self) -> None:
        while self._ready:  # claimed ahead, never started: back to the queue, attempt unspent
            self._stop_task(self._ready[0][0].id, _SHUTDOWN)
        try:
            if self.inflight:
                log.info("waiting for running tasks", count=len(self.inflight),
                         grace=self.settings.grace)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.grace):
                        await self._all_written.wait()
                # The grace is spent: outcomes still refused by the database get one more try
                # each; handlers still running are stopped and their tasks released.
                self._abandon_outcomes.set()
                for task_id in list(self.inflight):
                    self._stop_task(task_id, _SHUTDOWN)
                await self._all_written.wait()
        finally:
            for task in self._slot_tasks:
                task.cancel()
            await asyncio.gather(*self._slot_tasks, return_exceptions=True)
            self._slot_tasks = []
