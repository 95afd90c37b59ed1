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


async def test_more_writes_in_one_turn_than_a_batch_holds_all_commit_in_order(db_path):
    """One loop turn asking for more writes than a write transaction takes (MAX_BATCH): the
    writer thread writes them in several transactions, in the order asked, and answers each."""
    from shared.store.sqlite.database import Database

    db = await Database.open(str(db_path))
    try:
        n = Database.MAX_BATCH * 2 + 100
        before = db.batches

        def add(i: int):
            def op(conn) -> int:
                conn.execute("INSERT INTO queues (name, updated_at) VALUES (?, ?)",
                             (f"q{i:05d}", float(i)))
                return conn.execute("SELECT count(*) FROM queues WHERE name LIKE 'q%'"
                                    ).fetchone()[0]
            return op

        # Created in one turn: no await between them.
        pending = [asyncio.ensure_future(db.write(add(i))) for i in range(n)]
        counts = await asyncio.wait_for(asyncio.gather(*pending), 60)
        assert counts == list(range(1, n + 1))  # each saw exactly the writes before it
        assert db.batches - before == 3  # 512 + 512 + 100
        rows = await db.fetch_all("SELECT name FROM queues WHERE name LIKE 'q%' ORDER BY "
                                  "updated_at")
        assert [r[0] for r in rows] == [f"q{i:05d}" for i in range(n)]
    finally:
        await db.close()
