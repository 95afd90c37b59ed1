"""Copies of the counts and the chart, shared by every open page.

Each open overview or task list polls every 2 seconds. The counts cost a few short reads at any
size (the database keeps them per queue, type and status, migration 009, and per schedule,
migration 010: shared/store/counting.py; a filter sums fewer of them); the throughput chart
reads every task finished in its window. A poll never waits for either: it gets the last copy,
and a stale copy is redone in the background by the store (SQLite on a read connection of its
own, so no page or API request waits behind it), one at a time, no more often than every
second (counts; 5 s for the chart) nor than ten times what it took last (so at most a tenth of
the time goes on it, however many tabs are open). Counts are stale once the database changed
(the store's change token) or after 5 s (ready turns from scheduled with the clock). Only the
first request for a filter waits for its count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request

from shared.queue import Queue
from shared.queue_schemas import QueueInfo
from shared.queues import Queues
from shared.schemas import QUEUED_VIEWS, STATUSES
from shared.store.base import Throughput
from shared.store.counting import TaskCounts

COUNTS_MAX_AGE = 1.0
# Counting costs what the table holds (tens of ms at a million tasks): never spend more than a
# tenth of the time on it, however many tabs poll.
COUNTS_COST_SHARE = 10.0
# Ready vs scheduled moves with the clock even when the database does not.
COUNTS_CLOCK_AGE = 5.0
COUNTS_KEPT = 64  # filters remembered
CHART_MAX_AGE = 5.0
KEPT_MAX_AGE = 5.0
FIRST_COUNT_WAIT = 0.015  # seconds a page waits for a filter's first count
COUNTED = (*STATUSES, *QUEUED_VIEWS)

CountsKey = tuple[str | None, str | None, str | None]  # (type, schedule id, queue)


def _copy(counts: TaskCounts) -> TaskCounts:
    """A page's own copy (it adds "all"), still saying which counts are lower bounds."""
    return TaskCounts(counts, counts.at_least)


@dataclass
class Counted:
    value: Any  # TaskCounts, or the list of queues
    version: Hashable
    at: float  # time.monotonic() when counted
    cost: float  # seconds the count took
    checked: float = 0.0  # time.monotonic() when last found still right (at, if never)

    def __post_init__(self) -> None:
        self.checked = self.checked or self.at


