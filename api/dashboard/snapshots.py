"""Short-lived copies of the two reads that cost the most at volume, shared by every open page.

Each open overview or task list polls every 2 seconds. Counting tasks by status walks the whole
status index (about 60-80 ms at a million tasks) and the throughput chart every task finished
in its window; neither needs to be fresher than the poll. So: counts are reused while the
database has not changed (PRAGMA data_version) and for at most a second while it has; the chart
is reused for a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from litestar import Request

from shared import dashboard_queries
from shared.queue import Queue

COUNTS_MAX_AGE = 1.0
# Counting costs what the table holds (tens of ms at a million tasks): never spend more than a
# tenth of the time on it, however many tabs poll.
COUNTS_COST_SHARE = 10.0
# Ready vs scheduled moves with the clock even when the database does not.
COUNTS_CLOCK_AGE = 5.0
COUNTS_KEPT = 64  # filters remembered
CHART_MAX_AGE = 5.0

CountsKey = tuple[str | None, str | None]  # (type, schedule id)


@dataclass
class Counted:
    value: dict[str, int]
    version: int
    at: float  # time.monotonic() when counted
    cost: float  # seconds the count took


@dataclass
class Snapshots:
    counted: dict[CountsKey, Counted] = field(default_factory=dict)
    refreshing: dict[CountsKey, asyncio.Task] = field(default_factory=dict)
    charts: dict[int, tuple[float, dashboard_queries.Throughput]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def counts(
        self, queue: Queue, type: str | None = None, schedule_id: str | None = None
    ) -> dict[str, int]:
        """Tasks per status (and per derived queued view) under these filters.

        Served from the last count: a poll never waits for a count except the very first for
        a filter. A stale count is redone in the background, one at a time per filter.
        """
        key = (type, schedule_id)
        hit = self.counted.get(key)
        if hit is None:
            async with self.lock:  # a burst of first polls counts once
                hit = self.counted.get(key) or await self._count(queue, key)
            return dict(hit.value)
        if key not in self.refreshing and await self._stale(queue, hit):
            self.refreshing[key] = asyncio.create_task(self._refresh(queue, key))
        return dict(hit.value)

    async def _stale(self, queue: Queue, hit: Counted) -> bool:
        age = time.monotonic() - hit.at
        if age < max(COUNTS_MAX_AGE, COUNTS_COST_SHARE * hit.cost):
            return False
        return age > COUNTS_CLOCK_AGE or await queue.db.data_version() != hit.version

    async def _count(self, queue: Queue, key: CountsKey) -> Counted:
        started = time.monotonic()
        version = await queue.db.data_version()
        value = await dashboard_queries.status_counts(
            queue.db, queue.clock.now(), type=key[0], schedule_id=key[1]
        )
        counted = Counted(value, version, time.monotonic(), time.monotonic() - started)
        self.counted.pop(key, None)
        self.counted[key] = counted
        while len(self.counted) > COUNTS_KEPT:
            self.counted.pop(next(iter(self.counted)))  # the filter counted longest ago
        return counted

    async def _refresh(self, queue: Queue, key: CountsKey) -> None:
        try:
            with contextlib.suppress(Exception):  # the last count stands; the next poll retries
                await self._count(queue, key)
        finally:
            self.refreshing.pop(key, None)

    async def throughput(self, queue: Queue, hours: int) -> dashboard_queries.Throughput:
        hit = self.charts.get(hours)
        if hit and time.monotonic() - hit[0] < CHART_MAX_AGE:
            return hit[1]
        data = await dashboard_queries.throughput(queue.db, queue.clock.now(), hours=hours)
        self.charts[hours] = (time.monotonic(), data)
        return data


def snapshots(request: Request) -> Snapshots:
    """The app's one Snapshots (made on first use)."""
    state = request.app.state
    if "dashboard_snapshots" not in state:
        state["dashboard_snapshots"] = Snapshots()
    return state["dashboard_snapshots"]
