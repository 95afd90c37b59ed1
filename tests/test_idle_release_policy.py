"""When localflow/idle_memory.py releases memory: never while every period sees work, once
when the work stops and memory has grown, and not again until it grows again. The loop runs
for real (a short period); what it releases is a recording callable here, and a real store in
tests/test_idle_memory.py."""

from __future__ import annotations

import asyncio
import sys

import pytest

from localflow.idle_memory import release_when_idle, resident_bytes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads resident memory from /proc (Linux only)")

PERIOD = 0.01


class Activity:
    """A work counter the loop polls; `polled` is set each time it has been read `every`
    more times, so the test waits on polls, not on time."""

    def __init__(self) -> None:
        self.value = 0
        self.busy = True  # a new value at every read: work in every period
        self.reads = 0
        self.polled = asyncio.Event()

    def __call__(self) -> int:
        self.reads += 1
        if self.reads % 5 == 0:
            self.polled.set()
        if self.busy:
            self.value += 1
        return self.value

    async def wait_polls(self, n: int = 5) -> None:
        for _ in range(max(1, n // 5)):
            self.polled.clear()
            await asyncio.wait_for(self.polled.wait(), 30)


async def test_busy_never_released_then_once_after_growth_and_not_again() -> None:
    activity = Activity()
    releases: list[int] = []
    released = asyncio.Event()

    async def release() -> None:
        releases.append(activity.reads)
        released.set()

    stop = asyncio.Event()
    loop_task = asyncio.create_task(release_when_idle(activity, release, stop, period=PERIOD))
    grown = None
    try:
        await activity.wait_polls(5)  # running: its baseline is taken
        grown = b"\1" * (8 << 20)  # written, so resident: 8 MB above that baseline
        assert resident_bytes() > 0
        await activity.wait_polls(20)
        assert releases == []  # work in every period: never touched

        activity.busy = False  # the load has passed
        await asyncio.wait_for(released.wait(), 30)
        assert len(releases) == 1
        await activity.wait_polls(20)
        assert len(releases) == 1  # idle, but no new growth since that release: not again

        more = b"\2" * (8 << 20)  # grows again while idle: released once more
        released.clear()
        await asyncio.wait_for(released.wait(), 30)
        assert len(releases) == 2
        del more
    finally:
        stop.set()
        await asyncio.wait_for(loop_task, 30)
        del grown
