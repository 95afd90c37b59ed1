"""The bookkeeping of a claim under queue limits, shared by both backends.

A claim runs in one transaction (SQLite: the one writer; PostgreSQL: with the limited queues'
rows locked FOR UPDATE, shared/store/postgres/store.py) and, inside it:

1. reads the queue settings: paused queues are closed; a limited queue has room
   concurrency - (its running tasks), and is closed when that is 0 or less;
2. runs the ordinary claim statement (most urgent first, over the runnable index) with the
   closed queues excluded, taking at most as many tasks as the smallest room left, so no
   queue can get more than its room in one statement;
3. takes the claimed tasks off their queues' room, closes the queues that are now full, and
   repeats while the worker has free slots and the last statement filled its batch.

Priorities keep their meaning: every round takes the most urgent tasks the worker may have.

Two ways to find them. The ordinary claim statement walks the runnable index (priority,
run_at, id) and filters: ideal when nothing is in the way, but every task of a closed queue
(or, for a worker serving only some queues, of another queue) ahead in that order is passed
by, on every claim -- 36,000 paused tasks at a high priority made a claim of 8 take 146 ms on
SQLite (bench/queue_plans.py). So when some queue is closed or the worker serves only some,
and the open queues are few (PER_QUEUE_MAX), a round instead reads each open queue's most
urgent tasks from the per-queue index (queue, priority, run_at, id), merges them here
(most_urgent) and claims those ids: a few index probes, whatever waits in closed queues.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.queue_schemas import QueueGate, QueueInfo
from shared.schemas import STATUSES


class ClaimBudget:
    def __init__(self, limit: int, gates: Iterable[QueueGate], running: dict[str, int]) -> None:
        self.remaining = limit
        self.closed: set[str] = set()
        self.room: dict[str, int] = {}
        for gate in gates:
            if gate.paused:
                self.closed.add(gate.name)
            elif gate.concurrency is not None:
                room = gate.concurrency - running.get(gate.name, 0)
                if room > 0:
                    self.room[gate.name] = room
                else:
                    self.closed.add(gate.name)
        self._last_batch = 0

    def next_batch(self) -> int:
        """How many the next claim statement may take (0: stop)."""
        if self.remaining <= 0 or self._last_batch < 0:
            return 0
        self._last_batch = min(self.remaining, *self.room.values()) if self.room else (
            self.remaining)
        return self._last_batch

    def took(self, queues: Sequence[str]) -> None:
        """Record what the last statement claimed (the queue of each task)."""
        self.remaining -= len(queues)
        for name in queues:
            if name in self.room:
                self.room[name] -= 1
                if self.room[name] <= 0:
                    del self.room[name]
                    self.closed.add(name)
        if len(queues) < self._last_batch:
            self._last_batch = -1  # the runnable tasks it may take ran out: no more rounds

    def closed_list(self) -> list[str]:
        return sorted(self.closed)


PER_QUEUE_MAX = 50  # more open queues than this: one walk beats a probe per queue


def per_queue_names(
    budget: ClaimBudget, only: Sequence[str] | None, with_work: Sequence[str] | None
) -> list[str] | None:
    """The queues a claim should probe one by one, or None for the ordinary walk.
    `with_work`: the queues that have queued tasks (read only when `only` is not given)."""
    if not only and not budget.closed:
        return None
    names = list(only) if only else list(with_work or ())
    names = [n for n in names if n not in budget.closed]
    return names if len(names) <= PER_QUEUE_MAX else None


def most_urgent(candidates: Iterable[Mapping[str, Any]], n: int) -> list[str]:
    """Ids of the n most urgent of the open queues' candidates (priority desc, run_at, id)."""
    ordered = sorted(candidates, key=lambda c: (-c["priority"], c["run_at"], c["id"]))
    return [c["id"] for c in ordered[:n]]


def limited(gates: Iterable[QueueGate]) -> list[str]:
    """Names of the queues whose running tasks the claim must count."""
    return sorted(g.name for g in gates if g.concurrency is not None and not g.paused)


def queue_overview(
    counts: Iterable[tuple[str, str, int]], gates: Iterable[QueueGate], *names: str
) -> list[QueueInfo]:
    """Every queue that has tasks or settings (plus `names`), by name, from (queue, status,
    count) rows and the settings rows."""
    by_name: dict[str, QueueInfo] = {}

    def info(name: str) -> QueueInfo:
        if name not in by_name:
            by_name[name] = QueueInfo(name=name, counts=dict.fromkeys(STATUSES, 0),
                                      concurrency=None, paused=False)
        return by_name[name]

    for name in names:
        info(name)
    for name, status, n in counts:
        info(name).counts[status] = n
    for gate in gates:
        entry = info(gate.name)
        entry.concurrency, entry.paused = gate.concurrency, gate.paused
    return [by_name[n] for n in sorted(by_name)]
