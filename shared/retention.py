"""Retention: finished tasks older than their status's retention period are pruned.

Run by every worker process at most every --prune-interval; a lease in the database
(`leases`, name "pruner") lets one worker prune at a time, and passes to another when the
holder stops renewing it. Deletes go in small transactions (BATCH tasks each) with a yield to
the event loop between them, so submits and claims interleave with a long prune instead of
waiting behind it. docs/retention.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from shared.clock import Clock, SystemClock
from shared.schemas import Status
from shared.settings import Settings
from shared.store.base import Store

log = structlog.get_logger("localflow.retention")

LEASE = "pruner"
BATCH = 200  # tasks per transaction: milliseconds of write lock, not seconds
# Rest between batches: other processes waiting for SQLite's write lock (whose busy handler
# sleeps in growing steps) get it, instead of finding the next batch already holding it.
# bench/prune_bench.py: submit p99 255 ms pruning 500 at a time back to back; see
# docs/retention.md for the numbers with these values.
PAUSE = 0.02
MAX_BATCHES_PER_PASS = 5000  # a million rows at most per pass; the next pass goes on


@dataclass
class Pruner:
    store: Store
    settings: Settings
    holder: str  # who prunes: the worker's id
    clock: Clock = field(default_factory=SystemClock)
    pruned: dict[str, int] = field(default_factory=dict)  # since start, by status (/metrics)
    passes: int = 0
    database_bytes: int | None = None  # as of this process's last pass (/metrics)
    audit_pruned: int = 0  # audit trail entries, since start (--retain-audit, /metrics)

    def retention(self) -> dict[Status, float]:
        """Seconds to keep each finished status; 0 keeps for ever."""
        return {"succeeded": self.settings.retain_succeeded,
                "failed": self.settings.retain_failed,
                "cancelled": self.settings.retain_cancelled}

    async def prune_once(self) -> int:
        """One pass, if this process holds the lease; returns the tasks deleted (audit
        entries pruned are counted in `audit_pruned`)."""
        keep = {s: t for s, t in self.retention().items() if t > 0}
        if not keep and self.settings.retain_audit <= 0:
            return 0
        now = self.clock.now()
        # Held for a few intervals: a live holder renews it every pass; a dead one loses it.
        until = now + max(3 * self.settings.prune_interval, 30.0)
        if not await self.store.take_lease(LEASE, self.holder, until, now):
            return 0
        total = 0
        for status, seconds in keep.items():
            before = now - seconds
            for _ in range(MAX_BATCHES_PER_PASS):
                deleted = await self.store.prune(status, before, BATCH)
                total += deleted
                self.pruned[status] = self.pruned.get(status, 0) + deleted
                if deleted < BATCH:
                    break
                await asyncio.sleep(PAUSE)  # let the API and the claims in between batches
        if self.settings.retain_audit > 0:
            await self._prune_audit(now - self.settings.retain_audit)
        self.passes += 1
        try:
            self.database_bytes = sum((await self.store.storage()).sizes.values())
        except Exception:  # a size for /metrics is not worth failing a pass over
            log.warning("could not read the database size", exc_info=True)
        if total:
            log.info("pruned finished tasks", count=total)
        return total

    async def _prune_audit(self, before: float) -> None:
        """The audit trail's own retention (--retain-audit), in the same small batches."""
        gone = 0
        for _ in range(MAX_BATCHES_PER_PASS):
            deleted = await self.store.prune_audit(before, BATCH)
            gone += deleted
            if deleted < BATCH:
                break
            await asyncio.sleep(PAUSE)
        self.audit_pruned += gone
        if gone:
            log.info("pruned audit entries", count=gone)
