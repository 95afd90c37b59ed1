"""SQLite access: one writer connection with group commit, one reader connection.

Why a single writer per process: SQLite allows one writer at a time anyway. Funnelling every
write through one thread lets many small writes (task submissions, acks, claims) share one
BEGIN IMMEDIATE ... COMMIT, so one fsync covers them all; and lets us retry a busy database
with sub-millisecond sleeps instead of SQLite's busy handler, whose sleeps grow to 100 ms.

Writes are plain functions of a sqlite3 connection, run on that one writer thread: a whole
batch of them costs one hop between the event loop and the thread, not one per statement.
Reads go through aiosqlite on their own connection (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiosqlite
import structlog

from shared.errors import SchemaNotReady, SchemaTooNew, StorageBusy, StorageFull, StorageUnavailable
from shared.store.sqlite import migrations

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], T]
# Writes of one kind that share a transaction, run as one call with all their items (one
# statement over a batch instead of a statement per item): returns one result per item.
GroupOp = Callable[[sqlite3.Connection, list[Any]], list[Any]]

log = structlog.get_logger("localflow.db")
_STOP = object()


def fetchall(conn: sqlite3.Connection, sql: str, params: Any = ()) -> list[sqlite3.Row]:
    return conn.execute(sql, params).fetchall()


def storage_error(exc: sqlite3.Error, path: str) -> Exception:
    """The domain error for a sqlite3 error: callers above the store never see sqlite3."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        if "full" in text:  # SQLITE_FULL: "database or disk is full"
            return StorageFull(f"the disk holding {path} is full; nothing was written")
        if "locked" in text or "busy" in text:
            return StorageBusy(f"the database {path} is locked by another process; try again")
        if "unable to open" in text or "disk I/O" in text or "readonly" in text:
            return StorageUnavailable(f"cannot use the database {path}: {text}")
    return exc


