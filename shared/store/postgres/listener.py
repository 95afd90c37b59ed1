"""Wake-ups over LISTEN/NOTIFY, on a connection of the listener's own.

Writers send `pg_notify('localflow', '')` inside the transaction that made work runnable
(shared/sql/postgres/queue.sql `notify`); PostgreSQL delivers it to every listening
connection, on every host, when that transaction commits. So a woken worker always finds the
work committed, and a rolled-back insert wakes nobody.

The connection can be lost (server restart, failover, pg_terminate_backend, a network cut).
The listener then reconnects on its own with capped, jittered backoff, and wakes everyone
once it is back, since notifications sent while it was away are gone. While it is away,
nobody stalls: every worker and scheduler also polls (shared/store/base.py Listener).
TCP keepalives and a periodic probe find a connection that died without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from shared.store import redact

log = structlog.get_logger("localflow.store.postgres.listener")

CHANNEL = "localflow"  # runnable work or a cancel: workers and schedulers
TASKS_CHANNEL = "localflow_tasks"  # a task's status changed (migrations/postgres/004)
_PROBE_SECONDS = 15.0  # with no notification for this long, check the connection is alive
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 5.0
# Ask the kernel to notice a peer that vanished (no FIN, no RST): ~25 s instead of hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}


class PostgresListener:
    """This process's one listener (Store.listener()); see shared/store/base.py Listener."""

    def __init__(self, url: str, channel: str = CHANNEL, *, wake_on_connect: bool = False) -> None:
        """wake_on_connect: wake everyone on the first connection too, not only on reconnects
        (the task listener: a change committed before LISTEN took effect is not missed)."""
        self.url = url
        self.channel = channel
        self.wake_on_connect = wake_on_connect
        self._subscribers: dict[int, Callable[[], None]] = {}
        self._next_key = 0
        self._task: asyncio.Task[None] | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.connected = asyncio.Event()  # set while LISTEN is in force (tests wait on it)
        self.received = 0  # notifications received (a change counter; tests and metrics)
        self.reconnects = 0  # connections made after the first
        self._closed = False
        self._ever_connected = False

    # -- the protocol --------------------------------------------------------------------

    def subscribe(self, on_wake: Callable[[], None]) -> Callable[[], None]:
        key = self._next_key
        self._next_key += 1
        self._subscribers[key] = on_wake
        self._ensure_running()

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)
            if not self._subscribers and not self._waiters:
                self._stop_soon()

        return unsubscribe

    async def wait(self, seconds: float) -> bool:
        self._ensure_running()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=max(seconds, 0.0))
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(future)
            if not future.done():
                future.cancel()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._drop_connection()

    # -- the loop ------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="postgres-listener"
        )

    def _stop_soon(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    def _wake(self) -> None:
        for on_wake in list(self._subscribers.values()):
            try:
                on_wake()
            except Exception:  # a subscriber's bug must not stop the wake-ups of the others
                log.exception("wake-up subscriber failed")
        for future in list(self._waiters):
            if not future.done():
                future.set_result(None)

    async def _run(self) -> None:
        delay = _BACKOFF_FIRST
        try:
            while True:
                try:
                    await self._listen()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    lost = self.connected.is_set()
                    if lost:  # it had worked: start the backoff afresh
                        delay = _BACKOFF_FIRST
                    self.connected.clear()
                    await self._drop_connection()
                    # Said once per outage; each further failed attempt only at debug level.
                    (log.warning if lost or not self._ever_connected else log.debug)(
                        "lost the PostgreSQL listener connection; reconnecting"
                        if lost else "PostgreSQL listener cannot connect; retrying",
                        db=redact(self.url), error=_one_line(exc), retry_in=round(delay, 2),
                    )
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
                    delay = min(delay * 2, _BACKOFF_MAX)
        finally:
            self.connected.clear()
            await self._drop_connection()

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=10, **KEEPALIVES
        )
        self._conn = conn
        await conn.execute(f"LISTEN {self.channel}")
        if self._ever_connected:
            self.reconnects += 1
            log.info("PostgreSQL listener reconnected", db=redact(self.url))
            self._wake()  # anything notified while we were away was lost: look now
        elif self.wake_on_connect:
            self._wake()
        self._ever_connected = True
        self.connected.set()
        while True:
            async for _ in conn.notifies(timeout=_PROBE_SECONDS):
                self.received += 1
                self._wake()
            # No notification for a while: make sure the connection is still there.
            await conn.execute("SELECT 1")

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def backend_pid(self) -> int | None:
        """The server process of the listening connection (tests terminate it)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
