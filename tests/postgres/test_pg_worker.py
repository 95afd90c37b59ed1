"""The real worker (worker/pool.py) on PostgreSQL, in this process, with a poll interval far
longer than the test's deadlines: whatever happens in time happened because a NOTIFY from
another store (another process, another host) woke it. Timings are printed, not asserted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import open_store
from shared.store.postgres import PostgresStore
from shared.store.postgres import store as pg_store
from worker.pool import Worker

LONG_POLL = 120.0  # far beyond every deadline below: only a wake-up can be in time
DEADLINE = 30.0


def shell(command: str, *args: str) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": command, "args": list(args)})


@pytest.fixture
async def two_processes(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Queue, Queue]]:
    """(the worker's queue, another process's queue) on one database, each its own store.

    The change token's periodic forced check is pushed out of reach too, so nothing but a
    NOTIFY can get the idle worker to claim within the deadlines."""
    monkeypatch.setattr(pg_store, "_FORCED_CHECK_SECONDS", 1e9)
    settings = Settings(db=pg_url, workers=2, lease=30, grace=2, poll=LONG_POLL)
    stores = [await open_store(settings, migrate_first=False) for _ in range(2)]
    try:
        yield Queue(stores[0], settings=settings), Queue(stores[1], settings=settings)
    finally:
        for s in stores:
            await s.close()


async def _until(queue: Queue, task_id: str, statuses: set[str]) -> float:
    """Seconds until the task reached one of `statuses` (a condition, not a sleep)."""
    started = time.monotonic()
    while (await queue.get(task_id)).status not in statuses:
        assert time.monotonic() - started < DEADLINE, await queue.get(task_id)
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _started(worker: Worker, store: PostgresStore) -> None:
    listener = store.listener()
    deadline = time.monotonic() + DEADLINE
    while not (worker.running and listener.connected.is_set()):
        assert time.monotonic() < deadline, "worker or listener did not start"
        await asyncio.sleep(0.01)


async def test_work_and_cancels_from_another_process_wake_the_worker(two_processes) -> None:
    mine, other = two_processes
    worker = Worker(mine, mine.settings)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await _started(worker, mine.store)  # type: ignore[arg-type]
        task, _ = await other.enqueue(shell("echo", "hi"))
        took = await _until(other, task.id, {"succeeded"})
        long, _ = await other.enqueue(shell("sleep", "60"))
        await _until(other, long.id, {"running"})
        await other.cancel(long.id)  # NOTIFY: the worker holding it checks for cancels now
        cancel_took = await _until(other, long.id, {"cancelled"})
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE)
    print(f"submit->succeeded {took * 1000:.0f} ms, cancel->cancelled {cancel_took * 1000:.0f} ms"
          f" (poll {LONG_POLL:g} s)")


async def test_worker_still_woken_after_its_listener_connection_is_killed(
    two_processes, pg_url: str
) -> None:
    mine, other = two_processes
    worker = Worker(mine, mine.settings)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    listener = mine.store.listener()
    try:
        await _started(worker, mine.store)  # type: ignore[arg-type]
        pid = listener.backend_pid()
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + DEADLINE
        while not (listener.reconnects and listener.connected.is_set()):
            assert time.monotonic() < deadline, "listener did not reconnect"
            await asyncio.sleep(0.01)
        task, _ = await other.enqueue(shell("echo", "after"))
        await _until(other, task.id, {"succeeded"})
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE)
