"""A real scheduler process for tests: `python -m tests.schedule_proc DB EPOCH T0 RATE`.

It runs the production Scheduler (worker/scheduler.py) on a real database file, exactly as
`localflow worker` does, except for its clock: wall time since T0, times RATE, added to EPOCH.
Every process started with the same EPOCH, T0 and RATE reads the same time, so three of them
race for the same fires, and a test sees an hour of once-a-minute cron fires in a minute
instead of waiting for real minutes to pass.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from shared import logs
from shared.queue import Queue
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore
from worker.scheduler import Scheduler


class ScaledClock:
    """Wall time, `rate` times faster, anchored so that real time t0 reads as `epoch`."""

    def __init__(self, epoch: float, t0: float, rate: float) -> None:
        self.epoch, self.t0, self.rate = epoch, t0, rate

    def now(self) -> float:
        return self.epoch + (time.time() - self.t0) * self.rate


async def main(db_path: str, epoch: float, t0: float, rate: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settings = Settings(db=db_path, schedule_interval=1.0)
    clock = ScaledClock(epoch, t0, rate)
    db = await SQLiteStore.open(db_path)
    try:
        queue = Queue(db, clock, settings)
        await Scheduler(Schedules(queue), settings, clock).run(stop)
    finally:
        await db.close()


if __name__ == "__main__":
    logs.configure("json")
    path, epoch_s, t0_s, rate_s = sys.argv[1:5]
    asyncio.run(main(path, float(epoch_s), float(t0_s), float(rate_s)))
