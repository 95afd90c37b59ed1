"""PostgreSQL's event log under concurrency: a transaction that began early and commits late
must not have its event land behind a reader's cursor (the log is read only below the oldest
open transaction; migrations/postgres/004)."""

from __future__ import annotations

import psycopg

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import open_store


async def test_an_event_committed_late_by_an_early_transaction_is_not_skipped(pg_url: str):
    store = await open_store(Settings(db=pg_url), migrate_first=False)
    try:
        queue = Queue(store, FakeClock())
        early, _ = await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}))
        start = await store.events_head()
        with psycopg.connect(pg_url) as slow:
            # A transaction takes its xid now and changes a status, but does not commit yet.
            slow.execute("UPDATE tasks SET status = 'cancelled' WHERE id = %s", (early.id,))
            late, _ = await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}))
            # The later, committed event is held back: handing it out now would move a
            # reader's cursor past the early transaction's event, which it would then miss.
            assert (await store.events_after(start, 10)).events == []
            slow.commit()
        events = (await store.events_after(start, 10)).events
        assert [(e.task_id, e.status) for e in events] == [
            (early.id, "cancelled"), (late.id, "queued"),
        ]
    finally:
        await store.close()


async def test_newest_counts_a_committed_event_the_head_still_holds_back(pg_url: str):
    """events_newest is what a stream must have read before it says its replay is done;
    events_head (where a reader may start) stays below an open transaction."""
    store = await open_store(Settings(db=pg_url), migrate_first=False)
    try:
        clock = FakeClock()
        queue = Queue(store, clock)
        early, _ = await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}))
        head = await store.events_head()
        assert await store.events_newest() == head
        with psycopg.connect(pg_url) as slow:
            slow.execute("UPDATE tasks SET status = 'cancelled' WHERE id = %s", (early.id,))
            clock.advance(100)
            late, _ = await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}))
            newest = await store.events_newest()
            assert await store.events_head() == head and newest != head
            # A reader starting from late's time is not put past the head either: the open
            # transaction's event will land behind late's.
            assert (await store.events_since(clock.now())).cursor == head
            slow.commit()
        events = (await store.events_after(head, 10)).events
        assert [(e.task_id, e.status) for e in events] == [
            (early.id, "cancelled"), (late.id, "queued"),
        ]
        assert newest == events[-1].cursor
    finally:
        await store.close()
