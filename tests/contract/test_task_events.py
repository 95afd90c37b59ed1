"""Contract of the task event log (Store.events_after, events_head, prune_events) and of the
EventHub that follows it (shared/task_events.py), on every backend. Events are written by the
database itself (triggers) in the transaction of each status change, so a change made through
another store (another process) is in the log the moment it commits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store.base import Store
from shared.task_events import PAGE, EventHub, cursor_key

DEADLINE = 20.0


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


@pytest.fixture
async def other(
    another_store: Callable[[], Awaitable[Store]], clock: FakeClock, settings: Settings
) -> Queue:
    return Queue(await another_store(), clock, settings)


async def _all_after(store: Store, cursor: str | None) -> list:
    events = []
    while True:
        page = await store.events_after(cursor, 100)
        events += page.events
        if len(page.events) < 100:
            return events
        cursor = page.events[-1].cursor


async def test_every_status_change_is_an_event_in_commit_order(
    queue: Queue, other: Queue, clock: FakeClock
):
    start = await queue.store.events_head()
    task, _ = await other.enqueue(shell("a", max_attempts=2))
    (c,) = await other.claim("w", 1, lease=30)
    await other.fail(c, "boom")  # back to queued, attempts left
    clock.advance(3600)  # past the retry's backoff
    (c,) = await other.claim("w", 1, lease=30)
    await other.complete(c, {"exit_code": 0})
    task_events = await _all_after(queue.store, start)
    assert [(e.task_id, e.status, e.attempts, e.type) for e in task_events] == [
        (task.id, "queued", 0, "shell"), (task.id, "running", 1, "shell"),
        (task.id, "queued", 1, "shell"), (task.id, "running", 2, "shell"),
        (task.id, "succeeded", 2, "shell"),
    ]
    keys = [cursor_key(e.cursor) for e in task_events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert keys[0] > cursor_key(start)
    assert await queue.store.events_head() == task_events[-1].cursor
    assert await queue.store.events_newest() == task_events[-1].cursor  # nothing still open
    # From a cursor in the middle: exactly what came after it.
    rest = await _all_after(queue.store, task_events[1].cursor)
    assert [e.cursor for e in rest] == [e.cursor for e in task_events[2:]]


async def test_events_say_which_queue_the_task_is_in(queue: Queue, other: Queue):
    start = await queue.store.events_head()
    mail, _ = await other.enqueue(shell("m", queue="emails"))
    plain, _ = await other.enqueue(shell("p"))
    await other.claim("w", 2, lease=30)
    got = {(e.task_id, e.status, e.queue) for e in await _all_after(queue.store, start)}
    assert got == {(mail.id, "queued", "emails"), (mail.id, "running", "emails"),
                   (plain.id, "queued", "default"), (plain.id, "running", "default")}


async def test_changes_that_change_nothing_write_no_event(queue: Queue, other: Queue):
    await queue.enqueue(shell("a"))
    (c,) = await queue.claim("w", 1, lease=30)
    head = await queue.store.events_head()
    await queue.heartbeat([c], lease=30)  # a lease, not a status
    stale = type(c)(**{**{f: getattr(c, f) for f in c.__struct_fields__}, "token": "stale"})
    assert not await queue.complete(stale, None)  # fenced out
    await queue.cancel(c.id)  # running: only cancel_requested
    assert (await queue.store.events_after(head, 10)).events == []


async def test_a_rolled_back_batch_leaves_no_event(queue: Queue):
    from shared.errors import IdempotencyConflict

    await queue.enqueue(shell("a", idempotency_key="k"))
    head = await queue.store.events_head()
    with pytest.raises(IdempotencyConflict):
        await queue.enqueue_many([shell("new"), shell("other", idempotency_key="k")])
    assert (await queue.store.events_after(head, 10)).events == []


async def test_pruning_keeps_the_window_and_says_when_a_cursor_lost_events(
    queue: Queue, clock: FakeClock
):
    first = await queue.store.events_head()
    await queue.enqueue(shell("old"))
    old_events = await _all_after(queue.store, first)
    clock.advance(100)
    new, _ = await queue.enqueue(shell("new"))
    assert await queue.store.prune_events(clock.now() - 50) == 1
    kept = await queue.store.events_after(None, 10)
    assert [e.task_id for e in kept.events] == [new.id] and not kept.lost
    behind = await queue.store.events_after(first, 10)
    assert behind.lost and [e.task_id for e in behind.events] == [new.id]
    at_horizon = await queue.store.events_after(old_events[-1].cursor, 10)
    assert not at_horizon.lost and [e.task_id for e in at_horizon.events] == [new.id]
    assert await queue.store.prune_events(clock.now() + 1) == 1
    # Nothing kept: the head is the horizon, and a reader there has lost nothing.
    head = await queue.store.events_head()
    assert cursor_key(head) >= cursor_key(kept.events[-1].cursor)
    assert not (await queue.store.events_after(head, 10)).lost



async def _ids_after(store: Store, cursor: str) -> list[str]:
    return [e.task_id for e in await _all_after(store, cursor)]


async def test_events_since_starts_at_the_first_event_stamped_at_or_after_the_time(
    queue: Queue, other: Queue, clock: FakeClock
):
    """Store.events_since (the time index): a reader starts with the first event stamped
    at or after the time, and none of those before it."""
    t0 = clock.now()
    early, _ = await other.enqueue(shell("early"))
    clock.advance(100)
    (claimed,) = await other.claim("w", 1, lease=30)  # early's second event, stamped now
    assert claimed.id == early.id
    middle, _ = await other.enqueue(shell("middle"))
    clock.advance(100)
    late, _ = await other.enqueue(shell("late"))
    store = queue.store
    for since, expected in [
        (t0 - 1, [early.id, early.id, middle.id, late.id]),
        (t0 + 50, [early.id, middle.id, late.id]),
        (t0 + 100, [early.id, middle.id, late.id]),  # at: included
        (t0 + 100.001, [late.id]),
        (t0 + 200, [late.id]),
    ]:
        start = await store.events_since(since)
        assert not start.lost, since  # nothing was ever pruned
        assert await _ids_after(store, start.cursor) == expected, since
    # Later than every event: the head, and what commits next comes after it.
    start = await store.events_since(t0 + 1000)
    assert not start.lost and start.cursor == await store.events_head()
    after, _ = await other.enqueue(shell("after"))
    assert await _ids_after(store, start.cursor) == [after.id]


async def test_events_since_a_time_before_the_kept_window_says_some_may_be_lost(
    queue: Queue, clock: FakeClock
):
    t0 = clock.now()
    await queue.enqueue(shell("old"))
    clock.advance(100)
    new, _ = await queue.enqueue(shell("new"))
    assert await queue.store.prune_events(t0 + 50) == 1
    # Before every kept stamp, with some pruned: lost, and the oldest kept comes first.
    start = await queue.store.events_since(t0 - 10)
    assert start.lost and await _ids_after(queue.store, start.cursor) == [new.id]
    # A reader from there is past the horizon: events_after does not report it again.
    assert not (await queue.store.events_after(start.cursor, 10)).lost
    # Within what is kept: nothing lost.
    start = await queue.store.events_since(t0 + 100)
    assert not start.lost and await _ids_after(queue.store, start.cursor) == [new.id]
    # Everything pruned: any time may have lost events; the reader starts at the head.
    assert await queue.store.prune_events(clock.now() + 1) == 1
    start = await queue.store.events_since(clock.now())
    assert start.lost and start.cursor == await queue.store.events_head()
    later, _ = await queue.enqueue(shell("later"))
    assert await _ids_after(queue.store, start.cursor) == [later.id]


async def test_queue_prunes_by_the_configured_window_from_the_rescue_loop(
    queue: Queue, clock: FakeClock, settings: Settings
):
    import msgspec

    queue = Queue(queue.store, clock, msgspec.structs.replace(settings, events_window=10.0))
    await queue.enqueue(shell("a"))
    clock.advance(11)
    await queue.rescue_expired()  # the rescue loop prunes too, at most once a minute
    assert (await queue.store.events_after(None, 10)).events == []
    await queue.enqueue(shell("b"))
    clock.advance(11)
    await queue.rescue_expired()  # within the minute: not again
    assert len((await queue.store.events_after(None, 10)).events) == 1
    clock.advance(60)
    await queue.rescue_expired()
    assert (await queue.store.events_after(None, 10)).events == []


async def test_hub_hands_events_from_another_process_to_its_streams(
    queue: Queue, other: Queue
):
    hub = EventHub(queue.store, fallback=3600)  # only wake-ups can bring events in time
    try:
        start = await hub.join()
        task, _ = await other.enqueue(shell("a"))
        async with asyncio.timeout(DEADLINE):
            assert await hub.wait_past(start, DEADLINE)
        page = await hub.after(start)
        assert [(e.task_id, e.status) for e in page.events] == [(task.id, "queued")]
        (c,) = await other.claim("w", 1, lease=30)
        await other.complete(c, None)
        cursor = page.events[-1].cursor
        seen = []
        async with asyncio.timeout(DEADLINE):
            while len(seen) < 2:
                await hub.wait_past(cursor, 1)
                more = (await hub.after(cursor)).events
                if more:
                    seen += more
                    cursor = more[-1].cursor
        assert [e.status for e in seen] == ["running", "succeeded"]
        # Nothing new: a wait ends at its timeout.
        assert await hub.wait_past(cursor, 0.05) is False
    finally:
        hub.leave()
        await hub.close()


async def test_hub_serves_a_reader_from_before_its_start_out_of_the_log(queue: Queue):
    before = await queue.store.events_head()
    await queue.enqueue_many([shell(str(i)) for i in range(PAGE + 20)])
    hub = EventHub(queue.store, fallback=3600)
    try:
        await hub.join()
        page = await hub.after(before)  # older than the ring: a page from the log
        assert len(page.events) == PAGE and not page.lost
        rest = await hub.after(page.events[-1].cursor)
        assert len(rest.events) == 20
    finally:
        hub.leave()
        await hub.close()


async def test_hub_moves_a_reader_past_a_fully_pruned_log_to_its_head(
    queue: Queue, clock: FakeClock
):
    """A cursor with every event after it pruned (a reconnect an idle hour later): the page is
    lost and empty; past_pruned gives the log's head, from where the next event is read once
    and the loss is not reported again. With something kept after it, it stays put."""
    await queue.enqueue(shell("old"))
    clock.advance(100)
    assert await queue.store.prune_events(clock.now()) >= 1
    start = "0-0"  # before every event
    hub = EventHub(queue.store, fallback=3600)
    try:
        await hub.join()
        page = await hub.after(start)
        assert page.lost and page.events == []
        moved = await hub.past_pruned(start)
        assert cursor_key(moved) > cursor_key(start)
        assert moved == await queue.store.events_head()
        new, _ = await queue.enqueue(shell("new"))
        after = await queue.store.events_after(moved, 10)
        assert not after.lost and [e.task_id for e in after.events] == [new.id]
        assert await hub.past_pruned(start) == start  # something after it is kept: stay
    finally:
        hub.leave()
        await hub.close()
