"""The worker: claims tasks into free slots and runs each in its own asyncio task.

Loop: wait for (wake-up | slot freed | poll interval | stop) -> claim up to the free slots ->
start each. Side loops (heartbeat, rescuer) are small `*_once` methods that tests call directly.
On stop: claim nothing more, give running tasks `grace` seconds, then stop them and return them
to the queue without spending their attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import structlog

from shared.clock import Clock, SystemClock
from shared.queue import Claimed, Queue
from shared.retention import Pruner
from shared.schemas import PayloadError, validate_payload
from shared.settings import Settings
from worker.handlers import HANDLERS, Handler, HandlerContext, TaskFailed
from worker.task_identity import task_user_from

log = structlog.get_logger("localflow.worker")

# Why an in-flight task was stopped from outside, which decides what is written back.
_CANCELLED, _SHUTDOWN, _LOST = "cancelled", "shutdown", "lost"


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
        self.inflight: dict[str, tuple[Claimed, asyncio.Task[None]]] = {}
        self._in_handler: set[str] = set()  # tasks whose handler runs: the slots in use
        self._stop_reason: dict[str, str] = {}
        self._nudge = asyncio.Event()
        self._peer_woke = False
        self._idle_until: float | None = None  # skip claims until then if nothing changed
        self._seen_version: Hashable = None
        # Hooks for metrics (issue: metrics); each gets the Claimed and a label.
        self.on_event: Callable[[str, Claimed, float], None] = lambda *_: None
        # Called after each claim with (tasks claimed, seconds the claim took).
        self.on_claim: Callable[[int, float], None] = lambda *_: None
        self.pruner = Pruner(queue.store, settings, self.id, self.clock)
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
                except Exception:
                    # A database locked for longer than the busy limit, say: the worker must
                    # outlive it, so wait a poll interval and try again.
                    log.exception("claim failed; retrying after the poll interval")
                    started = 0
                    await self._wait(self.settings.poll)
                    continue
                if started and len(self._in_handler) < self.slots:
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
            await self.queue.worker_stopped(self.id)
            log.info("worker stopped", worker_id=self.id)

    async def claim_once(self) -> int:
        """Claim into free slots and start the tasks; returns how many started."""
        free = self.slots - len(self._in_handler)
        if free <= 0 or await self._nothing_changed():
            return 0
        began = time.perf_counter()
        claimed = await self.queue.claim(self.id, free, self.settings.lease, self.settings.queues)
        self.on_claim(len(claimed), time.perf_counter() - began)
        for c in claimed:
            self._in_handler.add(c.id)
            self.inflight[c.id] = (c, asyncio.create_task(self._execute(c), name=f"task-{c.id}"))
        if not claimed:
            await self._remember_idle()
        return len(claimed)

    async def _nothing_changed(self) -> bool:
        # While idle, a poll costs one cheap read of the store's change token instead of a
        # write transaction: no commit anywhere and no delayed task due means nothing to claim.
        if self._idle_until is None or self.clock.now() >= self._idle_until:
            return False
        return await self.queue.store.change_token() == self._seen_version

    async def _remember_idle(self) -> None:
        self._seen_version = await self.queue.store.change_token()
        due = await self.queue.next_run_at(self.settings.queues)
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
        self._idle_until = None
        self._nudge.set()

    async def _nudge_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._nudge.set()

    # -- one task ------------------------------------------------------------------------

    async def _execute(self, c: Claimed) -> None:
        bound = log.bind(task_id=c.id, task_type=c.type, attempt=c.attempt)
        started = self.clock.now()
        self.on_event("started", c, 0.0)
        try:
            kind, value = await self._attempt(c)
            if kind == "stopped":
                await self._stopped_from_outside(c, bound)
            elif kind == "succeeded":
                if await self.queue.complete(c, value):
                    self.on_event("succeeded", c, self._since(started))
                else:
                    bound.warning("task finished after its lease was lost; result not recorded")
            else:
                error, result, outcome, retry = value
                status = await self.queue.fail(c, error, result, outcome, retry=retry)
                if kind == "crashed":
                    bound.error("task handler crashed", error=error, now=status or "lease lost")
                else:
                    bound.info("task attempt failed", error=error, now=status or "lease lost")
                if outcome == "timeout":  # counted apart, and also as retried or failed below
                    self.on_event("timeout", c, self._since(started))
                self.on_event(
                    "retried" if status == "queued" else "failed", c, self._since(started)
                )
        finally:
            self.inflight.pop(c.id, None)
            self._in_handler.discard(c.id)
            self._stop_reason.pop(c.id, None)

    async def _attempt(self, c: Claimed) -> tuple[str, Any]:
        """Run the handler; say how it ended. The slot is free as soon as it ends, before the
        outcome is written: the next claim then shares a commit with this acknowledgement."""
        try:
            return "succeeded", await self._run_handler(c)
        except asyncio.CancelledError:
            return "stopped", None
        except TaskFailed as exc:  # TaskTimedOut included: its outcome says `timeout`
            return "failed", (str(exc), exc.result, exc.outcome, not exc.permanent)
        except TimeoutError:
            return "failed", (f"timed out after {c.timeout:g}s", None, "timeout", True)
        except Exception as exc:
            log.exception("task handler crashed", task_id=c.id, task_type=c.type)
            return "crashed", (f"handler error: {exc!r}", None, "failed", True)
        finally:
            self._in_handler.discard(c.id)
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
            run_as=self.task_user,
        )
        # Handlers enforce the timeout themselves (the shell handler kills its process
        # group); this is the backstop for one that does not.
        async with asyncio.timeout(c.timeout + 1.0):
            return await handler(payload, ctx)

    async def _stopped_from_outside(self, c: Claimed, bound: Any) -> None:
        reason = self._stop_reason.get(c.id, _SHUTDOWN)
        if reason == _CANCELLED:
            await self.queue.finish_cancelled(c)
            bound.info("task cancelled")
            self.on_event("cancelled", c, 0.0)
        elif reason == _SHUTDOWN:
            await self.queue.release(c)
            bound.info("task returned to the queue: worker stopping")
        else:
            bound.warning("task stopped: its lease was lost to another worker")

    def _stop_task(self, task_id: str, reason: str) -> None:
        # Only a handler is stopped: a task already writing its outcome is left to finish it.
        entry = self.inflight.get(task_id)
        if entry is not None and task_id in self._in_handler and task_id not in self._stop_reason:
            self._stop_reason[task_id] = reason
            entry[1].cancel()

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
        held = [c for c, _ in self.inflight.values()]
        beat = await self.queue.heartbeat(held, self.settings.lease)
        for c in held:
            if c.id not in beat.held and c.id in self.inflight:
                self._stop_task(c.id, _LOST)
            elif c.id in beat.cancel:
                self._stop_task(c.id, _CANCELLED)
        await self.queue.worker_seen(self.id, socket.gethostname(), os.getpid(), self.slots)

    async def cancel_requested_once(self) -> None:
        if self.inflight:
            for task_id in await self.queue.cancel_requests(self.id):
                self._stop_task(task_id, _CANCELLED)

    async def prune_once(self) -> None:
        await self.pruner.prune_once()

    async def rescue_once(self) -> None:
        rescued = await self.queue.rescue_expired()
        if rescued:
            log.warning("rescued tasks whose lease expired", count=len(rescued), ids=rescued[:20])

    async def _every(self, interval: float, once: Callable[[], Awaitable[None]]) -> None:
        """Run `once` forever; an error is logged and retried, never fatal to the worker."""
        while True:
            await asyncio.sleep(interval)
            try:
                await once()
            except Exception:
                log.exception("background step failed", step=once.__name__)

    async def _drain(self) -> None:
        if not self.inflight:
            return
        tasks = [t for _, t in self.inflight.values()]
        log.info("waiting for running tasks", count=len(tasks), grace=self.settings.grace)
        _, pending = await asyncio.wait(tasks, timeout=self.settings.grace)
        for task_id in list(self.inflight):
            self._stop_task(task_id, _SHUTDOWN)
        if pending:
            await asyncio.wait(pending)
        # A task cancelled before its first step never ran its own clean-up: release it here.
        for c, _ in list(self.inflight.values()):
            await self.queue.release(c)
            self.inflight.pop(c.id, None)
