"""A real scheduler process for tests: `python -m tests.schedule_proc DB CLOCK_FILE RATE`.

It runs the production Scheduler (worker/scheduler.py) on a real database file, exactly as
`localflow worker` does, except for its clock: a SteeredClock read from CLOCK_FILE. Every
process given the same file reads the same time, so three of them race for the same fires,
and a test sees an hour of once-a-minute cron fires in a minute instead of waiting for real
minutes to pass.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from shared import logs
from shared.queue import Queue
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore
from worker.scheduler import Scheduler


class SteeredClock:
    """Wall time `rate` times faster, which never runs past a limit the test sets.

    The file holds three numbers: a real time, the simulated time it reads as, and the limit.
    A test moves the limit on only after the fires before it are committed, so a process the
    machine starves finds its fire late by at most (limit - fire time), never by the grace
    after which `missed: skip` drops a fire: starvation slows the test down instead of
    changing what it sees. On an idle machine the limit is always ahead and the clock simply
    runs fast, so the scheduler's own sleep-until-the-next-fire is what the test exercises.
    """

    def __init__(self, path: Path, rate: float) -> None:
        self.path, self.rate = Path(path), rate

    def _read(self) -> tuple[float, float, float]:
        real, sim, limit = (float(x) for x in self.path.read_text().split())
        return real, sim, limit

    def now(self) -> float:
        real, sim, limit = self._read()
        return min(sim + (time.time() - real) * self.rate, limit)

    def hold(self, limit: float, start: float | None = None) -> None:
        """Let the clock run up to `limit` (from `start`, if given). Never moves it back:
        it carries on from what it reads now, so every process sees a monotonic clock."""
        current = self.now() if start is None else start
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{time.time()!r} {current!r} {max(limit, current)!r}")
        os.replace(tmp, self.path)  # readers see the old numbers or the new, never half


async def main(db_path: str, clock_path: str, rate: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settings = Settings(db=db_path, schedule_interval=1.0)
    clock = SteeredClock(Path(clock_path), rate)
    db = await SQLiteStore.open(db_path)
    try:
        queue = Queue(db, clock, settings)
        await Scheduler(Schedules(queue), settings, clock).run(stop)
    finally:
        await db.close()


if __name__ == "__main__":
    logs.configure("json")
    path, clock_file, rate_s = sys.argv[1:4]
    asyncio.run(main(path, clock_file, float(rate_s)))
