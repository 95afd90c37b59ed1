"""Opening the database waits for another process's lock instead of failing.

Found by the whole suite under a CPU hog: `localflow worker` and `localflow api` started
together on a fresh file, and one died at start-up with `database is locked` from
`PRAGMA journal_mode=WAL`, run while the other still held the file's lock in rollback
mode (creating it). Here another connection holds that lock for a moment.
"""

from __future__ import annotations

import asyncio
import sqlite3

from shared.store.sqlite import migrations
from shared.store.sqlite.database import Database


async def test_open_waits_for_a_lock_held_while_the_file_is_not_yet_wal(tmp_path):
    path = tmp_path / "fresh.db"
    migrations.migrate(str(path))
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")  # as a file is before WAL is switched on
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    opening = asyncio.create_task(Database.open(str(path)))
    await asyncio.sleep(0.3)  # a window for it to fail in (no event to wait on: it must not)
    assert not opening.done() or opening.exception() is None
    other.execute("COMMIT")
    other.close()
    db = await asyncio.wait_for(opening, 30)
    try:
        assert tuple(await db.fetch_one("PRAGMA journal_mode")) == ("wal",)
    finally:
        await db.close()
