"""Store.release_memory (localflow/idle_memory.py calls it when the API goes idle after a load),
on every backend: it changes no data and no answer, also when it runs while writes and reads
are going on, and it is harmless after close(). What it frees (SQLite's page caches) is
measured on a real `localflow api` process in tests/test_idle_memory.py."""

from __future__ import annotations

import asyncio

from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import open_store
from shared.store.base import Store


def shell(n: int) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": [str(n)]})


async def test_release_memory_between_and_during_writes_keeps_everything(
    queue: Queue, store: Store, clock,
):
    first = [t for t, _ in await queue.enqueue_many([shell(i) for i in range(200)])]
    await store.count_tasks(clock.now())  # opens the SQLite store's counting connection
    await store.oldest_runnable(clock.now())
    await store.release_memory()

    async def releases() -> None:
        for _ in range(20):
            await store.release_memory()
            await asyncio.sleep(0)

    async def writes() -> list:
        made = []
        for i in range(20):
            made += [t for t, _ in await queue.enqueue_many(
                [shell(1000 + 10 * i + k) for k in range(10)])]
        return made

    _, during = await asyncio.gather(releases(), writes())
    await store.release_memory()
    ids = [t.id for t in first] + [t.id for t in during]
    assert len(set(ids)) == 400
    for task_id in ids[::37] + ids[-3:]:
        got = await queue.get(task_id)
        assert got.status == "queued" and got.payload["command"] == "echo"
    assert (await queue.counts())["queued"] == 400
    assert (await store.count_tasks(clock.now()))["queued"] == 400


async def test_release_memory_after_close_is_harmless(settings: Settings):
    opened = await open_store(settings, migrate_first=False)
    await opened.close()
    await opened.release_memory()
