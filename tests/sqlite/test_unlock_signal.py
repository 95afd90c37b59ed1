"""A writer waiting for SQLite's write lock goes on when another LocalFlow writer lets go
(shared/store/sqlite/unlock.py), not at the end of its sleep; the signal's files never
outlive the processes that made them, and nothing else in their directory is written."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from shared.store.sqlite.database import Database
from shared.store.sqlite.wake import wake_dir

REPO = Path(__file__).resolve().parents[2]


async def _until(check, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.01)


def _waits_for_a_release(db: Database) -> bool:
    """The writer thread is in its wait on the FIFO (select: pselect6, syscall 270 on
    x86_64 and 72 on arm64), not between two tries."""
    assert db._thread is not None
    syscall = Path(f"/proc/self/task/{db._thread.native_id}/syscall").read_text().split()[0]
    return syscall in ("270", "72")


async def test_a_waiting_writer_goes_on_at_another_writers_release(db_path: Path) -> None:
    holder = await Database.open(str(db_path))
    waiter = await Database.open(str(db_path))
    # Without the release signal the waiter would sleep two minutes between tries.
    waiter.LOCK_WAIT_FIRST = waiter.LOCK_WAIT_MOST = 120.0
    waiter.busy_seconds = 240.0
    inside, let_go = threading.Event(), threading.Event()

    def hold(conn) -> None:  # on the holder's writer thread, inside its transaction
        conn.execute("INSERT INTO queues (name, updated_at) VALUES ('held', 0)")
        inside.set()
        let_go.wait(60)

    try:
        held = asyncio.create_task(holder.write(hold))
        await asyncio.to_thread(inside.wait, 30)

        def add(conn) -> int:
            sql = "INSERT INTO queues (name, updated_at) VALUES ('after', 0)"
            return conn.execute(sql).rowcount

        waiting = asyncio.create_task(waiter.write(add))
        await _until(lambda: _waits_for_a_release(waiter), "the waiter waits on its FIFO")
        assert not waiting.done()
        let_go.set()
        await held
        assert await asyncio.wait_for(waiting, 30) == 1  # long before the sleep's end
        names = [r[0] for r in await waiter.fetch_all("SELECT name FROM queues ORDER BY name")]
        assert {"held", "after"} <= set(names)
    finally:
        let_go.set()
        await holder.close()
        await waiter.close()
    assert os.listdir(wake_dir(str(db_path), "unlock")) == []  # each removed its FIFO


async def test_fifos_of_killed_writers_are_removed_and_other_files_left_alone(
    db_path: Path,
) -> None:
    unlock_dir = wake_dir(str(db_path), "unlock")
    # A writer killed before anyone wrote to it: its FIFO has no reader.
    unlock_dir.mkdir(mode=0o700)
    os.mkfifo(unlock_dir / "dead-before", 0o600)
    # Something else that happens to sit there: never written to.
    stray = unlock_dir / "not-a-fifo"
    stray.write_bytes(b"")
    # A writer alive at the first release and killed before the second.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys; from shared.store.sqlite.unlock import UnlockSignal\n"
         "s = UnlockSignal(sys.argv[1]); assert s.open(); print('ready', flush=True)\n"
         "signal.pause()  # until the test kills it", str(db_path)],
        cwd=REPO, stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        db = await Database.open(str(db_path))
        try:
            def touch(conn) -> None:
                conn.execute("INSERT OR IGNORE INTO queues (name, updated_at) VALUES ('x', 0)")

            await db.write(touch)  # releases: opens the live FIFO, drops the dead one
            names = set(os.listdir(unlock_dir))
            assert "dead-before" not in names
            live = [n for n in names if n.startswith(f"{child.pid}-")]
            assert len(live) == 1
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            await db.write(touch)  # its write fails (no reader): forgotten and removed
            assert not (unlock_dir / live[0]).exists()
        finally:
            await db.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert stray.read_bytes() == b""
    assert sorted(os.listdir(unlock_dir)) == ["not-a-fifo"]
