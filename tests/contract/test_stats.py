"""The store's reads behind /metrics, the dashboard and /health, on every backend: the same
data gives the same answers whichever engine holds it."""

from __future__ import annotations

import pytest
from msgspec import UNSET

from shared.queue import Queue
from shared.schedules import Schedules
from shared.schemas import TaskCreate
from tests.contract.test_schedules_scheduler import body


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


async def test_throughput_counts_finished_tasks_per_bucket(queue: Queue, clock):
    start = clock.now()
    for i in range(3):
        await queue.enqueue(shell(str(i)))
    (a, b, c) = await queue.claim("w", 3, lease=30)
    await queue.complete(a, {})
    clock.advance(60)
    await queue.complete(b, {})
    await queue.fail(c, "boom", retry=False)
    chart = await queue.store.throughput(clock.now(), 1, 60)
    assert chart.bucket_seconds == 60 and chart.succeeded == 2 and chart.failed == 1
    by_start = {b.start: (b.succeeded, b.failed) for b in chart.buckets if b.succeeded or b.failed}
    assert by_start == {(start // 60) * 60: (1, 0), ((start + 60) // 60) * 60: (1, 1)}
    assert chart.peak == 2


async def test_oldest_runnable_and_queue_stats(queue: Queue, clock):
    assert await queue.store.oldest_runnable(clock.now()) is None
    first, _ = await queue.enqueue(shell("a"))
    clock.advance(1)
    await queue.enqueue(shell("b", delay=3600))  # not due: not "waiting"
    await queue.enqueue(TaskCreate(type="http", payload={"url": "http://127.0.0.1:1/"}))
    waiting = await queue.store.oldest_runnable(clock.now())
    assert waiting is not None and waiting.id == first.id and waiting.type == "shell"
    await queue.worker_seen("w1", "host-a", 123, 4)
    (c,) = await queue.claim("w1", 1, lease=30)
    stats = await queue.store.queue_stats(clock.now(), clock.now() - 60)
    depth = {(d.status, d.type): d.count for d in stats.depth}
    assert depth == {("queued", "shell"): 1, ("queued", "http"): 1, ("running", "shell"): 1}
    assert stats.totals == {"queued": 2, "running": 1, "succeeded": 0, "failed": 0,
                            "cancelled": 0}
    assert stats.oldest_runnable_at == pytest.approx(clock.now() - 1)
    assert stats.workers_alive == 1
    workers = await queue.store.recent_workers(clock.now(), 60)
    assert [(w.id, w.hostname, w.pid, w.slots, w.running) for w in workers] == [
        ("w1", "host-a", 123, 4, 1)
    ]
    await queue.worker_stopped("w1")
    assert (await queue.store.queue_stats(clock.now(), clock.now() - 60)).workers_alive == 0
    assert c.id == first.id


async def test_task_ids_of_schedule_filters_and_pages(queue: Queue, clock):
    schedules = Schedules(queue)
    s = await schedules.create(body())
    made = []
    for _ in range(4):
        clock.advance(0.01)
        made.append((await schedules.run_now(s.id)).id)
    await queue.enqueue(shell("not the schedule's"))
    store = queue.store
    assert await store.task_ids_of_schedule(s.id) == made[::-1]
    assert await store.task_ids_of_schedule(s.id, limit=2, cursor=made[2]) == [made[1], made[0]]
    await queue.cancel(made[0])
    assert await store.task_ids_of_schedule(s.id, status="cancelled") == [made[0]]
    assert await store.task_ids_of_schedule(s.id, status="queued", type="shell") == \
        made[1:][::-1]
    assert await store.task_ids_of_schedule(s.id, type="http") == []
    key_task, _ = await queue.enqueue(shell("k", idempotency_key="key-1"))
    assert await store.task_id_by_key("key-1") == key_task.id
    assert await store.task_id_by_key("key-2") is None


async def test_storage_facts_and_schema_version(store):
    info = await store.storage()
    assert info.engine in ("SQLite", "PostgreSQL") and info.version
    assert info.location == store.describe()
    assert info.sizes and all(isinstance(n, int) and n >= 0 for n in info.sizes.values())
    assert await store.schema_version() == store.newest_schema_version() == 10  # 010: counts
    assert store.write_transactions >= 0


async def test_queue_stats_split_by_queue_with_the_queue_settings(queue: Queue, clock):
    """/metrics' reads by queue (issue 13 item 6): unfinished tasks per (status, type, queue)
    and the queues with a pause or a limit."""
    await queue.enqueue(shell("a", queue="reports"))
    await queue.enqueue(shell("b", queue="reports"))
    await queue.enqueue(shell("c"))
    (claimed,) = await queue.claim("w1", 1, lease=30, queues=["reports"])
    await queue.store.set_queue("mail", concurrency=2, paused=None, now=clock.now())
    await queue.store.set_queue("reports", concurrency=UNSET, paused=True, now=clock.now())
    await queue.store.set_queue("opened", concurrency=None, paused=False, now=clock.now())
    stats = await queue.store.queue_stats(clock.now(), clock.now() - 60)
    depth = {(d.status, d.type, d.queue): d.count for d in stats.depth}
    assert depth == {("queued", "shell", "reports"): 1, ("running", "shell", "reports"): 1,
                     ("queued", "shell", "default"): 1}
    # Only queues whose settings close or limit them; by name.
    assert [(g.name, g.concurrency, g.paused) for g in stats.queue_settings] == [
        ("mail", 2, False), ("reports", None, True)]
    assert claimed.queue == "reports"
