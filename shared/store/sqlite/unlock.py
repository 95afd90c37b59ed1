"""A byte to every other LocalFlow writer after each commit: the write lock is free.

SQLite has no blocking wait for its write lock (this build lacks SQLITE_ENABLE_SETLK_TIMEOUT):
a writer that finds the file locked can only sleep and try again. A sleep that is too short
burns CPU beside the holder; one that is long enough oversleeps the holder's commit (0.1-0.3 ms
of every pickup, where the worker's claim waits for the API's insert to commit: bench/README.md,
"Session 5: the writer's hops and the lock hand-off"). So every LocalFlow writer keeps a FIFO in
`<db>.unlock/`, and after each COMMIT or ROLLBACK writes one byte to every other writer's
FIFO. A writer waiting for the lock waits on its FIFO, with its sleep as the timeout: it tries
again the moment a holder lets go, and a holder that is not LocalFlow (the sqlite3 shell, a
backup tool) is still waited for by the timeout alone.

A FIFO, not a datagram socket: bytes written while nobody waited pile up, and a FIFO drops them
all with one read (a socket needs a read per datagram). Everything here is best effort: if the
directory or a FIFO cannot be made, the writer sleeps as before. Used by one thread at a time:
the writer thread, or the event loop while it holds the writer's connection
(Database.write_on_loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import select
import stat
import time

import structlog

from shared.store.sqlite.wake import DirListing, wake_dir

log = structlog.get_logger("localflow.db")


class UnlockSignal:
    def __init__(self, db_path: str) -> None:
        self.dir = wake_dir(db_path, "unlock")
        self._name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._fd: int | None = None  # our FIFO, read side (opened read-write: never EOF)
        self._peers: dict[str, int] = {}  # the other writers' FIFOs, opened for writing
        self._skip: set[str] = set()  # listed names that are not writable FIFOs
        # A writer started since the last listing gets no bytes for up to RELIST_SECONDS
        # (its waits then end by their sleeps): no system call per commit for the listing.
        self._listing = DirListing(self.dir, watch_mtime=False)

    def open(self) -> bool:
        """Make our FIFO; False (and sleeps only) if the directory or FIFO cannot be made."""
        path, making = self.dir / self._name, self.dir / f".{self._name}"
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            # Made under a hidden name and opened before it takes its own, so no other writer
            # ever finds it without a reader (which means "killed": they remove it).
            os.mkfifo(making, 0o600)
            # The folder's group may write it too (the API and the worker as two users of one
            # group, docs/security.md); otherwise the owner only, whatever the umask.
            os.chmod(making, 0o600 | (self.dir.stat().st_mode & 0o060))
            # Read-write, so the FIFO always has a writer (us): no EOF, no hang-up to poll.
            self._fd = os.open(making, os.O_RDWR | os.O_NONBLOCK)
            os.rename(making, path)
        except OSError as exc:
            log.warning("no unlock signal; waiting for the write lock by sleeps alone",
                        path=str(path), error=str(exc))
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            with contextlib.suppress(OSError):
                making.unlink()
            return False
        return True

    def released(self) -> None:
        """After our COMMIT or ROLLBACK: a byte to every other writer (one that waits
        for the lock tries again now)."""
        for name, fd in list(self._refresh().items()):
            try:
                os.write(fd, b"!")
            except BlockingIOError:
                pass  # its FIFO is full of bytes already: it will see them
            except OSError:  # its reader is gone (killed): forget it
                self._forget(name, unlink=True)

    def fileno(self) -> int | None:
        """Our FIFO's read side, to watch on an event loop (LoopWait); None if there is none."""
        return self._fd

    def drain(self) -> None:
        """Drop what was written before now: only bytes written after this count."""
        if self._fd is not None:
            with contextlib.suppress(BlockingIOError):
                while len(os.read(self._fd, 4096)) == 4096:
                    pass

    def wait(self, seconds: float) -> None:
        """Until another writer releases the lock (since the last drain), or `seconds`."""
        if self._fd is None:
            time.sleep(seconds)
            return
        ready, _, _ = select.select([self._fd], [], [], seconds)
        if ready:
            self.drain()

    def close(self) -> None:
        for name in list(self._peers):
            self._forget(name, unlink=False)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
            with contextlib.suppress(OSError):
                (self.dir / self._name).unlink()

    def _refresh(self) -> dict[str, int]:
        """The other writers' FIFOs, opened once each (names that are not FIFOs, or that we
        may not write, are skipped until they go)."""
        names = {n for n in self._listing.names() if not n.startswith(".")} - {self._name}
        for name in set(self._peers) - names:
            self._forget(name, unlink=False)
        self._skip &= names
        for name in names - self._peers.keys() - self._skip:
            try:
                fd = os.open(self.dir / name, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nobody reads it: its writer was killed
                    with contextlib.suppress(OSError):
                        (self.dir / name).unlink()
                    self._listing.forget()
                else:
                    self._skip.add(name)
                continue
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                self._peers[name] = fd
            else:  # not ours to write into (a byte per commit would grow a file)
                os.close(fd)
                self._skip.add(name)
        return self._peers

    def _forget(self, name: str, *, unlink: bool) -> None:
        fd = self._peers.pop(name, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if unlink:
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()
            self._listing.forget()


class LoopWait:
    """One wait for the write lock on the event loop (Database.write_on_loop), which runs on
    meanwhile: sleep() is UnlockSignal.wait() for the loop. The FIFO is watched (add_reader)
    from the first sleep until close(), not added and removed per try; the loop's selector is
    level-triggered, so a byte that came before the watch began still wakes the first sleep.

    With the FIFO watched, a sleep lasts at least TIMER_FLOOR: uvloop's timers count whole
    milliseconds, so the first sleeps (0.2-0.45 ms) would end at the loop's next turn: three
    tries of BEGIN IMMEDIATE back to back, on the CPU the holder needs to finish its commit
    (bench/README.md, "Session 7": the API's commit was slower beside them). A LocalFlow
    holder's release ends any sleep at once; only a holder that is not LocalFlow is waited for
    up to 1 ms instead of 0.2. Without the FIFO the sleeps are as asked."""

    TIMER_FLOOR = 0.001

    def __init__(self, signal: UnlockSignal, loop: asyncio.AbstractEventLoop) -> None:
        self._signal, self._loop = signal, loop
        self._woken: asyncio.Future[None] | None = None
        self._readable = False
        self._watched: int | None = None

    async def sleep(self, seconds: float) -> None:
        """Until another writer releases the lock (since the last drain), `seconds`, or
        stop()."""
        fd = self._signal.fileno()
        if self._watched is None and fd is not None:
            self._loop.add_reader(fd, self._on_readable)
            self._watched = fd
        if self._watched is not None:
            seconds = max(seconds, self.TIMER_FLOOR)
        self._woken = self._loop.create_future()
        timer = self._loop.call_later(seconds, self.stop)
        try:
            await self._woken
        finally:
            timer.cancel()
            self._woken = None
        if self._readable:
            self._readable = False
            self._signal.drain()

    def stop(self) -> None:
        """End the current sleep (its timer; and Database.close(), which ends the wait)."""
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    def close(self) -> None:
        if self._watched is not None:
            self._loop.remove_reader(self._watched)
            self._watched = None

    def _on_readable(self) -> None:
        self._readable = True
        self.stop()