@dataclass
class Snapshots:
    counted: dict[CountsKey, Counted] = field(default_factory=dict)
    refreshing: dict[CountsKey, asyncio.Task] = field(default_factory=dict)
    # hours -> (when drawn, seconds the query took, data)
    charts: dict[int, tuple[float, float, Throughput]] = field(default_factory=dict)
    charting: dict[int, asyncio.Task] = field(default_factory=dict)
    # The queues page's list (GET /api/queues' answer). Its counts are the kept ones now (a
    # few rows), but every task list and schedule form asks for it (the queue filter's
    # choices): one copy, redone in the background like the counts, serves them all.
    queue_list: Counted | None = None
    listing: asyncio.Task | None = None
    # Other slow-moving reads a page shows (the system page's database size: a stat of every
    # file of the database on PostgreSQL), by name: (when read, seconds it took, value).
    kept: dict[str, tuple[float, float, Any]] = field(default_factory=dict)
    keeping: dict[str, asyncio.Task] = field(default_factory=dict)

    async def value(self, name: str, read: Callable[[], Awaitable[Any]],
                    max_age: float = KEPT_MAX_AGE) -> Any:
        """read()'s answer, from a copy at most max_age seconds old (or ten times what reading
        took) that is redone in the background; only the first ask waits for it."""
        hit = self.kept.get(name)
        if hit is None:
            if name not in self.keeping:
                self.keeping[name] = asyncio.create_task(self._keep(name, read))
            await asyncio.wait({self.keeping[name]})
            hit = self.kept.get(name)
            if hit is None:  # the read failed: try it here, so the page says why
                return await read()
            return hit[2]
        at, cost, data = hit
        stale = time.monotonic() - at >= max(max_age, COUNTS_COST_SHARE * cost)
        if stale and name not in self.keeping:
            self.keeping[name] = asyncio.create_task(self._keep(name, read))
        return data

    async def _keep(self, name: str, read: Callable[[], Awaitable[Any]]) -> None:
        try:
            with contextlib.suppress(Exception):  # the last copy stands; the next ask retries
                started = time.monotonic()
                data = await read()
                self.kept[name] = (time.monotonic(), time.monotonic() - started, data)
        finally:
            self.keeping.pop(name, None)

    async def counts(
        self, queue: Queue, type: str | None = None, schedule_id: str | None = None,
        queue_name: str | None = None,
    ) -> TaskCounts:
        """Tasks per status (and per derived queued view) under these filters; None for each
        while a filter's first count is still running.

        Served from the last count: a poll never waits for a count except, briefly, the very
        first for a filter. A stale count is redone in the background, one at a time.
        """
        key = (type, schedule_id, queue_name)
        hit = self.counted.get(key)
        if hit is None:
            # The first ask for a filter waits a little for its count, not for as long as
            # counting takes: past that, the page says "…" and the next poll has the numbers.
            if key not in self.refreshing:
                self.refreshing[key] = asyncio.create_task(self._refresh(queue, key))
            await asyncio.wait({self.refreshing[key]}, timeout=FIRST_COUNT_WAIT)
            hit = self.counted.get(key)
            return _copy(hit.value) if hit else TaskCounts(dict.fromkeys(COUNTED))  # type: ignore[arg-type]
        if key not in self.refreshing and _due(hit):
            self.refreshing[key] = asyncio.create_task(self._refresh(queue, key))
        return _copy(hit.value)

    async def _count(self, queue: Queue, key: CountsKey) -> Counted:
        started = time.monotonic()
        version = await queue.store.change_token()
        value = await queue.store.count_tasks(
            queue.clock.now(), type=key[0], schedule_id=key[1], queue=key[2]
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
                hit = self.counted.get(key)
                if hit is None or not await _unchanged(queue.store, hit):
                    await self._count(queue, key)
        finally:
            self.refreshing.pop(key, None)

    async def throughput(
        self, queue: Queue, hours: int
    ) -> Throughput | None:
        """The chart's counts, served like counts(): redrawn in the background when stale;
        None while a window's first drawing is still running."""
        hit = self.charts.get(hours)
        if hit is None:
            if hours not in self.charting:
                self.charting[hours] = asyncio.create_task(self._refresh_chart(queue, hours))
            await asyncio.wait({self.charting[hours]}, timeout=FIRST_COUNT_WAIT)
            hit = self.charts.get(hours)
            return hit[2] if hit else None
        at, cost, data = hit
        stale = time.monotonic() - at >= max(CHART_MAX_AGE, COUNTS_COST_SHARE * cost)
        if stale and hours not in self.charting:
            self.charting[hours] = asyncio.create_task(self._refresh_chart(queue, hours))
        return data

    async def _chart(self, queue: Queue, hours: int) -> Throughput:
        started = time.monotonic()
        data = await queue.store.throughput(queue.clock.now(), hours, 60)
        self.charts[hours] = (time.monotonic(), time.monotonic() - started, data)
        return data

    async def _refresh_chart(self, queue: Queue, hours: int) -> None:
        try:
            with contextlib.suppress(Exception):  # the last chart stands; the next poll retries
                await self._chart(queue, hours)
        finally:
            self.charting.pop(hours, None)


    async def queues(self, queues: Queues, *, wait: bool = False) -> list[QueueInfo] | None:
        """Every queue with its counts, from the last copy (redone in the background when
        stale, as counts() are). wait: the first time, wait for it (the page itself); else
        None until it is there (a filter's choices can do without)."""
        hit = self.queue_list
        if hit is None:
            if self.listing is None:
                self.listing = asyncio.create_task(self._refresh_queues(queues))
            await asyncio.wait({self.listing}, timeout=None if wait else FIRST_COUNT_WAIT)
            if wait and self.queue_list is None:  # the background read failed: say why
                return await self._list_queues(queues)
            return list(self.queue_list.value) if self.queue_list else None
        if self.listing is None and _due(hit):
            self.listing = asyncio.create_task(self._refresh_queues(queues))
        return list(hit.value)

    def changed(self, info: QueueInfo) -> None:
        """A queue just changed here: the copy shows it at once, without a recount."""
        if self.queue_list is None:
            return
        rest = [q for q in self.queue_list.value if q.name != info.name]
        self.queue_list.value = sorted([*rest, info], key=lambda q: q.name)

    async def _list_queues(self, queues: Queues) -> list[QueueInfo]:
        started = time.monotonic()
        version = await queues.store.change_token()
        listed = await queues.list()
        self.queue_list = Counted(listed, version, time.monotonic(),
                                  time.monotonic() - started)
        return list(listed)

    async def _refresh_queues(self, queues: Queues) -> None:
        try:
            with contextlib.suppress(Exception):  # the last list stands; the next poll retries
                hit = self.queue_list
                if hit is None or not await _unchanged(queues.store, hit):
                    await self._list_queues(queues)
        finally:
            self.listing = None


def _due(hit: Counted) -> bool:
    """Time to see whether a copy is still right (in the background: a poll never waits for
    that either, which on PostgreSQL is a round trip to the server)."""
    since = time.monotonic() - hit.checked
    return since >= max(COUNTS_MAX_AGE, COUNTS_COST_SHARE * hit.cost)


async def _unchanged(store: Any, hit: Counted) -> bool:
    """Whether a copy is still right: the database has not changed since it was made (the
    store's change token) and the clock has not moved ready into scheduled's place for long.
    If so, it is marked checked, and kept."""
    if time.monotonic() - hit.at > COUNTS_CLOCK_AGE:
        return False
    if await store.change_token() != hit.version:
        return False
    hit.checked = time.monotonic()
    return True


def snapshots(request: Request) -> Snapshots:
    """The app's one Snapshots (made on first use)."""
    state = request.app.state
    if "dashboard_snapshots" not in state:
        state["dashboard_snapshots"] = Snapshots()
    return state["dashboard_snapshots"]


async def queue_names(request: Request, queue: Queue) -> list[str]:
    """Every queue with tasks or settings, for a filter's choices or a form's suggestions:
    from the queues page's copy, none while it is first being counted."""
    listed = await snapshots(request).queues(Queues(queue))
    return [q.name for q in listed or ()]
