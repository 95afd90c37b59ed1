"""The SQLite store's cross-process wake-ups (shared/store/sqlite/wake.py) over real Unix
datagram sockets: when a committer's wake-up leaves, and how calls in one turn coalesce."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

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
