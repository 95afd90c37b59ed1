"""The SQLite writer thread: batches of writes, one transaction each, run back to back.

Writes that arrive while a batch runs start the next batch as soon as it commits, on the
writer thread, without waiting for the event loop (busy answering the batch before, under
load) to hand them over: Database._drain.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from shared.store.sqlite import migrations
from shared.store.sqlite.database import Database

WAIT = 30.0  # generous: a busy machine; the waits end as soon as the event happens


@pytest.fixture
async def db(tmp_path):
    path = tmp_path / "writer.db"
    migrations.migrate(str(path))
    opened = await Database.open(str(path))
    yield opened
    await opened.close()


async def test_next_batch_runs_while_the_event_loop_is_blocked(db: Database):
    first_running, release_first, second_ran = (threading.Event() for _ in range(3))

    def first(conn: sqlite3.Connection) -> str:
        first_running.set()
        assert release_first.wait(WAIT)
        return "first"

    def second(conn: sqlite3.Connection) -> str:
        second_ran.set()
        return "second"

    one = asyncio.create_task(db.write(first))
    assert await asyncio.to_thread(first_running.wait, WAIT)
    two = asyncio.create_task(db.write(second))
    await asyncio.sleep(0)  # one turn: `two` is queued behind the running batch
    release_first.set()
    # The event loop is held here, on purpose: the second batch must start without it.
    assert second_ran.wait(WAIT), "the writer waited for the event loop between batches"
    assert await one == "first"
    assert await two == "second"
    assert db.batches == 2


async def test_each_write_gets_its_own_answer_and_a_failing_one_fails_alone(db: Database):
    await db.write(lambda conn: conn.execute("CREATE TABLE scratch (v INTEGER PRIMARY KEY)"))

    def insert(value: int):
        def op(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO scratch (v) VALUES (?)", (value,))
            return value
        return op

    # The second 1 breaks the key, in whichever batch it lands; the others are written.
    results = await asyncio.gather(*(db.write(insert(v)) for v in (1, 2, 3, 1, 4)),
                                   return_exceptions=True)
    assert results[:3] + results[4:] == [1, 2, 3, 4]
    assert isinstance(results[3], sqlite3.IntegrityError)
    rows = await db.fetch_all("SELECT v FROM scratch ORDER BY v")
    assert [r[0] for r in rows] == [1, 2, 3, 4]


async def test_close_answers_every_queued_write(tmp_path):
    path = tmp_path / "closing.db"
    migrations.migrate(str(path))
    db = await Database.open(str(path))
    writes = [asyncio.create_task(db.write(lambda conn, i=i: i)) for i in range(200)]
    await asyncio.sleep(0)
    await db.close()
    assert [await w for w in writes] == list(range(200))
