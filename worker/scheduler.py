"""The cron scheduler: a loop that sleeps until the next fire, then fires what is due.

Any number of schedulers may run on one database (one per worker process); they need not know
of each other. Each pass asks the database what is due and fires it in one write transaction
fenced by a compare-and-set and a unique index (shared/schedules.py), so a fire that another
scheduler committed first is simply not due any more.

Sleep: until the earliest next fire, but never longer than `schedule_interval`, so schedules
created or edited by another process are seen even if its wake-up is lost; the store's
wake-ups (the process's one listener, shared with the worker) usually make that immediate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from shared.clock import Clock
from shared.schedules import Fire, Schedules, missed_grace
from shared.settings import Settings

log = structlog.get_logger("localflow.scheduler")

# The clock may be behind another process's by a hair; only a real step back is a jump.
_CLOCK_BACK_TOLERANCE = 1.0
_MIN_SLEEP = 0.001


class Scheduler:
    def __init__(self, schedules: Schedules, settings: Settings,
                 clock: Clock | None = None) -> None:
        self.schedules = schedules
        self.settings = settings
        self.clock = clock or schedules.clock
        self.grace = missed_grace(settings)
        self._last_now: float | None = None
        self._due: float | None = None  # the earliest next fire, as of the last pass
        self._nudge = asyncio.Event()
        # Hook for metrics: called with every fire and its lateness in seconds.
        self.on_fire: Callable[[Fire], None] = lambda _fire: None

    async def run_once(self, now: float | None = None) -> list[Fire]:
        """One pass: resync after a clock step back (or at start), then fire what is due."""
        now = self.clock.now() if now is None else now
        if self._last_now is None or now < self._last_now - _CLOCK_BACK_TOLERANCE:
            # At start we cannot know whether the clock went back while we were down.
            await self.schedules.resync(now)
        self._last_now = now
        self._due = await self.schedules.next_due()
        if self._due is None or self._due > now:
            return []  # one read: an idle pass (most wake-ups) takes no write lock
        fires = await self.schedules.fire_due(now, self.grace)
        self._due = await self.schedules.next_due()
        for fire in fires:
            self._report(fire)
        return fires

    def sleep_for(self) -> float:
        """Seconds until the next fire the last pass saw, bounded by schedule_interval."""
        interval = self.settings.schedule_interval
        if self._due is None:
            return interval
        # A clock in a test may run faster than real time; sleep in real seconds.
        rate = getattr(self.clock, "rate", 1.0)
        return min(interval, max(_MIN_SLEEP, (self._due - self.clock.now()) / rate))

    async def run(self, stop: asyncio.Event) -> None:
        unsubscribe = self.schedules.store.listener().subscribe(self._nudge.set)
        stop_watch = asyncio.create_task(self._nudge_on(stop))
        log.info("scheduler started", interval=self.settings.schedule_interval,
                 missed_grace=self.grace)
        try:
            while not stop.is_set():
                self._nudge.clear()
                try:
                    await self.run_once()
                    timeout = self.sleep_for()
                except Exception:
                    # A locked or broken database must not end the scheduler; try again.
                    log.exception("scheduler pass failed")
                    timeout = self.settings.schedule_interval
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._nudge.wait()
        finally:
            unsubscribe()
            stop_watch.cancel()
            log.info("scheduler stopped")

    async def _nudge_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._nudge.set()

    def _report(self, fire: Fire) -> None:
        # late_ms: fire time to committed task; woke_ms: fire time to the start of the pass.
        rate = getattr(self.clock, "rate", 1.0)
        late_ms = round((self.clock.now() - fire.fire_time) * 1000 / rate, 3)
        if fire.outcome == "fired":
            log.info("schedule fired", schedule_id=fire.schedule_id, task_id=fire.task_id,
                     fire_time=fire.fire_time, late_ms=late_ms,
                     woke_ms=round(fire.late * 1000 / rate, 3))
        else:
            log.warning("schedule fire skipped", schedule_id=fire.schedule_id,
                        fire_time=fire.fire_time, reason=fire.outcome, late_ms=late_ms)
        try:
            self.on_fire(fire)
        except Exception:
            log.exception("on_fire hook failed")
