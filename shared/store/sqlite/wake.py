"""Cross-process wake-ups through Unix datagram sockets beside the database file.

The API and the worker may run in two containers; what they share is the volume holding the
database. Each worker binds a socket in `<db>.wake/`; whoever commits runnable work sends one
byte to every socket there. A worker so wakes within a millisecond instead of at its next
poll, and an idle worker sleeps in the kernel, using no CPU. If anything here fails (say, a
path too long for a socket), workers still poll, so this only ever makes things faster.

A second directory, `<db>.tasks/`, carries task changes (a status moved) to the processes that
wait for tasks (GET /api/tasks/{id}?wait=, shared/task_watch.py); the store sends them itself
after each such commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("localflow.wake")
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the NUL


def wake_dir(db_path: str, kind: str = "wake") -> Path:
    """`<db>.wake` (runnable work: workers, schedulers) or `<db>.tasks` (task changes)."""
    return Path(os.path.abspath(db_path) + "." + kind)


class DirListing:
    """The names in a directory of sockets or FIFOs that a sender writes to after commits.

    watch_mtime: listed again whenever the directory's mtime moved (a stat per call, so a
    new name is seen at once; a listing per call was ~1 % of a busy API's samples, py-spy
    under wrk); and in any case at least every RELIST_SECONDS, so a name added within the
    same clock tick as the last listing (the mtime would not move) is found too. Without
    watch_mtime, only every RELIST_SECONDS: no system call at all in between, which matters on
    a writer thread, where each call gives up the GIL and waits to get it back from a busy
    event loop."""

    RELIST_SECONDS = 0.5

    def __init__(self, path: Path, *, watch_mtime: bool = True) -> None:
        self.path = path
        self.watch_mtime = watch_mtime
        self._names: list[str] = []
        self._stamp = 0  # the directory's mtime (ns) at the last listing
        self._listed_at = float("-inf")  # time.monotonic() of the last listing

    def names(self) -> list[str]:
        now = time.monotonic()
        due = now - self._listed_at >= self.RELIST_SECONDS
        if not due and not self.watch_mtime:
            return self._names
        try:
            stamp = os.stat(self.path).st_mtime_ns
            if due or stamp != self._stamp:
                self._names = os.listdir(self.path)
                self._stamp, self._listed_at = stamp, now
        except OSError:
            self._names = []
        return self._names

    def forget(self) -> None:
        """A name listed is gone (its process was killed): list again next time."""
        self._listed_at = float("-inf")


class WakeNotifier:
    """Sends wake-ups: the first call in an event-loop turn sends at once; further calls in
    the same turn are coalesced into one more send at the turn's end.

    At once, because the caller has just committed and a waiting worker should start its
    claim now: deferring the send to the next turn (call_soon) put it behind the rest of the
    caller's turn, the HTTP answer's encoding and socket write included (p50 0.8 ms of a 2.6 ms
    pickup, bench/pickup_trace.py). The trailing send covers commits whose callers ran after
    the first send in that turn; a busy API so sends at most two per turn, not one per task.
    """

    def __init__(self, db_path: str, kind: str = "wake") -> None:
        self.dir = wake_dir(db_path, kind)
        self._listing = DirListing(self.dir)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._in_turn = False  # sent in this loop turn; the turn's end is scheduled
        self._again = False  # called again since: send once more at the turn's end

    def __call__(self) -> None:
        if self._in_turn:
            self._again = True
            return
        try:
            asyncio.get_running_loop().call_soon(self._turn_end)
            self._in_turn = True
        except RuntimeError:  # no loop (a synchronous caller): just send
            pass
        self._send()

    def _turn_end(self) -> None:
        self._in_turn = False
        if self._again:
            self._again = False
            self._send()

    def send_now(self) -> None:
        """Send at once, without the loop: from the writer thread just before a commit
        (Database.before_commit). A notifier used this way is used on that thread only."""
        self._send()

    def _send(self) -> None:
        for name in self._listing.names():
            path = str(self.dir / name)
            try:
                self._sock.sendto(b"!", path)
            except BlockingIOError:
                pass  # its buffer is full of wake-ups already: it will wake
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    # The worker that bound it is gone (killed without cleanup).
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    self._listing.forget()

    def close(self) -> None:
        self._sock.close()


class WakeListener:
    """A worker's socket: `on_wake` is called whenever someone sends a wake-up."""

    def __init__(
        self, db_path: str, name: str, on_wake: Callable[[], None], kind: str = "wake"
    ) -> None:
        self.path = wake_dir(db_path, kind) / name
        self.on_wake = on_wake
        self._sock: socket.socket | None = None

    def start(self) -> bool:
        if len(str(self.path)) > _MAX_SOCKET_PATH:
            log.warning("wake socket path too long; relying on polling", path=str(self.path))
            return False
        try:
            # 0700: the socket names reveal nothing, but nobody else should wake (or flood)
            # our workers.
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(str(self.path))
        except OSError as exc:
            log.warning("cannot bind wake socket; relying on polling", error=str(exc))
            return False
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        with contextlib.suppress(BlockingIOError):
            while self._sock.recv(64):
                pass
        self.on_wake()

    def stop(self) -> None:
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(OSError):
            self.path.unlink()


class SharedWakeListener:
    """The process's one Listener (shared/store/base.py) on SQLite: one socket, any number of
    subscribers (the worker and the scheduler). Bound on the first subscribe, closed on the
    last unsubscribe; a socket that cannot be bound leaves everyone polling.

    wake_on_start: wake the subscribers once just after binding, as the task listener must
    (shared/store/base.py Store.task_listener)."""

    def __init__(self, db_path: str, kind: str = "wake", *, wake_on_start: bool = False) -> None:
        self.db_path = db_path
        self.kind = kind
        self.wake_on_start = wake_on_start
        self._subscribers: list[Callable[[], None]] = []
        self._socket: WakeListener | None = None
        self._woken = asyncio.Event()

    def subscribe(self, on_wake: Callable[[], None]) -> Callable[[], None]:
        self._subscribers.append(on_wake)
        self._ensure_started()

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(on_wake)
            if not self._subscribers:
                self.close()

        return unsubscribe

    async def wait(self, seconds: float) -> bool:
        unsubscribe = self.subscribe(lambda: None)  # keeps the socket bound while waiting
        event = self._woken
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            unsubscribe()

    def _ensure_started(self) -> None:
        if self._socket is None:
            name = f"{os.getpid()}-{secrets.token_hex(3)}"
            self._socket = WakeListener(self.db_path, name, self._on_wake, self.kind)
            if self._socket.start() and self.wake_on_start:
                asyncio.get_running_loop().call_soon(self._on_wake)

    def _on_wake(self) -> None:
        # A fresh event per wake-up: every wait() pending now returns, later ones wait again.
        event, self._woken = self._woken, asyncio.Event()
        event.set()
        for on_wake in list(self._subscribers):
            try:
                on_wake()
            except Exception:
                log.exception("wake-up subscriber failed")

    def close(self) -> None:
        if self._socket is not None:
            sock, self._socket = self._socket, None
            sock.stop()
