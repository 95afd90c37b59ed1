"""Gives the memory a burst of requests left behind back to the system once the API is idle
(issue 10: the API's resident memory after the run, <= 60 MB).

After a load the API keeps ~4 MB more than it started with (bench/README.md, "Session 4: API
memory"), none of it a leak:
- SQLite's page cache on the writer connection fills up (up to 2 MB, SQLite's default
  cache_size), in the writer thread's malloc arena;
- glibc keeps what the request handling freed mapped, for the next allocation;
- pages of the interpreter's small-object arenas touched by the load stay resident.
The first two can be given back: `Store.release_memory` frees the page caches (the next reads
refill them from the OS's file cache) and `malloc_trim(0)` returns the free heap (shared/heap.py).
Measured: ~2 MB of the ~4, once the load has passed.

When: the API has served nothing and written nothing for a whole period, and its resident
memory is at least GROWTH_BYTES above what it was after the last release (or start-up). So a
busy API is never touched (every period sees work), an API that answers a dashboard's refresh
every few seconds releases only when its memory has grown, and a release that frees nothing
(the memory is live) is not repeated until it grows again. Cost when idle: one timer a
PERIOD and a read of /proc/self/statm; a release takes a few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable

import structlog

from shared.heap import trim_c_heap

log = structlog.get_logger("localflow")

PERIOD = 1.0  # seconds without a request or a write before the API counts as idle
GROWTH_BYTES = 1 << 20  # release only when resident memory grew by this much since the last
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident memory now (the second field of /proc/self/statm, in pages);
    0 where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


async def release_when_idle(
    activity: Callable[[], int], release_caches: Callable[[], Awaitable[None]],
    stop: asyncio.Event, *, period: float = PERIOD, growth: int = GROWTH_BYTES,
) -> None:
    """Until stop is set: whenever `activity()` (a count that grows with every request and
    write) has not moved for a period and memory has grown by `growth`, release the caches
    and trim the C heap."""
    if resident_bytes() == 0:
        return  # no /proc: nothing to measure the growth by (and no glibc to trim)
    baseline = resident_bytes()
    seen = activity()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
        now = activity()
        if now != seen:
            seen = now
            continue
        before = resident_bytes()
        if before < baseline + growth:
            continue
        started = time.perf_counter()
        try:
            await release_caches()
        except Exception:  # a store closing under it: the trim below still helps
            log.exception("idle: releasing the store's caches failed")
        trim_c_heap()
        baseline = resident_bytes()
        log.debug("idle: memory released", before_mb=round(before / 1e6, 1),
                  after_mb=round(baseline / 1e6, 1),
                  took_ms=round(1000 * (time.perf_counter() - started), 2))
