"""Counting tasks at a million rows without reading a million rows: the part both stores share.

Stored statuses are counted by the database itself (task_counts, kept by triggers in the
transaction of every change: migrations/<dialect>/009_dashboard_indexes.sql), per (queue, type,
status). The queued tasks' derived views (ready / scheduled / retrying) move with the clock, so
no trigger can keep them: they are counted from two small indexes, up to a cap (COUNT_CAP), and
the smaller side is the one counted, so that the exact answer comes out whenever either side is
under the cap. Only when both ready and scheduled pass the cap is a count a lower bound
("10,000+"), and TaskCounts says which.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

from shared.schemas import QUEUED_VIEWS, STATUSES

COUNT_CAP = 10_000  # index entries one derived count may read, per kind

Kind = Literal["due", "waiting", "retrying"]  # run_at <= now; run_at > now; attempts > 0 and > now
# (queue, type, kind, limit) -> how many of that queue's tasks of that type are of that kind,
# reading at most `limit` index entries (so at most `limit`).
CountUpTo = Callable[[str, str, Kind, int], Awaitable[int]]


class TaskCounts(dict[str, int]):
    """Tasks per status and per queued view; `at_least` names the views whose value is a
    lower bound (more than COUNT_CAP of them: shown as "10,000+"), every other value exact."""

    at_least: frozenset[str]

    def __init__(self, counts: dict[str, int], at_least: Iterable[str] = ()) -> None:
        super().__init__(counts)
        self.at_least = frozenset(at_least)


def totals(
    rows: Iterable[tuple[str, str, str, int]], type: str | None = None,
    queue: str | None = None,
) -> dict[str, int]:
    """Every status of STATUSES (0 if none) from (queue, type, status, n) counter rows,
    of one type and/or one queue when given."""
    counts = dict.fromkeys(STATUSES, 0)
    for row_queue, row_type, status, n in rows:
        if (type is None or row_type == type) and (queue is None or row_queue == queue):
            counts[status] = counts.get(status, 0) + n
    return counts


async def queued_views(
    rows: Iterable[tuple[str, str, str, int]], count_up_to: CountUpTo,
    type: str | None = None, queue: str | None = None, cap: int | None = None,
) -> TaskCounts:
    """Stored totals plus ready / scheduled / retrying, of one type and/or one queue when
    given, from the counter rows and bounded index counts (each kind reads at most about
    `cap` entries, whatever the backlog; COUNT_CAP unless given). The indexes lead with
    (queue, type), so a filter only narrows which (queue, type) ranges are counted."""
    cap = COUNT_CAP if cap is None else cap
    rows = list(rows)
    counts = totals(rows, type, queue)
    pairs = [(q, t) for q, t, status, n in rows
             if status == "queued" and n > 0 and (type is None or t == type)
             and (queue is None or q == queue)]
    queued = counts["queued"]

    async def up_to(kind: Kind, limit: int) -> int:
        found = 0
        for pair_queue, task_type in pairs:
            if found >= limit:
                break
            found += await count_up_to(pair_queue, task_type, kind, limit - found)
        return found

    at_least: set[str] = set()
    retrying = await up_to("retrying", cap + 1)
    if retrying > cap:
        retrying = cap
        at_least.add("retrying")
    due = await up_to("due", cap + 1)
    if due <= cap:
        ready, waiting = due, queued - due
    else:
        waiting = await up_to("waiting", cap + retrying + 1)
        if waiting <= cap + retrying:
            ready = queued - waiting
        else:  # both sides past the cap: say so rather than read the backlog
            ready, waiting = cap, cap + retrying
            at_least |= {"ready", "scheduled"}
    scheduled = max(waiting - retrying, 0)
    if "retrying" in at_least:
        # More than `cap` wait to retry: how many of the waiting ones are merely scheduled is
        # not known without reading them all, so claim no more than nothing.
        scheduled = 0
        at_least.add("scheduled")
    counts |= dict(zip(QUEUED_VIEWS, (ready, scheduled, retrying), strict=True))
    return TaskCounts(counts, at_least)


async def of_schedule(
    rows: Iterable[tuple[str, str, str, int]],
    count_views: Callable[[int], Awaitable[dict[str, int]]],
    type: str | None = None, queue: str | None = None, cap: int | None = None,
) -> TaskCounts:
    """One schedule's counts: stored totals from its kept (queue, type, status) rows
    (migration 010), and ready / scheduled / retrying from its queued tasks, read only when
    it has some and at most cap + 1 of them (count_views(limit) -> {view: n}). Past the cap
    the three are lower bounds (their sum is not: it is the kept queued count)."""
    cap = COUNT_CAP if cap is None else cap
    counts = totals(rows, type, queue)
    views = dict.fromkeys(QUEUED_VIEWS, 0)
    at_least: frozenset[str] = frozenset()
    if counts["queued"]:
        views |= await count_views(cap + 1)
        if counts["queued"] > cap:
            at_least = frozenset(QUEUED_VIEWS)
    return TaskCounts(counts | views, at_least)


def by_queue(
    rows: Iterable[tuple[str, str, str, int]], name: str | None = None
) -> list[tuple[str, str, int]]:
    """(queue, status, n) summed over types, of every queue or of the one named."""
    sums: dict[tuple[str, str], int] = {}
    for queue, _type, status, n in rows:
        if name is None or queue == name:
            sums[queue, status] = sums.get((queue, status), 0) + n
    return [(queue, status, n) for (queue, status), n in sums.items() if n]


def live_depth(rows: Iterable[tuple[str, str, str, int]]) -> list[tuple[str, str, str, int]]:
    """(status, type, queue, n) of the work not finished yet (queued and running): what
    /metrics reports as the depth, by type and by queue."""
    return [(status, task_type, queue, n) for queue, task_type, status, n in rows
            if status in ("queued", "running") and n]
