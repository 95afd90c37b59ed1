"""The SQLite store's cross-process wake-ups (shared/store/sqlite/wake.py) over real Unix
datagram sockets: when a committer's wake-up leaves, and how calls in one turn coalesce."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import pytest

from shared.store.sqlite.wake import WakeNotifier, wake_dir


def _bound(db: Path, name: str) -> socket.socket:
    """A worker's socket, as WakeListener binds it, read without an event loop."""
    folder = wake_dir(str(db))
    folder.mkdir(mode=0o700, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(folder / name))
    sock.setblocking(False)
    return sock


def _received(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(64)
        except BlockingIOError:
            return count
        count += 1


async def test_the_first_wake_up_leaves_before_the_caller_s_turn_ends(tmp_path: Path) -> None:
    # A committer (the API after a submit) goes on to encode and write its answer in the same
    # turn; a waiting worker must not wait for that (pickup latency, issue 10).
    db = tmp_path / "x.db"
    worker = _bound(db, "w1")
    notify = WakeNotifier(str(db))
    try:
        notify()
        assert _received(worker) == 1  # no await since the call: sent at once
        notify()
        notify()  # more commits in the same turn: folded into one send at the turn's end
        assert _received(worker) == 0
        await asyncio.sleep(0)  # the turn ends
        assert _received(worker) == 1
        await asyncio.sleep(0)
        notify()  # a new turn: at once again
        assert _received(worker) == 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert _received(worker) == 0  # nothing called since: no trailing send
    finally:
        notify.close()
        worker.close()


def test_without_an_event_loop_each_call_sends(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    worker = _bound(db, "w1")
    notify = WakeNotifier(str(db))
    try:
        notify()
        notify()
        assert _received(worker) == 2
    finally:
        notify.close()
        worker.close()


async def test_a_submit_wakes_workers_before_its_commit(db_path: Path, queue) -> None:
    # The store's own insert sends the wake-up from inside its write transaction (just before
    # COMMIT), so a waiting worker's claim starts while the commit's fsync runs; the worker's
    # BEGIN IMMEDIATE waits for the lock, so it still cannot see the row before the commit.
    from shared.schemas import TaskCreate

    worker = _bound(db_path, "w1")
    seen_at_send: list[bool] = []
    # Read from the writer thread, where the wake-up is sent.
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    original = WakeNotifier._send

    def send(self: WakeNotifier) -> None:
        if self.dir == wake_dir(str(db_path)):  # a worker's wake-up (not a task change)
            # At the send, another connection (another process's worker) sees no task yet.
            seen_at_send.append(other.execute("SELECT count(*) FROM tasks").fetchone()[0] > 0)
        original(self)

    WakeNotifier._send = send  # type: ignore[method-assign]  # observes, then sends
    try:
        new = queue.prepare(TaskCreate(type="shell", payload={"command": "true"}))
        await queue.store.insert_tasks([new], queue.clock.now())  # the store alone: no notify()
        assert _received(worker) == 1
        assert seen_at_send == [False]
        assert other.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1  # committed
    finally:
        WakeNotifier._send = original  # type: ignore[method-assign]
        other.close()
        worker.close()


async def test_before_commit_runs_once_after_the_statements_and_never_after_a_failure(
    db_path: Path, store
) -> None:
    calls: list[tuple[bool, int]] = []

    def hook() -> None:
        conn = store.db._writer  # on the writer thread, inside the transaction
        calls.append((conn.in_transaction,
                      conn.execute("SELECT count(*) FROM queues").fetchone()[0]))

    def op(conn: sqlite3.Connection) -> None:
        store.db.before_commit(hook)
        store.db.before_commit(hook)  # asked twice: called once
        conn.execute("INSERT INTO queues (name, updated_at) VALUES ('q1', 0)")

    await store.db.write(op)
    assert calls == [(True, 1)]

    def failing(conn: sqlite3.Connection) -> None:
        store.db.before_commit(hook)
        raise sqlite3.IntegrityError("refused")

    with pytest.raises(Exception, match="refused"):
        await store.db.write(failing)
    await store.db.write(lambda conn: None)
    assert calls == [(True, 1)]  # not carried into the next transaction either
