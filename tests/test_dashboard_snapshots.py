"""The dashboard's copies of slow reads (api/dashboard/snapshots.py), on a real SQLite store:
a poll gets the last copy; only the first ask for a key waits (briefly for counts and the
chart); a due copy is looked at again in the background; a copy checked against the database
is kept while nothing changed; at most COUNTS_KEPT filters are kept.
tests/test_dashboard_queues.py has the queue list's own test (the same mechanism)."""

from __future__ import annotations

import asyncio

import pytest

from api.dashboard import snapshots as snapshots_module
from api.dashboard.snapshots import Snapshots
from shared.schemas import TaskCreate


async def _task(queue, type: str = "shell") -> None:
    await queue.enqueue(TaskCreate(type=type, payload={"command": "true"} if type == "shell"
                                   else {"url": "http://127.0.0.1:9/"}))


async def test_a_slow_first_count_leaves_the_page_with_blanks_and_the_next_poll_has_it(
        queue, monkeypatch):
    await _task(queue)
    gate = asyncio.Event()
    real = queue.store.count_tasks

    async def held(*args, **kwargs):
        await gate.wait()  # the real count, once the test lets it run
        return await real(*args, **kwargs)

    monkeypatch.setattr(queue.store, "count_tasks", held)
    snap = Snapshots()
    first = await snap.counts(queue)  # waits FIRST_COUNT_WAIT, then gives up on it
    assert first["queued"] is None and first["succeeded"] is None
    looking = snap.counts_by_filter.making[(None, None, None)]
    gate.set()
    await looking
    assert (await snap.counts(queue))["queued"] == 1


async def test_counts_are_kept_while_nothing_changed_and_redone_once_something_did(
        queue, monkeypatch):
    await _task(queue)
    calls = []
    real = queue.store.count_tasks

    async def counted(*args, **kwargs):
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(queue.store, "count_tasks", counted)
    snap = Snapshots()
    assert (await snap.counts(queue))["queued"] == 1 and len(calls) == 1
    copy = snap.counts_by_filter.made[(None, None, None)]
    copy.cost = 0  # (else a count slowed by a busy machine is due only later: ten times its cost)
    copy.checked -= 2  # due for a look; nothing changed: kept, not counted again
    await snap.counts(queue)
    await asyncio.gather(*snap.counts_by_filter.making.values())
    assert len(calls) == 1 and copy.checked > copy.at - 2
    await _task(queue)
    copy.checked -= 2
    assert (await snap.counts(queue))["queued"] == 1  # this poll: the old copy
    await asyncio.gather(*snap.counts_by_filter.making.values())
    assert (await snap.counts(queue))["queued"] == 2 and len(calls) == 2


async def test_only_the_most_recent_filters_are_kept(queue, monkeypatch):
    monkeypatch.setattr(snapshots_module, "COUNTS_KEPT", 3)
    snap = Snapshots()
    for name in ("a", "b", "c", "d"):
        await snap.counts(queue, queue_name=name)
        await asyncio.gather(*snap.counts_by_filter.making.values())
    assert [key[2] for key in snap.counts_by_filter.made] == ["b", "c", "d"]


async def test_an_unchecked_copy_is_read_again_once_old_and_a_failed_first_read_says_why(
        queue):
    snap = Snapshots()
    reads = []

    async def read() -> int:
        reads.append(1)
        return len(reads)

    assert await snap.value("n", read) == 1
    assert await snap.value("n", read) == 1  # young: the copy
    snap.kept.made["n"].cost = 0  # (due at KEPT_MAX_AGE, however slow the read was)
    snap.kept.made["n"].checked -= snapshots_module.KEPT_MAX_AGE
    assert await snap.value("n", read) == 1  # old: this ask gets the copy, a read starts
    await asyncio.gather(*snap.kept.making.values())
    assert await snap.value("n", read) == 2

    async def broken() -> int:
        raise RuntimeError("the disk is gone")

    with pytest.raises(RuntimeError, match="the disk is gone"):
        await snap.value("broken", broken)  # the page's own read fails, and says why
    assert "broken" not in snap.kept.made
