"""Database.write_on_loop: an idle writer's transaction begun and run on the event loop, only
its COMMIT on the writer thread (an idle worker's claim: issue 10, pickup), on real SQLite
files.

- idle: the op runs on the loop's thread; with a batch in flight or a write waiting, it takes
  the writer thread's path (write) instead;
- a lock another connection holds is waited for on the loop (which runs on meanwhile), the
  op runs once that connection commits; another LocalFlow writer's release ends the wait at
  once (the unlock FIFO, watched with add_reader); StorageBusy at busy_seconds;
- writes asked while the loop holds the transaction wait, and commit after it, in order, on
  the writer thread (the connection is never used by two threads at once);
- an op that raises rolls back, and later writes work; close() and cancelling end a wait.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from shared.errors import StorageBusy, StorageUnavailable
from shared.store.sqlite.database import Database

INSERT = "INSERT INTO queues (name, updated_at) VALUES (?, 0)"


def _names(db_path: Path) -> list[str]:
    """The queues another connection sees (committed rows only)."""
    with sqlite3.connect(db_path) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM queues ORDER BY rowid")]


async def _until(check, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.005)


def _add(name: str, threads: list[str] | None = None):
    def op(conn: sqlite3.Connection) -> str:
        if threads is not None:
            threads.append(threading.current_thread().name)
        conn.execute(INSERT, (name,))
        return name
    return op


def _locked_by_another_connection(db_path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_an_idle_writer_runs_the_op_on_the_loop_and_commits_on_its_thread(db_path: Path):
    db = await Database.open(str(db_path))
    try:
        threads: list[str] = []
        before = db.batches
        seen_uncommitted: list[list[str]] = []

        def op(conn: sqlite3.Connection) -> str:
            _add("on-loop", threads)(conn)
            # Just before the COMMIT, still on the loop: nobody else sees the row yet.
            db.before_commit(lambda: seen_uncommitted.append(_names(db_path)))
            return "done"

        assert await db.write_on_loop(op) == "done"
        assert threads == [threading.current_thread().name]  # the loop's own thread
        assert seen_uncommitted == [[]]
        assert _names(db_path) == ["on-loop"]  # committed (by the writer thread)
        assert db.batches == before + 1
    finally:
        await db.close()


async def test_a_busy_writer_takes_the_op_on_its_thread(db_path: Path):
    db = await Database.open(str(db_path))
    inside, let_go = threading.Event(), threading.Event()
    try:
        def hold(conn: sqlite3.Connection) -> None:
            inside.set()
            let_go.wait(60)

        # A batch with the writer thread: the op waits for it and runs there.
        held = asyncio.create_task(db.write(hold))
        await asyncio.to_thread(inside.wait, 30)
        threads: list[str] = []
        behind = asyncio.create_task(db.write_on_loop(_add("behind-a-batch", threads)))
        await asyncio.sleep(0)
        assert threads == []  # not run on the loop
        let_go.set()
        await asyncio.wait_for(held, 30)
        assert await asyncio.wait_for(behind, 30) == "behind-a-batch"
        assert threads == ["db-writer"]

        # A write asked in the same turn (waiting in the outbox): behind it, on the thread.
        threads.clear()
        first = asyncio.ensure_future(db.write(_add("first", threads)))
        second = asyncio.ensure_future(db.write_on_loop(_add("second", threads)))
        assert await asyncio.wait_for(asyncio.gather(first, second), 30) == ["first", "second"]
        assert threads == ["db-writer", "db-writer"]
        assert _names(db_path) == ["behind-a-batch", "first", "second"]
    finally:
        let_go.set()
        await db.close()


async def test_a_held_lock_is_waited_for_and_writes_asked_meanwhile_commit_after_in_order(
    db_path: Path,
):
    db = await Database.open(str(db_path))
    other = _locked_by_another_connection(db_path)
    try:
        order: list[tuple[str, str, list[str]]] = []

        def step(name: str):
            def op(conn: sqlite3.Connection) -> str:
                conn.execute(INSERT, (name,))
                # What another connection sees committed when this op runs.
                order.append((name, threading.current_thread().name, _names(db_path)))
                return name
            return op

        claim = asyncio.create_task(db.write_on_loop(step("claim")))
        await _until(lambda: db._lock_wait is not None, "the claim waits for the lock")
        # Asked while the loop holds the writer (waiting for the lock): they wait.
        later = [asyncio.create_task(db.write(step(f"later-{i}"))) for i in range(3)]
        ticks = 0
        while ticks < 20:  # the loop runs on while the claim waits
            await asyncio.sleep(0)
            ticks += 1
        assert not claim.done() and not any(t.done() for t in later)
        assert order == []
        other.execute("INSERT INTO queues (name, updated_at) VALUES ('other', 0)")
        other.execute("COMMIT")
        assert await asyncio.wait_for(claim, 30) == "claim"
        assert await asyncio.wait_for(asyncio.gather(*later), 30) == [
            "later-0", "later-1", "later-2"]
        loop_thread = threading.current_thread().name
        assert [(n, t) for n, t, _ in order] == [
            ("claim", loop_thread), ("later-0", "db-writer"), ("later-1", "db-writer"),
            ("later-2", "db-writer")]
        # The claim ran after the other connection's commit; the later writes after the
        # claim's COMMIT (and together, in one transaction, in the order asked).
        assert order[0][2] == ["other"]
        assert all(seen == ["other", "claim"] for _, _, seen in order[1:])
        assert _names(db_path) == ["other", "claim", "later-0", "later-1", "later-2"]
    finally:
        other.close()
        await db.close()


async def test_another_localflow_writers_release_ends_the_wait_on_the_loop(db_path: Path):
    holder = await Database.open(str(db_path))
    waiter = await Database.open(str(db_path))
    # Without the release signal (the FIFO read on the loop) it would sleep two minutes.
    waiter.LOCK_WAIT_FIRST = waiter.LOCK_WAIT_MOST = 120.0
    waiter.busy_seconds = 240.0
    inside, let_go = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        conn.execute(INSERT, ("held",))
        inside.set()
        let_go.wait(60)

    try:
        held = asyncio.create_task(holder.write(hold))
        await asyncio.to_thread(inside.wait, 30)
        waiting = asyncio.create_task(waiter.write_on_loop(_add("after")))
        await _until(lambda: waiter._lock_wait is not None, "the waiter waits on its FIFO")
        let_go.set()
        await asyncio.wait_for(held, 30)
        assert await asyncio.wait_for(waiting, 30) == "after"  # long before the sleep's end
        assert _names(db_path) == ["held", "after"]
        # And the holder's next write, behind nothing: its own loop path, after ours.
        assert await asyncio.wait_for(holder.write_on_loop(_add("again")), 30) == "again"
    finally:
        let_go.set()
        await holder.close()
        await waiter.close()


async def test_storage_busy_at_the_deadline_then_writes_work(db_path: Path):
    db = await Database.open(str(db_path), busy_seconds=0.2)
    other = _locked_by_another_connection(db_path)
    try:
        with pytest.raises(StorageBusy, match="stayed locked"):
            await asyncio.wait_for(db.write_on_loop(_add("never")), 30)
        other.execute("COMMIT")
        assert await db.write(_add("plain")) == "plain"
        assert await db.write_on_loop(_add("on-loop")) == "on-loop"
        assert _names(db_path) == ["plain", "on-loop"]
    finally:
        other.close()
        await db.close()


async def test_an_op_that_raises_rolls_back_and_later_writes_work(db_path: Path):
    db = await Database.open(str(db_path))
    hooks: list[str] = []
    try:
        def fails(conn: sqlite3.Connection) -> None:
            conn.execute(INSERT, ("rolled-back",))
            db.before_commit(lambda: hooks.append("ran"))
            raise ValueError("op failed")

        with pytest.raises(ValueError, match="op failed"):
            await db.write_on_loop(fails)
        assert hooks == []  # its hooks never ran (nor run with the next transaction)

        def bad_sql(conn: sqlite3.Connection) -> None:
            conn.execute(INSERT, ("also-rolled-back",))
            conn.execute(INSERT, ("also-rolled-back",))  # the primary key: IntegrityError

        with pytest.raises(sqlite3.IntegrityError):
            await db.write_on_loop(bad_sql)
        assert await db.write_on_loop(_add("on-loop")) == "on-loop"
        assert await db.write(_add("plain")) == "plain"
        assert hooks == []
        assert _names(db_path) == ["on-loop", "plain"]
    finally:
        await db.close()


async def test_close_and_cancel_end_a_wait_for_the_lock(db_path: Path):
    other = _locked_by_another_connection(db_path)
    db = await Database.open(str(db_path), busy_seconds=120.0)
    try:
        cancelled = asyncio.create_task(db.write_on_loop(_add("cancelled")))
        await _until(lambda: db._lock_wait is not None, "the write waits for the lock")
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # The writer is free again: a plain write waits for the lock on the writer thread.
        plain = asyncio.create_task(db.write(_add("plain")))
        waiting = asyncio.create_task(db.write_on_loop(_add("waiting")))
        await _until(lambda: not plain.done() and db._outbox == [] and db._in_flight,
                     "the plain write is with the writer thread")
        other.execute("COMMIT")
        assert await asyncio.wait_for(plain, 30) == "plain"
        assert await asyncio.wait_for(waiting, 30) == "waiting"

        other.execute("BEGIN IMMEDIATE")
        stuck = asyncio.create_task(db.write_on_loop(_add("stuck")))
        await _until(lambda: db._lock_wait is not None, "the write waits for the lock")
        await asyncio.wait_for(db.close(), 30)  # long before busy_seconds
        with pytest.raises(StorageUnavailable):
            await stuck
        other.execute("COMMIT")
        assert _names(db_path) == ["plain", "waiting"]
    finally:
        other.close()
        await db.close()  # (already closed: nothing more to do)
