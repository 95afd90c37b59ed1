"""Group commit for the PostgreSQL store: writes of one kind that arrive together share one
statement, so one round trip, one transaction and one commit (one WAL flush) serve them all.

Why: on PostgreSQL every transaction costs round trips and a commit, and a worker with eight
slots finishes eight no-op tasks in the same event-loop turn. Written one by one they were
eight transactions of four round trips each; coalesced, they are one statement over arrays
(shared/sql/postgres/queue.sql). This is what the SQLite store's writer thread does
(shared/store/sqlite/database.py), with the difference that PostgreSQL needs no single
writer: each kind has its own coalescer, and different kinds run side by side on pooled
connections.

How: the first call of a turn starts a flush task; calls made before it runs (the rest of
that turn) join its batch; calls made while a flush is in flight wait for the next one, which
starts as soon as the first returns. So a lone call waits for nothing, and under load the
batches grow by themselves. If a batch fails for a reason tied to its data (not to the
connection), each call is run again alone, so only the call at fault gets the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

In = TypeVar("In")
Out = TypeVar("Out")

# Errors that say nothing about one call's data: every call of the batch gets the same one
# (running each alone would only meet it again, once per call).
_WHOLE_BATCH = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


class Coalescer(Generic[In, Out]):
    """`await submit(item)` -> flush([... item ...])[its index]; see the module docstring.

    `flush(items)` runs one statement for the whole batch and returns one result per item,
    in order. At most one flush of a coalescer is in flight. A batch holds items up to a
    total `size` of `max_batch` (each item counts 1 unless `size` says otherwise), and at
    least one item however large.
    """

    def __init__(
        self, flush: Callable[[Sequence[In]], Awaitable[list[Out]]], *, max_batch: int = 500,
        name: str = "coalescer", size: Callable[[In], int] = lambda _: 1,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._size = size
        self._name = name
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # flushes run (tests and the bench read it)

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._drain(), name=f"postgres-{self._name}"
            )
        return await future

    async def wait_idle(self) -> None:
        """Return once every call made so far has its answer (Store.close waits here)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _drain(self) -> None:
        batch: list[tuple[In, asyncio.Future[Out]]] = []
        try:
            while self._pending:
                batch = self._take()
                # A caller that gave up (cancelled) before its batch went out writes nothing.
                live = [(item, fut) for item, fut in batch if not fut.done()]
                if live:
                    await self._run(live)
                batch = []
        finally:
            self._flusher = None
            # Only if this task itself was cancelled (the loop is closing): no caller may be
            # left waiting for an answer that will never come.
            for _, fut in batch + self._pending:
                fut.cancel()
            self._pending.clear()

    def _take(self) -> list[tuple[In, asyncio.Future[Out]]]:
        total, count = 0, 0
        for item, _ in self._pending:
            total += self._size(item)
            if count and total > self._max_batch:
                break
            count += 1
        batch = self._pending[:count]
        del self._pending[:count]
        return batch

    async def _run(self, live: list[tuple[In, asyncio.Future[Out]]]) -> None:
        self.batches += 1
        try:
            results = await self._flush([item for item, _ in live])
        except Exception as exc:
            if len(live) == 1 or isinstance(exc, _WHOLE_BATCH):
                for _, fut in live:
                    _settle(fut, exc=exc)
                return
            # Something in one call's data (a value the server refused): run each alone, so
            # the others still commit and only that call fails.
            for one in live:
                await self._run([one])
            return
        for (_, fut), result in zip(live, results, strict=True):
            _settle(fut, result=result)


def _settle(fut: asyncio.Future[Out], *, result: Out | None = None,
            exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)  # type: ignore[arg-type]
