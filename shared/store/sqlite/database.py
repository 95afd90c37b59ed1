"""SQLite access: one writer connection with group commit, one reader connection.

Why a single writer per process: SQLite allows one writer at a time anyway. Funnelling every
write through one thread lets many small writes (task submissions, acks, claims) share one
BEGIN IMMEDIATE ... COMMIT, so one fsync covers them all; and lets us wait for a database
another process holds until that process lets go (shared/store/sqlite/unlock.py), with short
sleeps as the bound, instead of SQLite's busy handler, whose sleeps grow to 100 ms.

Writes are plain functions of a sqlite3 connection, run on that one writer thread: a whole
batch of them costs one hop between the event loop and the thread, not one per statement. An
idle worker's claim, when the thread has nothing to do, runs on the event loop itself with only
its COMMIT on the thread (write_on_loop): no hop at all before its tasks start.
Reads go through aiosqlite on their own connection (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import aiosqlite
import structlog

from shared.errors import SchemaNotReady, SchemaTooNew, StorageBusy, StorageFull, StorageUnavailable
from shared.store.sqlite import migrations
from shared.store.sqlite.unlock import LoopWait, UnlockSignal

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], T]
# Writes of one kind that share a transaction, run as one call with all their items (one
# statement over a batch instead of a statement per item): returns one result per item.
GroupOp = Callable[[sqlite3.Connection, list[Any]], list[Any]]

log = structlog.get_logger("localflow.db")
_STOP = object()
# The COMMIT of a transaction write_on_loop began and ran on the event loop.
_COMMIT_HELD = object()


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
    # Waiting for another process's write lock: first wait, and the longest, between tries.
    # Another LocalFlow writer's release ends a wait early (shared/store/sqlite/unlock.py), so
    # these bound only a holder that is not LocalFlow.
    LOCK_WAIT_FIRST = 0.0002
    LOCK_WAIT_MOST = 0.005

    def __init__(self, path: str, *, synchronous: str = "FULL", busy_seconds: float = 30.0):
        self.path = path
        self.synchronous = synchronous
        self.busy_seconds = busy_seconds
        self._writer: sqlite3.Connection | None = None  # used on the writer thread only
        self._reader: aiosqlite.Connection | None = None
        # Writes go to the writer thread once per turn of the event loop (_hand_over), answers
        # straight back to the loop (call_soon_threadsafe): one hop each way. Through an
        # asyncio task and an executor the way in cost twice as much, on the path of every
        # pickup (bench/README.md, "Session 5: the writer's hops and the lock hand-off").
        # Once per turn, not per write: a writer woken by a turn's first write would take it
        # alone, and the turn's other 63 submissions would wait for the next commit.
        self._outbox: list[tuple[Any, asyncio.Future[Any]]] = []
        self._requests: queue.SimpleQueue[list[tuple[Any, asyncio.Future[Any]]]] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        # A batch is with the writer: what the loop asks for meanwhile waits in _outbox and
        # goes over when the batch's answers come back (_deliver), as one batch. The writer
        # so never starts a batch of its own accord while the loop is still answering: that
        # made the threads take turns on the GIL (bench/README.md, "Batches back to back on
        # the writer thread": reverted); and it waits for work in one place only (a second
        # wait, for the loop's go-ahead, cost it one more GIL round trip per batch).
        self._in_flight = False  # loop only
        self.batches = 0  # committed write transactions (exposed as a metric)
        # Used by whoever holds the connection: the writer thread, or the loop (write_on_loop).
        self._before_commit: list[Callable[[], None]] = []
        self._unlocks = UnlockSignal(path)  # as _before_commit
        self._lock_wait: LoopWait | None = None  # write_on_loop waits for another's lock

    @classmethod
    async def open(cls, path: str, **kwargs: Any) -> Database:
        """Open a migrated database; raises SchemaNotReady if `localflow migrate` is needed."""
        db = cls(path, **kwargs)
        await db._connect()
        return db

    async def _connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._writer_main, name="db-writer", daemon=True)
        self._thread.start()
        self._accepting = True
        try:
            self._writer = await self._call(self._open_writer)
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
        self._unlocks.open()
        return conn

    async def close(self) -> None:
        if self._accepting:
            # The stop comes after every queued write, so each caller still gets an answer;
            # the writer thread closes its connection and ends. A claim waiting on the loop
            # for another process's lock (write_on_loop) gives up now: the stop waits behind
            # it, and must not wait for that lock's deadline.
            self._accepting = False
            if self._lock_wait is not None:
                self._lock_wait.stop()
            await self._submit(_STOP)
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    async def release_memory(self) -> None:
        """Free the writer's and the reader's page caches (`PRAGMA shrink_memory`: SQLite
        frees every cached page it does not need now; the next reads refill it from the OS's
        file cache). On the writer's own thread, between two write batches."""
        writer = self._writer
        if writer is not None and self._accepting:
            with contextlib.suppress(sqlite3.Error, StorageUnavailable):
                await self._call(functools.partial(writer.execute, "PRAGMA shrink_memory"))
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
        if not self._accepting:
            raise StorageUnavailable(f"the database {self.path} is closed")
        return await self._submit(op)

    async def write_on_loop(self, op: WriteOp[T]) -> T:
        """Like write(), but if the writer thread is idle (no batch with it, none waiting), op
        runs on the event loop itself: BEGIN IMMEDIATE, op and the before-commit hooks here,
        and only the COMMIT (with its fsync) on the writer thread. For an idle worker's claim
        (issue 10, pickup): its tasks reach the loop without the two thread hops (loop ->
        writer, writer -> loop) of write(); bench/README.md, "Session 7: the idle claim on
        the event loop". If the writer is busy, this is write(op).

        op blocks the event loop while it runs: only short ops. An idle worker's claim is
        ~20-40 us a task; at the start of a burst it may take a few hundred (its slots and
        what it may hold ahead, worker/pool.py `_room`), a few ms of a loop with nothing of
        its own running yet (idle: no handler in flight).

        Why the connection is never used by two threads at once: _in_flight is True while a
        batch is with the writer thread, and set back only on the loop, by _deliver, once the
        thread has answered everything it was given; the thread then touches the connection
        (and the unlock signal) no more until the loop hands it the next batch. So when the
        loop finds _in_flight False and nothing in _outbox, the thread is idle, and setting
        _in_flight here keeps it so: every write asked meanwhile waits in _outbox, as it does
        behind a batch, and goes over after this transaction's COMMIT (_deliver), in order.
        The COMMIT itself is handed over the way a batch is, alone, and the loop does not
        touch the connection again until its answer is back.
        """
        if not self._accepting:
            raise StorageUnavailable(f"the database {self.path} is closed")
        if self._in_flight or self._outbox:
            return await self._submit(op)
        conn = self._writer
        assert conn is not None and self._loop is not None
        self._in_flight = True
        committing: asyncio.Future[Any] | None = None
        try:
            await self._begin_on_loop(conn)
            try:
                result = op(conn)
                self._run_before_commit()
            except BaseException:
                self._before_commit.clear()
                _rollback(conn)
                self._unlocks.released()
                raise
            committing = self._loop.create_future()
            # At the loop's next turn, after what the hooks set going (an early start's
            # handlers): the writer thread woken now would take the GIL from the loop while it
            # starts them (placed -> handler 0.10 -> 0.39 ms at p50 in bench/pickup_trace.py).
            self._loop.call_soon(self._requests.put, [(_COMMIT_HELD, committing)])
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path) from None
        finally:
            if committing is None:  # nothing for the writer thread: what waited goes over
                self._in_flight = False
                self._hand_over()
        # Answered by _deliver, which then hands over what waited (a cancelled caller's
        # COMMIT still runs and is still answered: the writer is never left marked busy).
        await committing
        return result

    async def write_grouped(self, run_many: GroupOp, item: Any) -> Any:
        """Like write(), for an item that run_many(conn, items) writes together with the other
        items given the same run_many in the same transaction (in the position of the first).

        Why: a statement runs with a fixed cost per execution (with triggers on the table,
        ~25 us on this machine for a one-row UPDATE), so 64 completions as one statement cost
        far less writer time than 64 statements (bench/README.md, "Worker end to end").
        """
        if not self._accepting:
            raise StorageUnavailable(f"the database {self.path} is closed")
        return await self._submit(_Grouped(run_many, item))

    async def _call(self, fn: Callable[[], T]) -> T:
        """fn() on the writer thread, outside any transaction, between two batches."""
        if not self._accepting:
            raise StorageUnavailable(f"the database {self.path} is closed")
        return await self._submit(_Call(fn))

    def _submit(self, item: Any) -> asyncio.Future[Any]:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self._outbox:
            self._loop.call_soon(self._hand_over)
        self._outbox.append((item, future))
        return future

    def _hand_over(self) -> None:
        """On the loop (at the end of the turn that asked, or when a batch's answers are
        back): what waits in _outbox, to the writer thread, unless a batch is with it."""
        if self._outbox and not self._in_flight:
            outbox, self._outbox = self._outbox, []
            self._in_flight = True
            self._requests.put(outbox)

    def _writer_main(self) -> None:
        """The writer thread: take what is handed over (up to MAX_BATCH at a time), write it,
        hand the answers to the loop, again; until _STOP."""
        carry: list[tuple[Any, asyncio.Future[Any]]] = []
        while True:
            batch = carry or self._requests.get()
            with contextlib.suppress(queue.Empty):
                while len(batch) < self.MAX_BATCH:
                    batch = batch + self._requests.get_nowait()
            batch, carry = batch[:self.MAX_BATCH], batch[self.MAX_BATCH:]
            answers, stopping = self._run_items(batch)
            try:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._deliver, answers, not carry)
            except RuntimeError:  # the loop is closed: nobody is left to answer
                stopping = True
            if stopping:
                return

    def _run_items(
        self, batch: list[tuple[Any, asyncio.Future[Any]]],
    ) -> tuple[list[tuple[list[asyncio.Future[Any]], bool, bool, Any]], bool]:
        """On the writer thread: the batch's writes, in order, as transactions split only by
        calls (_Call) and the stop; each answer is (futures, grouped, ok, value)."""
        answers: list[tuple[list[asyncio.Future[Any]], bool, bool, Any]] = []
        writes: list[tuple[Any, asyncio.Future[Any]]] = []

        def flush() -> None:
            # A caller that gave up (cancelled) before its turn gets nothing written.
            live = [(op, fut) for op, fut in writes if not fut.done()]
            writes.clear()
            if not live:
                return
            calls, futures = _group(live)
            try:
                outcomes = self._run_batch(calls)
            except Exception as exc:  # the thread must outlive any batch, or writers hang
                log.exception("write batch failed")
                outcomes = [(False, exc)] * len(calls)
            for (futs, grouped), (ok, value) in zip(futures, outcomes, strict=True):
                answers.append((futs, grouped, ok, value))

        for item, fut in batch:
            if isinstance(item, _Call):
                flush()
                try:
                    answers.append(([fut], False, True, item.fn()))
                except Exception as exc:
                    answers.append(([fut], False, False, exc))
            elif item is _COMMIT_HELD:
                flush()
                ok, value = self._commit_held()
                answers.append(([fut], False, ok, value))
            elif item is _STOP:
                flush()
                # Closed before close() is answered: its caller may remove the files next.
                if self._writer is not None:
                    writer, self._writer = self._writer, None
                    writer.close()
                self._unlocks.close()
                answers.append(([fut], False, True, None))
                return answers, True
            else:
                writes.append((item, fut))
        flush()
        return answers, False

    def _deliver(
        self, answers: list[tuple[list[asyncio.Future[Any]], bool, bool, Any]], done: bool,
    ) -> None:
        """On the loop: each caller's answer; then, once the writer has nothing left of what
        it was given (done), everything asked for since goes over as the next batch, which it
        writes while the loop answers these callers."""
        try:
            for futures, grouped, ok, value in answers:
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
        finally:
            if done:
                self._in_flight = False
                self._hand_over()

    def before_commit(self, fn: Callable[[], None]) -> None:
        """From an op (on the writer thread, or on the loop for write_on_loop, on the same
        thread as the op): call fn once this transaction's statements are done, just before
        its COMMIT (once, however many ops ask).

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
            self._unlocks.released()
            if len(ops) == 1:
                return [(False, exc)]
            # One op failed: run each alone so the others still commit and only it fails.
            return [self._run_batch([op])[0] for op in ops]
        self._unlocks.released()
        self.batches += 1
        return results

    def _commit_held(self) -> tuple[bool, Any]:
        """On the writer thread: COMMIT the transaction write_on_loop ran on the loop."""
        conn = self._writer
        assert conn is not None
        try:
            conn.execute("COMMIT")
        except Exception as exc:  # SQLite rolled back, or we do: the claim never happened
            _rollback(conn)
            return False, exc
        finally:
            self._unlocks.released()
        self.batches += 1
        return True, None

    def _begin(self, conn: sqlite3.Connection) -> None:
        for seconds in self._tries_to_begin(conn):
            # Until the holder's release (shared/store/sqlite/unlock.py) or the sleep's end,
            # on the writer thread: the event loop keeps running.
            self._unlocks.wait(seconds)

    async def _begin_on_loop(self, conn: sqlite3.Connection) -> None:
        """_begin on the event loop (write_on_loop), which runs on while it waits (the unlock
        FIFO watched with add_reader). close() ends the wait: StorageUnavailable."""
        assert self._loop is not None
        tries = self._tries_to_begin(conn)
        seconds = next(tries, None)
        if seconds is None:  # begun at once
            return
        self._lock_wait = wait = LoopWait(self._unlocks, self._loop)
        try:
            while seconds is not None:
                await wait.sleep(seconds)
                if not self._accepting:
                    raise StorageUnavailable(f"the database {self.path} is closed")
                seconds = next(tries, None)
        finally:
            self._lock_wait = None
            wait.close()

    def _tries_to_begin(self, conn: sqlite3.Connection) -> Iterator[float]:
        """BEGIN IMMEDIATE, tried until it holds the write lock: while another process holds
        it, yields how long the caller may wait (on the unlock FIFO) before the next try;
        StorageBusy once busy_seconds have passed."""
        deadline = time.monotonic() + self.busy_seconds
        delay = self.LOCK_WAIT_FIRST
        drained = False
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
            if not drained:
                # Only releases from now on count; one that came between the failed BEGIN
                # and this drain is caught by trying once more before waiting.
                self._unlocks.drain()
                drained = True
                continue
            yield min(delay, max(0.0, deadline - time.monotonic()))
            delay = min(delay * 1.5, self.LOCK_WAIT_MOST)


class _Call:
    """A function for the writer thread to run outside any transaction (open, shrink)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


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
