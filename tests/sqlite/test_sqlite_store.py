"""What only the SQLite store has: one file's write lock, waited for rather than reported.
(The cases every backend shares are in tests/contract/.)"""

from __future__ import annotations

import asyncio
import sqlite3

from shared.schemas import TaskCreate


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


async def test_locked_database_is_waited_for_not_reported(queue, db_path):
    """Another process holding the write lock delays a submission; it never fails it."""
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pending = asyncio.create_task(queue.enqueue(shell("waits")))
    await asyncio.sleep(0.3)
    assert not pending.done()
    other.execute("COMMIT")
    task, created = await asyncio.wait_for(pending, 30)
    assert created and task.status == "queued"
    other.close()
