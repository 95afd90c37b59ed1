"""An idle worker and the wake-ups of submissions, on a real database file, in this process.

A submission wakes workers once, from its own transaction (SQLite: just before its COMMIT;
PostgreSQL: its NOTIFY), so a worker can be woken while the new task is not yet visible to
its reads. These tests pin what makes that safe without a second wake-up after the commit.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time

from shared.ids import new_id
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.sql import Queries
from shared.store.sqlite import SQLiteStore
from shared.store.sqlite.wake import wake_dir
from tests.test_worker import running, until
from worker.pool import Worker

Q = Queries("sqlite", "queue")


async def test_a_wake_up_during_the_idle_reads_is_not_lost(store: SQLiteStore, db_path) -> None:
    """The race: a worker whose claim found nothing reads the change token and the next due
    time to know it may sleep (`_remember_idle`). A wake-up for a task whose transaction is
    still open (another process holds the write lock, its COMMIT not done) comes in between:
    those reads cannot see the task yet. The worker must not take them as "nothing changed",
    or it sleeps until its poll (60 s here) with the task queued."""
    settings = Settings(db=str(db_path), workers=2, poll=60, lease=30)
    queue = Queue(store, settings=settings)
    worker = Worker(queue, settings)
    other = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    task_id = new_id(time.time())
    state = {"step": "armed"}
    committed = asyncio.Event()
    real_change_token = store.change_token
    loop = asyncio.get_running_loop()

    def commit() -> None:
        if state["step"] == "held":
            other.execute("COMMIT")
            state["step"] = "committed"
            committed.set()

    async def change_token() -> object:
        if state["step"] == "armed":
            # Another process's submission, in its transaction: the row is in, the write lock
            # held, and its wake-up (sent before its COMMIT) reaches the worker now.
            now = time.time()
            other.execute("BEGIN IMMEDIATE")
            other.execute(Q.insert_new_tasks, (json.dumps(
                [[task_id, "shell", json.dumps({"command": "true"}), 0, now, 3, 30.0, now,
                  "default", None]]),))
            state["step"] = "held"
            worker._on_peer_wake()
            # The COMMIT lands later: at the worker's next look at the token (read first, so
            # that look is stale too: the race at its tightest), else after half a second.
            loop.call_later(0.5, commit)
            return await real_change_token()
        token = await real_change_token()
        commit()
        return token

    store.change_token = change_token  # type: ignore[method-assign]
    try:
        async with running(worker):
            await asyncio.wait_for(committed.wait(), 20)
            done = await until(queue, task_id, {"succeeded", "failed"}, timeout=20)
            assert done.status == "succeeded"
    finally:
        store.change_token = real_change_token  # type: ignore[method-assign]
        other.close()


async def test_a_submission_wakes_workers_once(store: SQLiteStore, db_path) -> None:
    """One wake-up per submission (sent before its COMMIT), not a second one after it: each
    made an idle worker run one more claim, empty, per task."""
    queue = Queue(store, settings=Settings(db=str(db_path)))
    directory = wake_dir(str(db_path))
    directory.mkdir(mode=0o700, exist_ok=True)
    # A plain socket where workers bind theirs: it counts datagrams, where a worker's listener
    # reads all that are waiting at once.
    counter = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    counter.bind(str(directory / "counter"))
    counter.settimeout(20)
    try:
        for _ in range(3):
            await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}))
        await queue.enqueue_many([TaskCreate(type="shell", payload={"command": "true"})] * 2)
        # Datagrams to one socket arrive in the order sent: once this one is read, every
        # wake-up the submissions above sent has been read too.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as end:
            end.sendto(b"end", str(directory / "counter"))
        got = []
        while (datagram := await asyncio.to_thread(counter.recv, 16)) != b"end":
            got.append(datagram)
        assert len(got) == 4  # four submissions, one wake-up each
    finally:
        counter.close()
