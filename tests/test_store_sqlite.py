"""What only the SQLite store has: wake-ups through datagram sockets beside the file, shared by
everyone in a process (one socket), and its change token (PRAGMA data_version)."""

from __future__ import annotations

import asyncio

from shared.store.sqlite import SQLiteStore
from shared.store.sqlite.wake import wake_dir


async def test_one_listener_per_process_woken_by_another_process_commit(db_path, store):
    other = await SQLiteStore.open(str(db_path))  # another process's store on the same file
    try:
        listener = store.listener()
        assert store.listener() is listener  # the worker and the scheduler share it
        woken: list[str] = []
        stop_worker = listener.subscribe(lambda: woken.append("worker"))
        stop_scheduler = listener.subscribe(lambda: woken.append("scheduler"))
        assert len(list(wake_dir(str(db_path)).iterdir())) == 1  # one socket for both

        waiting = asyncio.create_task(listener.wait(30))
        await asyncio.sleep(0)  # let wait() start before the wake-up is sent
        other.notify()
        assert await waiting is True
        assert sorted(woken) == ["scheduler", "worker"]

        stop_worker()
        stop_scheduler()
        assert list(wake_dir(str(db_path)).iterdir()) == []  # unbound with the last one
        assert await listener.wait(0.05) is False  # nobody sends: times out
    finally:
        await other.close()


async def test_change_token_moves_with_another_connections_commit(db_path, store, queue):
    from shared.schemas import TaskCreate

    other = await SQLiteStore.open(str(db_path))
    try:
        before = await store.change_token()
        assert await store.change_token() == before  # nothing committed: the same
        await other.insert_tasks([queue.prepare(TaskCreate(type="shell",
                                                           payload={"command": "true"}))],
                                 queue.clock.now())
        assert await store.change_token() != before
    finally:
        await other.close()
