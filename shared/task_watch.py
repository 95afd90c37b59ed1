"""Waiting for tasks to finish, for any number of callers at once, without polling per caller.

GET /api/tasks/{id}?wait=S parks its request here. A process has one TaskWatch: it subscribes
once to the store's task listener (shared/store/base.py Store.task_listener: a Unix datagram
on SQLite, LISTEN/NOTIFY on PostgreSQL, sent with every commit that moved a task's status in
any process) and, on each wake-up, reads the statuses of every task anyone waits for in one
query (Store.statuses), then answers the waiters whose task is final. So a thousand waiters on
idle tasks cost nothing but their sockets, and a finish is seen a few milliseconds after its
commit. Wake-ups never pile up: while a re-read runs, later ones fold into one more re-read.

A lost wake-up (a dropped PostgreSQL connection, a socket that could not be bound) must only
delay, never hang: while anyone waits, the statuses are also re-read every `fallback`
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from shared.schemas import TERMINAL
from shared.store.base import Store

log = structlog.get_logger("localflow.task_watch")

MAX_WAIT = 60.0  # seconds one request may wait (GET /api/tasks/{id}?wait=)
_READ_CHUNK = 5000  # ids per status read


class TaskWatch:
    def __init__(self, store: Store, *, fallback: float = 2.0) -> None:
        self.store = store
        self.fallback = fallback
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._again = False
        self._poller: asyncio.Task[None] | None = None
        self._closed = False
        self.refreshes = 0  # status re-reads done (tests and the bench read it)

    @property
    def waiting(self) -> int:
        """Requests waiting now."""
        return sum(len(futures) for futures in self._waiters.values())

    async def wait_final(self, task_id: str, seconds: float) -> bool:
        """Return True as soon as the task is succeeded, failed or cancelled (or gone), False
        after `seconds` if it is not. The caller then reads the task itself."""
        if self._closed:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(future)
        self._start()
        try:
            # Registered first, read second: a finish committed after this read wakes us, and
            # one committed before it is in what we read.
            status = (await self.store.statuses([task_id])).get(task_id)
            if status is None or status in TERMINAL:
                return True
            async with asyncio.timeout(seconds):
                await future
            return not self._closed
        except TimeoutError:
            return False
        finally:
            futures = self._waiters.get(task_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiters[task_id]

    def release(self) -> None:
        """Answer every waiter now (with the task as it is): the server is stopping."""
        self._closed = True
        self._resolve(list(self._waiters))

    async def close(self) -> None:
        self.release()
        for task in (self._poller, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            unsubscribe()

    # -- wake-ups ------------------------------------------------------------------------

    def _start(self) -> None:
        if self._unsubscribe is None:
            # Kept for the process's life: subscribing again for each lone waiter would make
            # PostgreSQL connect (and LISTEN) again each time.
            self._unsubscribe = self.store.task_listener().subscribe(self._on_wake)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name="task-watch-fallback"
            )

    def _on_wake(self) -> None:
        if not self._waiters:
            return
        if self._refreshing is not None and not self._refreshing.done():
            self._again = True  # fold into one more re-read after the running one
            return
        self._refreshing = asyncio.get_running_loop().create_task(
            self._refresh(), name="task-watch-refresh"
        )

    async def _refresh(self) -> None:
        while True:
            self._again = False
            ids = list(self._waiters)
            if not ids:
                return
            self.refreshes += 1
            try:
                finished = []
                for start in range(0, len(ids), _READ_CHUNK):
                    chunk = ids[start:start + _READ_CHUNK]
                    statuses = await self.store.statuses(chunk)
                    finished += [i for i in chunk if statuses.get(i) in TERMINAL
                                 or i not in statuses]
            except Exception as exc:  # storage trouble: the fallback poll tries again
                log.warning("re-reading waited-for tasks failed; retrying", error=str(exc))
                return
            self._resolve(finished)
            if not self._again:
                return

    async def _poll(self) -> None:
        while self._waiters and not self._closed:
            await asyncio.sleep(self.fallback)
            self._on_wake()

    def _resolve(self, task_ids: list[str]) -> None:
        for task_id in task_ids:
            for future in self._waiters.get(task_id, ()):
                if not future.done():
                    future.set_result(None)
