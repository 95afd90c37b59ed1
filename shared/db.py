"""SQLite access: one writer connection with group commit, one reader connection.

Why a single writer per process: SQLite allows one writer at a time anyway. Funnelling every
write through one task lets many small writes (task submissions, acks, claims) share one
BEGIN IMMEDIATE ... COMMIT, so one fsync covers them all, and lets us retry a busy database
with millisecond sleeps instead of SQLite's busy handler, whose sleeps grow to 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite
import structlog

from shared import migrate

T = TypeVar("T")
WriteOp = Callable[[aiosqlite.Connection], Awaitable[T]]

log = structlog.get_logger("localflow.db")
_STOP = object()


class DatabaseBusy(RuntimeError):
    """Another process held the write lock for longer than we are willing to wait."""


class SchemaNotReady(RuntimeError):
    pass


class Database:
    MAX_BATCH = 256

    def __init__(self, path: str, *, synchronous: str = "FULL", busy_seconds: float = 30.0):
        self.path = path
        self.synchronous = synchronous
        self.busy_seconds = busy_seconds
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: asyncio.Queue[Any] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self.batches = 0  # committed write transactions (exposed as a metric)

    @classmethod
    async def open(cls, path: str, **kwargs: Any) -> Database:
        """Open a migrated database; raises SchemaNotReady if `localflow migrate` is needed."""
        db = cls(path, **kwargs)
        await db._connect()
        return db

    async def _connect(self) -> None:
        self._writer = await self._connection(busy_ms=0)
        await self._writer.execute(f"PRAGMA synchronous={self.synchronous}")
        await self._writer.execute("PRAGMA foreign_keys=ON")
        self._reader = await self._connection(busy_ms=5000)
        version = await self.schema_version()
        newest = migrate.newest_version()
        if version != newest:
            await self.close()
            raise SchemaNotReady(
                f"database {self.path} is at schema version {version}, expected {newest}: "
                "run `localflow migrate` (serve, api and worker migrate on start)"
            )
        self._writer_task = asyncio.create_task(self._write_loop(), name="db-writer")

    async def _connection(self, busy_ms: int) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        await conn.execute("PRAGMA journal_mode=WAL")
        return conn

    async def close(self) -> None:
        if self._writer_task is not None:
            # The sentinel comes after every queued write, so each caller still gets an answer.
            task, self._writer_task = self._writer_task, None
            self._pending.put_nowait(_STOP)
            await task
        for conn in (self._writer, self._reader):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = None

    # -- reads ---------------------------------------------------------------------------

    async def fetch_all(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        assert self._reader is not None
        return list(await self._reader.execute_fetchall(sql, params))

    async def fetch_one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def schema_version(self) -> int:
        row = await self.fetch_one("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap cross-process change signal."""
        row = await self.fetch_one("PRAGMA data_version")
        return int(row[0]) if row else 0

    # -- writes --------------------------------------------------------------------------

    async def write(self, op: WriteOp[T]) -> T:
        """Run op inside a write transaction, possibly shared with other ops, and commit."""
        if self._writer_task is None:
            raise RuntimeError("database is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((op, future))
        return await future

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [await self._pending.get()]
            while not self._pending.empty() and len(batch) < self.MAX_BATCH:
                batch.append(self._pending.get_nowait())
            if batch[-1] is _STOP:
                stopping = True
                batch.pop()
            # A caller that gave up (cancelled) before its turn gets nothing written.
            live = [(op, fut) for op, fut in batch if not fut.done()]
            if live:
                await self._commit(live)

    async def _commit(self, batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]]) -> None:
        conn = self._writer
        assert conn is not None
        try:
            await self._begin(conn)
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        try:
            results = [await op(conn) for op, _ in batch]
            await conn.execute("COMMIT")
        except Exception as exc:
            await _rollback(conn)
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            # One op failed: run each alone so the others still commit and only it fails.
            for item in batch:
                await self._commit([item])
            return
        self.batches += 1
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    async def _begin(self, conn: aiosqlite.Connection) -> None:
        deadline = time.monotonic() + self.busy_seconds
        delay = 0.0005
        while True:
            try:
                await conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise DatabaseBusy(
                        f"the database {self.path} stayed locked by another process for "
                        f"{self.busy_seconds:.0f}s; try again"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.005)


async def _rollback(conn: aiosqlite.Connection) -> None:
    # SQLite may have rolled back already (e.g. after SQLITE_FULL); then ROLLBACK errors.
    with contextlib.suppress(sqlite3.OperationalError):
        await conn.execute("ROLLBACK")

