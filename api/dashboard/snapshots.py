"""Copies of the counts, the chart, the queue list and other slow reads, shared by every open
page (one mechanism, `Copies`).

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
from typing import Any, Generic, TypeVar

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
K = TypeVar("K", bound=Hashable)


def _copy(counts: TaskCounts) -> TaskCounts:
    """A page's own copy (it adds "all"), still saying which counts are lower bounds."""
    return TaskCounts(counts, counts.at_least)


@dataclass
class Copy:
    """One read's answer, and when it was made."""
    value: Any
    version: Hashable  # the store's change token just before the read (None: not checked)
    at: float  # time.monotonic() when made
    cost: float  # seconds the read took
    checked: float = 0.0  # time.monotonic() when last found still right (at, if never)

    def __post_init__(self) -> None:
        self.checked = self.checked or self.at


class Copies(Generic[K]):
    """The last copy of one kind of read, by key (a filter, a chart's window, a name), shared
    by every open page: a poll gets the copy and never waits for a read, except the first for
    a key (up to `first_wait`). A copy is due for a look once it is `min_age` seconds old, or
    ten times what its read took (COUNTS_COST_SHARE); the look runs in the background, one
    at a time per key. A `versioned` copy is kept when the database has not changed since
    (the store's change token) and it is at most COUNTS_CLOCK_AGE old; any other due copy is
    read again. At most `limit` keys are kept, the one made longest ago going first."""

    def __init__(self, *, min_age: float, versioned: bool, limit: int | None = None) -> None:
        self.min_age, self.versioned, self.limit = min_age, versioned, limit
        self.made: dict[K, Copy] = {}
        self.making: dict[K, asyncio.Task[None]] = {}

    async def get(
        self, key: K, read: Callable[[], Awaitable[Any]],
        token: Callable[[], Awaitable[Hashable]], *, first_wait: float | None,
    ) -> Copy | None:
        """The copy for key; None if its first read is still running after first_wait
        seconds (None: waits until it ends) or failed."""
        hit = self.made.get(key)
        if hit is None:
            await asyncio.wait({self._start(key, read, token)}, timeout=first_wait)
            return self.made.get(key)
        if key not in self.making and self._due(hit):
            self._start(key, read, token)
        return hit

    def _due(self, hit: Copy) -> bool:
        since = time.monotonic() - hit.checked
        return since >= max(self.min_age, COUNTS_COST_SHARE * hit.cost)

    def _start(self, key: K, read: Callable[[], Awaitable[Any]],
               token: Callable[[], Awaitable[Hashable]]) -> asyncio.Task[None]:
        if key not in self.making:
            self.making[key] = asyncio.create_task(self._redo(key, read, token))
        return self.making[key]

    async def _redo(self, key: K, read: Callable[[], Awaitable[Any]],
                    token: Callable[[], Awaitable[Hashable]]) -> None:
        try:
            with contextlib.suppress(Exception):  # the last copy stands; the next poll retries
                hit = self.made.get(key)
                if hit is None or not self.versioned or not await _unchanged(token, hit):
                    await self._make(key, read, token)
        finally:
            self.making.pop(key, None)

    async def _make(self, key: K, read: Callable[[], Awaitable[Any]],
                    token: Callable[[], Awaitable[Hashable]]) -> None:
        started = time.monotonic()
        # The token first: a change committed during the read makes the copy look older
        # than it is (read again), never newer.
        version = await token() if self.versioned else None
        value = await read()
        self.made.pop(key, None)
        self.made[key] = Copy(value, version, time.monotonic(), time.monotonic() - started)
        while self.limit is not None and len(self.made) > self.limit:
            self.made.pop(next(iter(self.made)))


async def _unchanged(token: Callable[[], Awaitable[Hashable]], hit: Copy) -> bool:
    """Whether a copy is still right: the database has not changed since it was made (the
    store's change token) and the clock has not moved ready into scheduled's place for long.
    If so, it is marked checked, and kept."""
    if time.monotonic() - hit.at > COUNTS_CLOCK_AGE:
        return False
    if await token() != hit.version:
        return False
    hit.checked = time.monotonic()
    return True


@dataclass
class Snapshots:
    counts_by_filter: Copies[CountsKey] = field(default_factory=lambda: Copies(
        min_age=COUNTS_MAX_AGE, versioned=True, limit=COUNTS_KEPT))
    charts: Copies[int] = field(default_factory=lambda: Copies(
        min_age=CHART_MAX_AGE, versioned=False))
    # The queues page's list (GET /api/queues' answer). Its counts are the kept ones now (a
    # few rows), but every task list and schedule form asks for it (the queue filter's
    # choices): one copy, redone in the background like the counts, serves them all.
    queue_list: Copies[None] = field(default_factory=lambda: Copies(
        min_age=COUNTS_MAX_AGE, versioned=True))
    # Other slow-moving reads a page shows (the system page's database size: a stat of every
    # file of the database on PostgreSQL), by name.
    kept: Copies[str] = field(default_factory=lambda: Copies(
        min_age=KEPT_MAX_AGE, versioned=False))

    async def value(self, name: str, read: Callable[[], Awaitable[Any]]) -> Any:
        """read()'s answer, from a copy at most KEPT_MAX_AGE seconds old (or ten times what
        reading took) that is redone in the background; only the first ask waits for it."""
        hit = await self.kept.get(name, read, _unversioned, first_wait=None)
        return hit.value if hit else await read()  # the read failed: here, the page says why

    async def counts(
        self, queue: Queue, type: str | None = None, schedule_id: str | None = None,
        queue_name: str | None = None,
    ) -> TaskCounts:
        """Tasks per status (and per derived queued view) under these filters; None for each
        while a filter's first count is still running (past FIRST_COUNT_WAIT the page says
        "…" and the next poll has the numbers)."""
        hit = await self.counts_by_filter.get(
            (type, schedule_id, queue_name),
            lambda: queue.store.count_tasks(queue.clock.now(), type=type,
                                            schedule_id=schedule_id, queue=queue_name),
            queue.store.change_token, first_wait=FIRST_COUNT_WAIT)
        return _copy(hit.value) if hit else TaskCounts(dict.fromkeys(COUNTED))  # type: ignore[arg-type]

    async def throughput(self, queue: Queue, hours: int) -> Throughput | None:
        """The chart's counts, served like counts(); None while a window's first drawing is
        still running."""
        hit = await self.charts.get(
            hours, lambda: queue.store.throughput(queue.clock.now(), hours, 60),
            _unversioned, first_wait=FIRST_COUNT_WAIT)
        return hit.value if hit else None

    async def queues(self, queues: Queues, *, wait: bool = False) -> list[QueueInfo] | None:
        """Every queue with its counts, from the last copy. wait: the first time, wait for it
        (the page itself); else None until it is there (a filter's choices can do without)."""
        hit = await self.queue_list.get(None, queues.list, queues.store.change_token,
                                        first_wait=None if wait else FIRST_COUNT_WAIT)
        if hit is None:
            return await queues.list() if wait else None  # the read failed: say why
        return list(hit.value)

    def changed(self, info: QueueInfo) -> None:
        """A queue just changed here: the copy shows it at once, without a recount."""
        hit = self.queue_list.made.get(None)
        if hit is not None:
            rest = [q for q in hit.value if q.name != info.name]
            hit.value = sorted([*rest, info], key=lambda q: q.name)


async def _unversioned() -> None:
    return None  # what a copy that is not checked against the database records as its version


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
