"""Short-lived copies of the two reads that cost the most at volume, shared by every open page.

Each open overview or task list polls every 2 seconds. Counting tasks by status walks the whole
status index (about 60-80 ms at a million tasks) and the throughput chart every task finished
in its window; neither needs to be fresher than the poll. So: counts are reused while the
database has not changed (the store's change token) and for at most a second while it has; the chart
is reused for a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

from litestar import Request

from shared.queue import Queue
from shared.store.base import Throughput

COUNTS_MAX_AGE = 1.0
CHART_MAX_AGE = 5.0


@dataclass
class Snapshots:
    counts_value: dict[str, int] | None = None
    counts_version: Hashable = None
    counts_at: float = 0.0
    charts: dict[int, tuple[float, Throughput]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def counts(self, queue: Queue) -> dict[str, int]:
        async with self.lock:  # a burst of polls runs the query once
            version = await queue.store.change_token()
            fresh = time.monotonic() - self.counts_at < COUNTS_MAX_AGE
            if self.counts_value is None or (version != self.counts_version and not fresh):
                self.counts_value = await queue.counts()
                self.counts_version, self.counts_at = version, time.monotonic()
            return dict(self.counts_value)

    async def throughput(self, queue: Queue, hours: int) -> Throughput:
        hit = self.charts.get(hours)
        if hit and time.monotonic() - hit[0] < CHART_MAX_AGE:
            return hit[1]
        data = await queue.store.throughput(queue.clock.now(), hours, 60)
        self.charts[hours] = (time.monotonic(), data)
        return data


def snapshots(request: Request) -> Snapshots:
    """The app's one Snapshots (made on first use)."""
    state = request.app.state
    if "dashboard_snapshots" not in state:
        state["dashboard_snapshots"] = Snapshots()
    return state["dashboard_snapshots"]