class Database:
    MAX_BATCH = 512

    def __init__(self, path: str, *, synchronous: str = "FULL", busy_seconds: float = 30.0):
        self.path = path
        self.synchronous = synchronous
        self.busy_seconds = busy_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")
        self._writer: sqlite3.Connection | None = None  # used on the executor's thread only
        self._reader: aiosqlite.Connection | None = None
        self._pending: asyncio.Queue[Any] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self.batches = 0  # committed write transactions (exposed as a metric)
        self._before_commit: list[Callable[[], None]] = []  # writer thread only

    @classmethod
    async def open(cls, path: str, **kwargs: Any) -> Database:
        """Open a migrated database; raises SchemaNotReady if `localflow migrate` is needed."""
        db = cls(path, **kwargs)
        await db._connect()
        return db

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._writer = await loop.run_in_executor(self._executor, self._open_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = sqlite3.Row
            await self._reader.execute("PRAGMA busy_timeout=5000")
            version = await self.schema_version()
        except sqlite3.Error as exc:
            await self.close()
            raise storage_error(exc, self.path) from None
        newest = migrations.newest_version()
        if version != newest:
            await self.close()
            error = SchemaTooNew if version > newest else SchemaNotReady
            raise error(
                f"database {self.path} is at schema version {version}, expected {newest}: "
                + ("upgrade LocalFlow" if version > newest else
                   "run `localflow migrate` (serve, api and worker migrate on start)")
            )
        self._writer_task = asyncio.create_task(self._write_loop(), name="db-writer")

    def _open_writer(self) -> sqlite3.Connection:
        # busy_timeout=0: _begin retries a locked database itself, with shorter sleeps.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        # migrate() switched the file to WAL; switching again would want a lock that another
        # process may hold for long (start-up must not die over it), so only check here (with
        # the connection's default 5 s busy wait: a read, which WAL never blocks for long).
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            # Not WAL yet (a file migrate() did not make): switching needs the file's lock,
            # which another process starting at the same moment may hold: wait for it.
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_seconds * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        # Statement journals in memory: every INSERT or UPDATE of tasks fires triggers (event
        # log, kept counts, webhooks), so SQLite gives each statement of a batched transaction a
        # statement journal to undo it alone; past 64 KiB it spills to a file in /var/tmp and
        # writes each page there: ~23 pwrite calls per submitted task, ~40 us a row of a batch
        # insert (bench/README.md, "The single-submit fast path"). Nothing durable lives there:
        # a crash rolls back through the WAL as before. Only the writer: its statements are
        # bounded (batches, pruning in steps), while a reader's sort may still use files.
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    async def close(self) -> None:
        if self._writer_task is not None:
            # The sentinel comes after every queued write, so each caller still gets an answer.
            task, self._writer_task = self._writer_task, None
            self._pending.put_nowait(_STOP)
            await task
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.get_running_loop().run_in_executor(self._executor, writer.close)
        self._executor.shutdown(wait=False)

    async def release_memory(self) -> None:
        """Free the writer's and the reader's page caches (`PRAGMA shrink_memory`: SQLite
        frees every cached page it does not need now; the next reads refill it from the OS's
        file cache). On the writer's own thread, between two write batches."""
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(sqlite3.Error, RuntimeError):  # closed meanwhile
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, writer.execute, "PRAGMA shrink_memory")
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._reader.execute("PRAGMA shrink_memory")

    # -- reads ---------------------------------------------------------------------------

    async def fetch_all(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StorageUnavailable(f"the database {self.path} is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path) from None

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
        """Run op(conn) inside a write transaction, possibly shared with other ops, and commit.

        op runs on the writer thread: it must only use conn, and never block on the loop.
        """
        if self._writer_task is None:
            raise StorageUnavailable(f"the database {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((op, future))
        return await future

    async def write_grouped(self, run_many: GroupOp, item: Any) -> Any:
        """Like write(), for an item that run_many(conn, items) writes together with the other
        items given the same run_many in the same transaction (in the position of the first).

        Why: a statement runs with a fixed cost per execution (with triggers on the table,
        ~25 us on this machine for a one-row UPDATE), so 64 completions as one statement cost
        far less writer time than 64 statements (bench/README.md, "Worker end to end").
        """
        if self._writer_task is None:
            raise StorageUnavailable(f"the database {self.path} is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((_Grouped(run_many, item), future))
        return await future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
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
            if not live:
                continue
            calls, answers = _group(live)
            try:
                outcomes = await loop.run_in_executor(self._executor, self._run_batch, calls)
            except Exception as exc:  # the loop must outlive any batch, or writers would hang
                log.exception("write batch failed")
                outcomes = [(False, exc)] * len(calls)
            for (futures, grouped), (ok, value) in zip(answers, outcomes, strict=True):
                if ok and grouped:  # one result per item
                    for fut, one in zip(futures, value, strict=True):
                        if not fut.done():
                            fut.set_result(one)
                    continue
                for fut in futures:
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    elif isinstance(value, sqlite3.Error):
                        fut.set_exception(storage_error(value, self.path))
                    else:
                        fut.set_exception(value)

    def before_commit(self, fn: Callable[[], None]) -> None:
        """From an op, on the writer thread: call fn once this transaction's statements are
        done, just before its COMMIT (once, however many ops ask).

        For wake-ups (issue 10, pickup): a worker woken here starts its claim while this
        commit's fsync runs, instead of after it and the hop back to the event loop; its
        BEGIN IMMEDIATE waits for this transaction's lock, so it sees the new rows once they
        are committed and never before. If the commit fails, it finds nothing: a spurious
        wake-up, which waiters take anyway. fn must be quick and must not raise."""
        if fn not in self._before_commit:
            self._before_commit.append(fn)

    def _run_before_commit(self) -> None:
        hooks, self._before_commit = self._before_commit, []
        for fn in hooks:
            try:
                fn()
            except Exception:  # a wake-up that fails must not fail the commit
                log.exception("before-commit hook failed")

    def _run_batch(self, ops: list[WriteOp[Any]]) -> list[tuple[bool, Any]]:
        """On the writer thread: all ops in one transaction; if one fails, each alone."""
        conn = self._writer
        assert conn is not None
        try:
            self._begin(conn)
        except Exception as exc:
            return [(False, exc)] * len(ops)
        try:
            results = [(True, op(conn)) for op in ops]
            self._run_before_commit()
            conn.execute("COMMIT")
        except Exception as exc:
            self._before_commit.clear()
            _rollback(conn)
            if len(ops) == 1:
                return [(False, exc)]
            # One op failed: run each alone so the others still commit and only it fails.
            return [self._run_batch([op])[0] for op in ops]
        self.batches += 1
        return results

    def _begin(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self.busy_seconds
        delay = 0.0002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StorageBusy(
                        f"the database {self.path} stayed locked by another process for "
                        f"{self.busy_seconds:g}s; try again"
                    ) from exc
                time.sleep(delay)  # on the writer thread: the event loop keeps running
                delay = min(delay * 1.5, 0.005)


class _Grouped:
    __slots__ = ("item", "run_many")

    def __init__(self, run_many: GroupOp, item: Any) -> None:
        self.run_many, self.item = run_many, item


def _group(
    live: list[tuple[Any, asyncio.Future[Any]]],
) -> tuple[list[WriteOp[Any]], list[tuple[list[asyncio.Future[Any]], bool]]]:
    """The batch's calls in order, with the futures each answers; grouped items become one
    call (at the first one's place) whose result is a list, one per item."""
    calls: list[WriteOp[Any]] = []
    answers: list[tuple[list[asyncio.Future[Any]], bool]] = []
    groups: dict[GroupOp, tuple[list[Any], list[asyncio.Future[Any]]]] = {}
    for op, fut in live:
        if not isinstance(op, _Grouped):
            calls.append(op)
            answers.append(([fut], False))
            continue
        group = groups.get(op.run_many)
        if group is None:
            group = groups[op.run_many] = ([], [])
            calls.append(functools.partial(op.run_many, items=group[0]))
            answers.append((group[1], True))
        group[0].append(op.item)
        group[1].append(fut)
    return calls, answers


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may have rolled back already (e.g. after SQLITE_FULL); then ROLLBACK errors.
    with contextlib.suppress(sqlite3.OperationalError):
        conn.execute("ROLLBACK")
