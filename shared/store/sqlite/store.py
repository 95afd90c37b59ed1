"""The SQLite Store: today's queue and schedule SQL behind shared/store/base.py.

Writes are functions of a sqlite3 connection run on the Database's one writer thread, many
sharing one transaction (group commit, shared/store/sqlite/database.py); reads go through the
reader connection. /metrics reads on a third, read-only connection so a scrape never queues
behind an API read; the dashboard's counts and chart on a fourth, in short reads (see
count_tasks). Queries: shared/sql/sqlite/*.sql.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import aiosqlite
import msgspec
from msgspec import UNSET, UnsetType

from shared.audit import AuditEntry, AuditPage, entry_of_row, entry_row
from shared.errors import IdempotencyConflict
from shared.queue_schemas import QueueGate, QueueInfo
from shared.schedule_schemas import Schedule
from shared.schemas import (
    Attempt,
    QueuedView,
    Status,
    Task,
    TaskPage,
    to_datetime,
)
from shared.sql import Queries
from shared.store.base import (
    COUNTED_TABLES,
    QUEUE_SETTINGS_READ,
    TRANSFER_COLUMNS,
    Claimed,
    Depth,
    DueDelivery,
    DueSchedule,
    EventPage,
    EventStart,
    FailOutcome,
    Fire,
    FirePlan,
    Heartbeat,
    Imported,
    LiveOutput,
    NewTask,
    NextFire,
    PlanFire,
    QueueStats,
    ScheduleFields,
    ScheduleTiming,
    StorageInfo,
    TaskEvent,
    Throughput,
    TransferRow,
    TransferTable,
    WaitingTask,
    WorkerSeen,
    attach_attempts,
    attach_deliveries,
    fill_throughput,
    live_output_from,
    live_output_params,
    throughput_window,
)
from shared.store.claiming import (
    ClaimBudget,
    limited,
    most_urgent,
    per_queue_names,
    queue_overview,
)
from shared.store.counting import (
    Kind,
    TaskCounts,
    by_queue,
    live_depth,
    of_schedule,
    queued_views,
    totals,
)
from shared.store.sqlite import migrations
from shared.store.sqlite.database import Database, storage_error
from shared.store.sqlite.wake import SharedWakeListener, WakeNotifier
from shared.task_events import cursor_key, make_cursor

Q = Queries("sqlite", "queue")
S = Queries("sqlite", "schedules")
D = Queries("sqlite", "dashboard")
M = Queries("sqlite", "metrics")
_COUNT_UP_TO: dict[Kind, str] = {
    "due": D.count_due_up_to, "waiting": D.count_waiting_up_to,
    "retrying": D.count_retrying_up_to,
}
T = Queries("sqlite", "transfer")
A = Queries("sqlite", "audit")
W = Queries("sqlite", "webhooks")
_CURSOR_START = "~"  # sorts after every ULID character
# The chart reads its window a slice at a time (shared/sql/sqlite/dashboard.sql says why).
CHART_SLICE = 10  # chart buckets read at a time

Outcome = TypeVar("Outcome")


def fetchall(conn: sqlite3.Connection, sql: str, params: Any = ()) -> list[sqlite3.Row]:
    return conn.execute(sql, params).fetchall()


class SQLiteStore:
    engine = "sqlite"

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.path
        self._notifier = WakeNotifier(db.path)
        # The same wake-up, sent by the writer thread just before a submit's COMMIT
        # (Database.before_commit): its own socket, used on that thread only.
        self._early_notifier = WakeNotifier(db.path)
        self._wake_before_commit = self._early_notifier.send_now
        self._listener = SharedWakeListener(db.path)
        # Task changes: sent after every commit that moved a task's status (or deleted one).
        self._changed = WakeNotifier(db.path, "tasks")
        self._task_listener = SharedWakeListener(db.path, "tasks", wake_on_start=True)
        self._stats_conn: aiosqlite.Connection | None = None
        self._stats_lock = asyncio.Lock()
        self._count_conn: aiosqlite.Connection | None = None
        self._count_lock = asyncio.Lock()  # guards opening it only

    @classmethod
    async def open(
        cls, path: str, *, synchronous: str = "FULL", busy_seconds: float = 30.0
    ) -> SQLiteStore:
        """Open a migrated file (raises SchemaNotReady, SchemaTooNew, StorageUnavailable)."""
        return cls(await Database.open(path, synchronous=synchronous, busy_seconds=busy_seconds))

    # -- lifecycle, health, notification -----------------------------------------------------

    def describe(self) -> str:
        return os.path.abspath(self.path)

    async def schema_version(self) -> int:
        return await self.db.schema_version()

    def newest_schema_version(self) -> int:
        return migrations.newest_version()

    def notify(self) -> None:
        self._notifier()

    def listener(self) -> SharedWakeListener:
        return self._listener

    def task_listener(self) -> SharedWakeListener:
        return self._task_listener

    async def release_memory(self) -> None:
        # Every connection keeps a page cache of up to 2 MB (SQLite's default cache_size);
        # after a load the writer's is full, in the writer thread's malloc arena.
        await self.db.release_memory()
        for conn in (self._stats_conn, self._count_conn):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):  # closed meanwhile
                    await conn.execute("PRAGMA shrink_memory")

    async def close(self) -> None:
        self._listener.close()
        self._notifier.close()
        self._early_notifier.close()
        self._task_listener.close()
        self._changed.close()
        for name in ("_stats_conn", "_count_conn"):
            conn = getattr(self, name)
            if conn is not None:
                setattr(self, name, None)
                await conn.close()
        await self.db.close()

    def _changed_if(self, outcome: Outcome) -> Outcome:
        """Tell task listeners in every process, after a commit, if it changed something."""
        if outcome:
            self._changed()
        return outcome

    # -- tasks: submitting ---------------------------------------------------------------------

    async def insert_tasks(
        self, tasks: Sequence[NewTask], now: float
    ) -> list[tuple[Task, bool]]:
        if any(new.idempotency_key is not None for new in tasks):
            keyed = [_insert_params(new, now) for new in tasks]

            def op(conn: sqlite3.Connection) -> list[tuple[Task, bool]]:
                self.db.before_commit(self._wake_before_commit)
                # All rows in one executemany; a key already taken (by an earlier task, or by
                # an earlier row of this batch) inserts nothing, and sqlite3_changes() counts
                # only the rows this statement put in (not its triggers'). When every row went
                # in, that is the answer; otherwise read which ids did, and answer each that
                # did not from the task holding its key (a different request there raises,
                # which rolls the whole batch back).
                inserted = conn.executemany(Q.insert_task, keyed).rowcount
                if inserted == len(tasks):
                    return _new_tasks(tasks, now)
                present = {r[0] for r in conn.execute(
                    Q.present_ids, (_json([new.id for new in tasks]),))}
                fresh = iter(_new_tasks([new for new in tasks if new.id in present], now))
                return [next(fresh) if new.id in present else _existing(conn, new)
                        for new in tasks]

            results = await self.db.write(op)
            if any(created for _, created in results):
                self._changed()
            return results
        # Without idempotency keys every row is new. The rows are encoded here, on the event
        # loop, as one JSON array; the writer thread inserts the arrays of every keyless
        # submission in its transaction with one statement (_insert_new_many). The answers
        # are built here too, after the commit.
        if not tasks:
            return []
        encode = msgspec.json.encode
        rows = encode([
            (new.id, new.type, encode(new.payload).decode(), new.priority, new.run_at,
             new.max_attempts, new.timeout, now, new.queue, new.callback_url)
            for new in tasks
        ]).decode()  # text: SQLite's JSON functions refuse a blob
        failed = await self.db.write_grouped(self._insert_new_many, rows)
        if failed is not None:
            raise storage_error(failed, self.path)
        self._changed()
        return _new_tasks(tasks, now)

    def _insert_new_many(
        self, conn: sqlite3.Connection, items: list[str]
    ) -> list[sqlite3.Error | None]:
        """On the writer thread: the keyless submissions of one write transaction (each a JSON
        array of rows) as one INSERT; None per submission written. If that statement fails,
        each goes in alone, so a submission whose rows fail fails alone, with its error."""
        self.db.before_commit(self._wake_before_commit)
        if len(items) == 1:
            conn.execute(Q.insert_new_tasks, (items[0],))
            return [None]
        conn.execute("SAVEPOINT new_tasks")
        try:
            # Arrays of rows joined into one: "[a,b]" + "[c]" -> "[a,b,c]".
            conn.execute(Q.insert_new_tasks, ("[" + ",".join(i[1:-1] for i in items) + "]",))
        except sqlite3.Error:
            conn.execute("ROLLBACK TO new_tasks")
            conn.execute("RELEASE new_tasks")
            return [_insert_alone(conn, rows) for rows in items]
        conn.execute("RELEASE new_tasks")
        return [None] * len(items)

    # -- tasks: working ------------------------------------------------------------------------

    async def claim(
        self, worker_id: str, limit: int, lease_until: float, now: float,
        queues: Sequence[str] | None = None,
        on_claimed: Callable[[list[Claimed]], None] | None = None,
    ) -> list[Claimed]:
        if limit <= 0:
            return []
        only = _json(list(queues)) if queues else None
        # The claimed tasks, handed to the event loop just before the claim's COMMIT, so their
        # handlers start while its fsync runs (docs/state_machine.md, "Started before the
        # claim is durable"). Such a claim runs on the loop itself when the writer thread is
        # idle (Database.write_on_loop): on_claimed is then called right there, no hop; else
        # the writer thread hands them over (call_soon_threadsafe, which keeps the order: the
        # loop runs on_claimed before it sees the claim's answer).
        loop = asyncio.get_running_loop() if on_claimed is not None else None
        loop_thread = threading.get_ident()

        def hand_over(claimed: list[Claimed]) -> None:
            assert loop is not None and on_claimed is not None
            if threading.get_ident() == loop_thread:
                on_claimed(claimed)
            else:
                loop.call_soon_threadsafe(on_claimed, claimed)

        def op(conn: sqlite3.Connection) -> list[Claimed] | str:
            # Counting running tasks here is safe: this transaction holds SQLite's one write
            # lock, so no other claimer (in any process) can move a task to running meanwhile.
            budget = ClaimBudget(limit, *_gates(conn, queues))
            with_work = None
            if budget.closed and not queues:
                with_work = [r["name"] for r in fetchall(conn, Q.queues_with_work)]
            probe = per_queue_names(budget, queues, with_work)
            if probe is None and not budget.room and on_claimed is None:
                # The usual claim (no queue limit to count down, no handler to start early):
                # one round, decoded on the event loop (decode_picked). The others need their
                # answer on this thread: queue.sql, `claim`, says why they have statements of
                # their own.
                return claim_picked(conn, {
                    "now": now, "lease_until": lease_until, "worker_id": worker_id,
                    "limit": budget.next_batch(), "closed": _json(budget.closed_list()),
                    "only": only,
                })
            rows: list[sqlite3.Row] = []
            while (batch := budget.next_batch()) > 0:
                params = {"now": now, "lease_until": lease_until, "worker_id": worker_id,
                          "limit": batch, "closed": _json(budget.closed_list()), "only": only}
                if probe is None:
                    taken = fetchall(conn, Q.claim, params)
                else:
                    candidates = [
                        c for name in probe if name not in budget.closed
                        for c in fetchall(conn, Q.claim_candidates_in_queue,
                                          {"queue": name, "now": now, "limit": batch})
                    ]
                    ids = most_urgent(candidates, batch)
                    taken = (fetchall(conn, Q.claim_ids, {**params, "ids": _json(ids)})
                             if ids else [])
                budget.took([r[9] for r in taken])
                rows.extend(taken)
            if rows:
                conn.executemany(Q.insert_attempt, [(r[0], r[3], worker_id, now) for r in rows])
            claimed = [_claimed(*r) for r in rows]
            # RETURNING gives no order; the contract is most urgent first.
            claimed.sort(key=_urgency)
            if claimed and loop is not None and on_claimed is not None:
                self.db.before_commit(functools.partial(hand_over, claimed))
            return claimed

        answer = await (self.db.write(op) if on_claimed is None else self.db.write_on_loop(op))
        if isinstance(answer, str):
            claimed = decode_picked(answer)
            claimed.sort(key=_urgency)  # json_group_array's order is not a promise
        else:
            claimed = answer
        if claimed:
            self._changed()
        return claimed

    async def extend_leases(
        self, tokens: Sequence[str], lease_until: float, now: float
    ) -> Heartbeat:
        if not tokens:
            return Heartbeat(held=set(), cancel=set())
        params = {"lease_until": lease_until, "now": now,
                  "tokens": msgspec.json.encode(list(tokens)).decode()}

        def op(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return fetchall(conn, Q.extend_leases, params)

        rows = await self.db.write(op)
        return Heartbeat(
            held={r["id"] for r in rows}, cancel={r["id"] for r in rows if r["cancel_requested"]}
        )

    async def complete(self, task: Claimed, result: Any, now: float) -> bool:
        # Grouped: the completions in one write transaction are one batch of statements.
        row = (task.id, task.token, task.attempt, now, _json(result))
        return self._changed_if(await self.db.write_grouped(_complete_many, row))

    async def complete_many(
        self, items: Sequence[tuple[Claimed, Any]], now: float
    ) -> list[bool]:
        rows = [(t.id, t.token, t.attempt, now, _json(r)) for t, r in items]
        if not rows:
            return []
        done = await self.db.write(lambda conn: _complete_many(conn, rows))
        self._changed_if(any(done))
        return done

    async def finish_cancelled(
        self, task: Claimed, result: Any, error: str, now: float
    ) -> bool:
        params = {"id": task.id, "token": task.token, "now": now, "result": _json(result),
                  "error": error}
        return await self._finish(task, Q.finish_cancelled, params, "cancelled", error, result,
                                  now)

    async def _finish(
        self, task: Claimed, query: str, params: dict[str, Any], outcome: str,
        error: str | None, result: Any, now: float,
    ) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute(query, params).rowcount != 1:
                return False
            _finish_attempt(conn, task, now, outcome, error, result)
            return True

        return self._changed_if(await self.db.write(op))

    async def fail(
        self, task: Claimed, *, error: str, result: Any, outcome: FailOutcome,
        retry_at: float | None, now: float,
    ) -> Status | None:
        params = {
            "id": task.id, "token": task.token, "now": now,
            "retry_at": now if retry_at is None else retry_at,
            "error": error, "result": _json(result), "retry": retry_at is not None,
        }

        def op(conn: sqlite3.Connection) -> Status | None:
            rows = fetchall(conn, Q.fail, params)
            if not rows:
                return None
            _finish_attempt(conn, task, now, outcome, error, result)
            return rows[0]["status"]

        return self._changed_if(await self.db.write(op))

    async def release(self, task: Claimed, error: str, now: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(Q.release, {"id": task.id, "token": task.token, "now": now})
            if cursor.rowcount != 1:
                return False
            _finish_attempt(conn, task, now, "released", error, None)
            return True

        return self._changed_if(await self.db.write(op))

    async def unclaim(self, task: Claimed, now: float, *, cancelled: bool = False) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(Q.unclaim, {"id": task.id, "token": task.token, "now": now,
                                              "cancelled": int(cancelled)})
            if cursor.rowcount != 1:
                return False
            conn.execute(Q.delete_attempt, {"id": task.id, "attempt": task.attempt})
            return True

        return self._changed_if(await self.db.write(op))

    async def rescue_expired(self, now: float) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            rows = fetchall(conn, Q.rescue_expired, {"now": now})
            conn.executemany(
                Q.lose_attempt,
                [{"id": r["id"], "attempt": r["attempts"], "now": now} for r in rows],
            )
            return [r["id"] for r in rows]

        return self._changed_if(await self.db.write(op))

    async def cancel_requests(self, worker_id: str) -> set[str]:
        rows = await self.db.fetch_all(Q.cancel_requests_for_worker, (worker_id,))
        return {r["id"] for r in rows}

    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        gates = [_gate(r) for r in await self.db.fetch_all(Q.queue_gates)]
        names = limited(gates)
        running = {}
        if names:
            rows = await self.db.fetch_all(Q.running_in_queues, {"names": _json(names)})
            running = {r["queue"]: r["n"] for r in rows}
        closed = ClaimBudget(1, gates, running).closed_list()
        row = await self.db.fetch_one(Q.next_run_at, {
            "closed": _json(closed), "only": _json(list(queues)) if queues else None,
        })
        return None if row is None else row[0]

    async def worker_seen(
        self, worker_id: str, hostname: str, pid: int, slots: int, now: float
    ) -> None:
        params = {"id": worker_id, "hostname": hostname, "pid": pid, "slots": slots, "now": now}

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q.upsert_worker, params)

        await self.db.write(op)

    async def worker_stopped(self, worker_id: str, now: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q.stop_worker, {"id": worker_id, "now": now})

        await self.db.write(op)

    # -- tasks: people -------------------------------------------------------------------------

    async def cancel(
        self, task_id: str, now: float, audit: Sequence[AuditEntry] = ()
    ) -> Task | None:
        def op(conn: sqlite3.Connection) -> Task | None:
            params = {"id": task_id, "now": now}
            changed = conn.execute(Q.cancel_queued, params).rowcount == 1
            if not changed:
                changed = conn.execute(Q.request_cancel, params).rowcount == 1
            if changed:
                _record(conn, audit)
            rows = fetchall(conn, Q.get_task, (task_id,))
            return _task(rows[0]) if rows else None

        return self._changed_if(await self.db.write(op))

    async def retry(
        self, task_id: str, extra_attempts: int, now: float, audit: Sequence[AuditEntry] = ()
    ) -> tuple[bool, Task | None]:
        def op(conn: sqlite3.Connection) -> tuple[bool, Task | None]:
            params = {"id": task_id, "now": now, "extra": extra_attempts}
            changed = conn.execute(Q.retry_task, params).rowcount == 1
            if changed:
                _record(conn, audit)
            rows = fetchall(conn, Q.get_task, (task_id,))
            return changed, (_task(rows[0]) if rows else None)

        changed, task = await self.db.write(op)
        self._changed_if(changed)
        return changed, task

    async def delete(
        self, task_id: str, audit: Sequence[AuditEntry] = ()
    ) -> Literal["deleted"] | Status | None:
        def op(conn: sqlite3.Connection) -> Literal["deleted"] | Status | None:
            if conn.execute(Q.delete_task, {"id": task_id}).rowcount == 1:
                _record(conn, audit)
                return "deleted"
            rows = fetchall(conn, Q.get_task, (task_id,))
            return rows[0]["status"] if rows else None

        outcome = await self.db.write(op)
        self._changed_if(outcome == "deleted")
        return outcome

    async def get(self, task_id: str) -> Task | None:
        row = await self.db.fetch_one(Q.get_task, (task_id,))
        return None if row is None else _task(row)

    async def get_many(self, task_ids: Sequence[str]) -> list[Task]:
        if not task_ids:
            return []
        rows = await self.db.fetch_all(
            Q.get_tasks, (msgspec.json.encode(list(task_ids)).decode(),))
        found = {r["id"]: _task(r) for r in rows}
        return [found[i] for i in task_ids if i in found]

    async def attempts(self, task_id: str) -> list[Attempt]:
        return [_attempt(r) for r in await self.db.fetch_all(Q.list_attempts, (task_id,))]

    async def list_tasks(
        self, *, status: Status | None, type: str | None, cursor: str | None, limit: int,
        queue: str | None = None,
    ) -> TaskPage:
        params = {"status": status, "type": type, "cursor": cursor or _CURSOR_START,
                  "limit": limit + 1, "queue": queue}
        if queue is not None:
            query = Q.list_by_queue
        elif status and type:
            query = Q.list_by_status_and_type
        elif status:
            query = Q.list_by_status
        elif type:
            query = Q.list_by_type
        else:
            query = Q.list_all
        rows = await self.db.fetch_all(query, params)
        items = [_task(r) for r in rows[:limit]]
        next_cursor = items[-1].id if len(rows) > limit and items else None
        return TaskPage(items=items, next_cursor=next_cursor)

    async def events_after(self, cursor: str | None, limit: int) -> EventPage:
        after = 0 if cursor is None else cursor_key(cursor)[1]
        rows = await self.db.fetch_all(Q.events_after, {"id": after, "limit": limit})
        horizon = await self.db.fetch_one(Q.events_horizon)
        lost = cursor is not None and horizon is not None and after < horizon["id"]
        return EventPage(events=[_event(r) for r in rows], lost=lost)

    async def events_head(self) -> str:
        row = await self.db.fetch_one(Q.events_head)
        return make_cursor(0, row["id"] if row and row["id"] is not None else 0)

    async def events_newest(self) -> str:
        return await self.events_head()  # one writer at a time: every committed id is readable

    async def events_since(self, since: float) -> EventStart:
        row = await self.db.fetch_one(Q.events_since, {"since": since})
        assert row is not None  # an aggregate: always one row
        # Ids are commit order (one writer at a time): just before the first is readable.
        start = row["head"] if row["first"] is None else row["first"] - 1
        lost = row["horizon"] > 0 and (row["oldest"] is None or since < row["oldest"])
        return EventStart(cursor=make_cursor(0, start), lost=lost)

    async def prune_events(self, before: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            until = fetchall(conn, Q.events_prune_until, {"before": before})[0]["id"]
            if until is None:
                return 0
            gone = conn.execute(Q.events_prune, {"id": until}).rowcount
            conn.execute(Q.events_raise_horizon, {"id": until})
            return gone

        return await self.db.write(op)

    async def save_live_output(
        self, outputs: Sequence[LiveOutput], ended: Sequence[tuple[str, str]], now: float
    ) -> None:
        saves = [live_output_params(o, now) for o in outputs]
        clears = [{"task_id": task_id, "token": token} for task_id, token in ended]
        if not saves and not clears:
            return

        def op(conn: sqlite3.Connection) -> None:
            if saves:
                conn.executemany(Q.live_output_save, saves)
            if clears:
                conn.executemany(Q.live_output_clear, clears)

        await self.db.write(op)

    async def live_outputs(self, task_ids: Sequence[str]) -> dict[str, LiveOutput]:
        if not task_ids:
            return {}
        rows = await self.db.fetch_all(
            Q.live_outputs, (msgspec.json.encode(list(task_ids)).decode(),)
        )
        return {r["task_id"]: live_output_from(r) for r in rows}

    async def statuses(self, task_ids: Sequence[str]) -> dict[str, Status]:
        if not task_ids:
            return {}
        rows = await self.db.fetch_all(Q.statuses, (msgspec.json.encode(list(task_ids)).decode(),))
        return {r["id"]: r["status"] for r in rows}

    async def counts(self) -> dict[str, int]:
        return totals(await self.task_counts())

    async def task_counts(self) -> list[tuple[str, str, str, int]]:
        return [(r["queue"], r["type"], r["status"], r["n"])
                for r in await self.db.fetch_all(D.task_counts)]

    # -- queues --------------------------------------------------------------------------------

    async def queues(self) -> list[QueueInfo]:
        counts = by_queue(await self.task_counts())
        gates = [_gate(r) for r in await self.db.fetch_all(Q.all_queue_settings)]
        return queue_overview(counts, gates)

    async def queue(self, name: str) -> QueueInfo:
        counts = by_queue(await self.task_counts(), name)
        gates = [_gate(r) for r in await self.db.fetch_all(Q.queue_settings, (name,))]
        return queue_overview(counts, gates, name)[0]

    async def set_queue(
        self, name: str, *, concurrency: int | UnsetType | None, paused: bool | None,
        now: float, audit: Sequence[AuditEntry] = (),
    ) -> None:
        params = {"name": name, "now": now, "paused": None if paused is None else int(paused),
                  "set_concurrency": concurrency is not UNSET,
                  "concurrency": None if concurrency is UNSET else concurrency}

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q.set_queue, params)
            _record(conn, audit)

        await self.db.write(op)

    # -- retention -----------------------------------------------------------------------------

    async def take_lease(self, name: str, holder: str, until: float, now: float) -> bool:
        params = {"name": name, "holder": holder, "until": until, "now": now}

        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(Q.take_lease, params).rowcount == 1

        return await self.db.write(op)

    async def prune(self, status: Status, before: float, limit: int) -> int:
        params = {"status": status, "before": before, "limit": limit}

        def op(conn: sqlite3.Connection) -> int:
            deleted = conn.execute(Q.prune_batch, params).rowcount
            if deleted:
                _return_free_pages(conn)
            return deleted

        return await self.db.write(op)

    async def task_id_by_key(self, key: str) -> str | None:
        row = await self.db.fetch_one(D.task_id_by_key, (key,))
        return None if row is None else row["id"]

    async def task_ids_of_schedule(
        self, schedule_id: str, *, status: Status | None = None, type: str | None = None,
        cursor: str | None = None, limit: int = 50, queue: str | None = None,
    ) -> list[str]:
        rows = await self.db.fetch_all(D.task_ids_of_schedule, {
            "schedule_id": schedule_id, "status": status, "type": type, "queue": queue,
            "cursor": cursor or _CURSOR_START, "limit": limit,
        })
        return [r["id"] for r in rows]

    async def queued_view_ids(
        self, view: QueuedView, now: float, *, type: str | None = None,
        schedule_id: str | None = None, cursor: str | None = None, limit: int = 50,
        scan: int = 2000, queue: str | None = None,
    ) -> tuple[list[str], str | None]:
        start = cursor or _CURSOR_START
        rows = await self.db.fetch_all(D.queued_view_ids, {
            "view": view, "now": now, "type": type, "schedule_id": schedule_id, "queue": queue,
            "cursor": start, "scan": scan, "limit": limit,
        })
        ids = [r["id"] for r in rows]
        if len(ids) == limit:
            return ids, ids[-1]
        end = await self.db.fetch_one(D.queued_window_end, {"cursor": start, "offset": scan - 1})
        return ids, (end["id"] if end else None)

    async def search_task_ids(
        self, needle: str, *, status: Status | None = None, type: str | None = None,
        schedule_id: str | None = None, cursor: str | None = None, floor: str | None = None,
        limit: int = 50, scan: int = 2000, queue: str | None = None,
    ) -> tuple[list[str], str | None]:
        params = {"needle": needle, "status": status, "type": type, "schedule_id": schedule_id,
                  "cursor": cursor or _CURSOR_START, "floor": floor or "", "scan": scan,
                  "limit": limit, "queue": queue}
        ids = [r["id"] for r in await self.db.fetch_all(D.search_ids, params)]
        if len(ids) == limit:
            return ids, ids[-1]
        end = await self.db.fetch_one(D.search_window_end, {**params, "offset": scan - 1})
        return ids, (end["id"] if end else None)

    async def run_waiting_now(self, task_id: str, now: float) -> bool:
        changed = await self.db.write(
            lambda conn: conn.execute(D.run_waiting_now, {"id": task_id, "now": now}).rowcount
            == 1
        )
        if changed:
            self.notify()
        return changed

    async def attempt_seconds(self, task_ids: Sequence[str], now: float) -> dict[str, float]:
        if not task_ids:
            return {}
        rows = await self.db.fetch_all(
            D.attempt_seconds, {"ids": json.dumps(list(task_ids)), "now": now}
        )
        return {r["task_id"]: r["seconds"] for r in rows}

    # -- schedules -----------------------------------------------------------------------------

    async def insert_schedule(
        self, schedule_id: str, fields: ScheduleFields, next_fire_at: float | None, now: float,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        params = {**_schedule_params(fields), "id": schedule_id, "now": now,
                  "next_fire_at": next_fire_at}

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(S.insert_schedule, params)
            _record(conn, audit)

        await self.db.write(op)

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        row = await self.db.fetch_one(S.get_schedule, (schedule_id,))
        return None if row is None else _schedule(row)

    async def list_schedules(self, limit: int) -> list[Schedule]:
        rows = await self.db.fetch_all(S.list_schedules, {"limit": limit})
        return [_schedule(r) for r in rows]

    async def update_schedule(
        self, schedule_id: str, fields: ScheduleFields, *, recompute: bool,
        next_fire_at: float | None, now: float, audit: Sequence[AuditEntry] = (),
    ) -> bool:
        params = {**_schedule_params(fields), "id": schedule_id, "now": now,
                  "recompute": int(recompute), "next_fire_at": next_fire_at}

        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute(S.update_schedule, params).rowcount != 1:
                return False
            _record(conn, audit)
            return True

        return await self.db.write(op)

    async def delete_schedule(
        self, schedule_id: str, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute(S.delete_schedule, (schedule_id,)).rowcount != 1:
                return False
            _record(conn, audit)
            return True

        return await self.db.write(op)

    async def run_schedule_now(
        self, schedule_id: str, task: NewTask, now: float, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        params = {**_scheduled_task_params(task), "schedule_id": schedule_id, "fire_time": None,
                  "run_at": now, "now": now}

        def op(conn: sqlite3.Connection) -> bool:
            if not fetchall(conn, S.get_schedule, (schedule_id,)):
                return False  # deleted since the caller read it
            conn.execute(S.insert_scheduled_task, params)
            conn.execute(S.record_fire, {"id": schedule_id, "fire_time": now, "task_id": task.id})
            _record(conn, audit)
            return True

        return self._changed_if(await self.db.write(op))

    async def next_due(self) -> float | None:
        row = await self.db.fetch_one(S.next_due)
        return None if row is None else row[0]

    async def fire_due(self, now: float, limit: int, plan: PlanFire) -> list[Fire]:
        def op(conn: sqlite3.Connection) -> list[Fire]:
            fires = []
            for row in fetchall(conn, S.due_schedules, {"now": now, "limit": limit}):
                due = DueSchedule(id=row["id"], fields=_fields(row),
                                  next_fire_at=row["next_fire_at"])
                fire = _carry_out(conn, due, plan(due, now), now)
                if fire is not None:
                    fires.append(fire)
            return fires

        fires = await self.db.write(op)
        self._changed_if(any(f.outcome == "fired" for f in fires))
        return fires

    async def resync(self, now: float, next_fire: NextFire) -> int:
        def op(conn: sqlite3.Connection) -> int:
            moved = 0
            for row in fetchall(conn, S.ahead_schedules, {"now": now}):
                timing = ScheduleTiming(id=row["id"], cron_expr=row["cron_expr"],
                                        timezone=row["timezone"],
                                        next_fire_at=row["next_fire_at"])
                should = next_fire(timing, now)
                if should is not None and should < timing.next_fire_at:
                    moved += conn.execute(S.advance, {
                        "id": timing.id, "next": should, "expected": timing.next_fire_at,
                    }).rowcount
            return moved

        return await self.db.write(op)

    # -- stats ---------------------------------------------------------------------------------

    async def throughput(self, now: float, hours: float, bucket_seconds: int) -> Throughput:
        first, last = throughput_window(now, hours, bucket_seconds)
        counts: dict[int, dict[str, int]] = {}
        # A slice of the window per read, on the counting connection: see count_tasks.
        for start in range(first, last + 1, CHART_SLICE):
            rows = await self._counting_read(D.throughput, {
                "bucket": bucket_seconds, "since": start * bucket_seconds,
                "until": min(start + CHART_SLICE, last + 1) * bucket_seconds,
            })
            for row in rows:
                counts.setdefault(row["bucket"], {})[row["status"]] = row["n"]
        return fill_throughput(counts, now, hours, bucket_seconds)

    async def count_tasks(
        self, now: float, *, type: str | None = None, schedule_id: str | None = None,
        queue: str | None = None, cap: int | None = None,
    ) -> TaskCounts:
        """On a read-only connection of its own (WAL lets it read beside the shared reader
        and the writer). The trigger-kept counts (per queue and type, and per schedule since
        migration 010) and bounded index counts (shared/store/counting.py): a few short reads
        at any size, under every filter."""
        if not schedule_id:
            rows = [(r["queue"], r["type"], r["status"], r["n"])
                    for r in await self._counting_read(D.task_counts, {})]

            async def count_up_to(of_queue: str, task_type: str, kind: Kind, limit: int) -> int:
                found = await self._counting_read(_COUNT_UP_TO[kind], {
                    "queue": of_queue, "type": task_type, "now": now, "limit": limit})
                return found[0]["n"]

            return await queued_views(rows, count_up_to, type=type, queue=queue, cap=cap)
        rows = [(r["queue"], r["type"], r["status"], r["n"]) for r in await self._counting_read(
            D.schedule_task_counts, {"schedule_id": schedule_id})]

        async def count_views(limit: int) -> dict[str, int]:
            found = await self._counting_read(D.count_schedule_queued_views, {
                "schedule_id": schedule_id, "type": type, "queue": queue, "now": now,
                "limit": limit})
            return {r["key"]: r["n"] for r in found}

        return await of_schedule(rows, count_views, type=type, queue=queue, cap=cap)

    async def _counting_read(self, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        try:
            async with self._count_lock:
                if self._count_conn is None:
                    self._count_conn = await _read_only_connection(self.path)
                conn = self._count_conn
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path) from None

    async def oldest_runnable(self, now: float) -> WaitingTask | None:
        row = await self.db.fetch_one(D.oldest_runnable, {"now": now})
        if row is None:
            return None
        return WaitingTask(id=row["id"], type=row["type"], priority=row["priority"],
                           run_at=row["run_at"], created_at=row["created_at"])

    async def running_task_ids(self, limit: int = 200) -> dict[str, list[str]]:
        held: dict[str, list[str]] = {}
        for r in await self.db.fetch_all(D.running_task_ids, {"limit": limit}):
            held.setdefault(r["worker_id"] or "", []).append(r["id"])
        return held

    async def recent_workers(self, now: float, within: float) -> list[WorkerSeen]:
        running = {r["worker_id"]: r["n"] for r in await self.db.fetch_all(D.running_by_worker)}
        rows = await self.db.fetch_all(D.recent_workers, {"since": now - within})
        return [
            WorkerSeen(
                id=r["id"], hostname=r["hostname"], pid=r["pid"], slots=r["slots"],
                started_at=r["started_at"], last_seen=r["last_seen"],
                stopped_at=r["stopped_at"], running=running.get(r["id"], 0),
            )
            for r in rows
        ]

    async def queue_stats(self, now: float, alive_since: float) -> QueueStats:
        async with self._stats_lock:
            try:
                conn = await self._stats_connection()
                counted = [(r["queue"], r["type"], r["status"], r["n"])
                           for r in await conn.execute_fetchall(D.task_counts)]
                oldest = list(await conn.execute_fetchall(D.oldest_runnable, {"now": now}))
                alive = await conn.execute_fetchall(M.workers_alive, {"since": alive_since})
                gates = await conn.execute_fetchall(
                    M.queue_settings, {"limit": QUEUE_SETTINGS_READ})
            except sqlite3.Error as exc:
                raise storage_error(exc, self.path) from None
        return QueueStats(
            depth=[Depth(status=s, type=t, count=n, queue=q)
                   for s, t, q, n in live_depth(counted)],
            totals=totals(counted),
            oldest_runnable_at=oldest[0]["run_at"] if oldest else None,
            workers_alive=next(iter(alive))["n"], queue_settings=[_gate(r) for r in gates],
        )

    async def _stats_connection(self) -> aiosqlite.Connection:
        # Its own connection: a slow count on a big table never delays an API read.
        if self._stats_conn is None:
            self._stats_conn = await _read_only_connection(self.path)
        return self._stats_conn

    async def storage(self) -> StorageInfo:
        """Sizes of the database file and its write-ahead log, as the file system reports."""
        pages = await self.db.fetch_one(D.page_stats)
        version = await self.db.fetch_one(D.sqlite_version)
        details = {}
        if pages:
            details["pages"] = (f"{pages['page_count']} pages of {pages['page_size']} bytes, "
                                f"{pages['freelist_count']} free")
        return StorageInfo(
            engine="SQLite", version=version["version"] if version else "",
            location=self.describe(),
            sizes={"database file": _size(self.path), "write-ahead log": _size(self.path + "-wal")},
            details=details,
        )

    async def change_token(self) -> Hashable:
        return await self.db.data_version()

    @property
    def write_transactions(self) -> int:
        return self.db.batches

    # -- the audit trail -----------------------------------------------------------------------

    async def record_audit(self, entries: Sequence[AuditEntry]) -> None:
        if entries:
            await self.db.write(lambda conn: _record(conn, entries))

    async def list_audit(
        self, *, action: str | None, target: str | None, cursor: str | None, limit: int
    ) -> AuditPage:
        params = {"action": action, "target": target, "cursor": cursor or _CURSOR_START,
                  "limit": limit + 1}
        query = ((A.list_by_action_and_target if action else A.list_by_target) if target
                 else (A.list_by_action if action else A.list_all))
        rows = await self.db.fetch_all(query, params)
        items = [entry_of_row(r) for r in rows[:limit]]
        next_cursor = items[-1].id if len(rows) > limit and items else None
        return AuditPage(items=items, next_cursor=next_cursor)

    async def prune_audit(self, before: float, limit: int) -> int:
        params = {"before": before, "limit": limit}

        def op(conn: sqlite3.Connection) -> int:
            deleted = conn.execute(A.prune, params).rowcount
            if deleted:
                _return_free_pages(conn)
            return deleted

        return await self.db.write(op)

    # -- webhook deliveries (docs/webhooks.md) -------------------------------------------------

    async def claim_deliveries(
        self, limit: int, lease_until: float, now: float
    ) -> list[DueDelivery]:
        if limit <= 0:
            return []
        params = {"limit": limit, "lease_until": lease_until, "now": now}

        def op(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return fetchall(conn, W.claim_deliveries, params)

        rows = sorted(await self.db.write(op), key=lambda r: (r["next_try_at"], r["id"]))
        return [DueDelivery(id=r["id"], task_id=r["task_id"], url=r["url"],
                            task_status=r["task_status"], tries=r["tries"],
                            token=r["lease_token"]) for r in rows]

    async def record_delivery_try(
        self, delivery_id: str, token: str, attempt: dict[str, Any], *,
        next_try_at: float | None, delivered: bool, now: float,
    ) -> bool:
        params = {"id": delivery_id, "token": token, "attempt": _json(attempt),
                  "next_try_at": next_try_at, "delivered": int(delivered), "now": now}

        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(W.record_try, params).rowcount == 1

        return await self.db.write(op)

    async def deliveries(self, task_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(W.deliveries_of_task, (task_id,))
        return [_delivery(r) for r in rows]

    async def next_delivery_at(self) -> float | None:
        row = await self.db.fetch_one(W.next_delivery_at)
        return None if row is None else row["at"]

    # -- copying (localflow copy) --------------------------------------------------------------

    async def table_counts(self) -> dict[str, int]:
        (row,) = await self.db.fetch_all(T.table_counts)  # one row of counts, always
        return {name: row[name] for name in COUNTED_TABLES}

    async def export_rows(
        self, table: TransferTable, after: str, limit: int
    ) -> list[TransferRow]:
        query = {"workers": T.export_workers, "schedules": T.export_schedules,
                 "tasks": T.export_tasks, "audit": T.export_audit}[table]
        rows = [_neutral(r) for r in await self.db.fetch_all(query, {"after": after,
                                                                      "limit": limit})]
        if table == "tasks" and rows:
            attempts = await self.db.fetch_all(
                T.export_attempts, {"after": after, "last": rows[-1]["id"]}
            )
            attach_attempts(rows, [dict(a) for a in attempts])
            deliveries = await self.db.fetch_all(
                T.export_deliveries, {"after": after, "last": rows[-1]["id"]}
            )
            attach_deliveries(rows, [dict(d) for d in deliveries])
        return rows

    async def import_rows(self, table: TransferTable, rows: Sequence[TransferRow]) -> Imported:
        query = {"workers": T.insert_worker, "schedules": T.insert_schedule,
                 "tasks": T.insert_task, "audit": T.insert_audit}[table]
        columns = TRANSFER_COLUMNS[table]

        def op(conn: sqlite3.Connection) -> Imported:
            inserted = attempts = deliveries = 0
            for row in rows:
                if conn.execute(query, {c: row[c] for c in columns}).rowcount != 1:
                    continue  # collides with a row already there: skipped
                inserted += 1
                for attempt in row.get("attempt_rows", ()):
                    conn.execute(T.insert_attempt, attempt)
                    attempts += 1
                for delivery in row.get("delivery_rows", ()):
                    conn.execute(T.insert_delivery, delivery)
                    deliveries += 1
            return Imported(rows=inserted, skipped=len(rows) - inserted, attempts=attempts,
                            deliveries=deliveries)

        return await self.db.write(op)


async def _read_only_connection(path: str) -> aiosqlite.Connection:
    """A connection (on a thread of its own) that can only read."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA query_only=1")
    await conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _neutral(row: sqlite3.Row) -> TransferRow:
    """A row as a copy carries it: SQLite's 0/1 flags become booleans."""
    out = dict(row)
    for flag in ("enabled", "cancel_requested"):
        if flag in out:
            out[flag] = bool(out[flag])
    return out


# -- op bodies (run on the writer thread) -------------------------------------------------------


def _record(conn: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    """Audit entries, in the transaction of the action they record."""
    for e in entries:
        conn.execute(A.insert_audit, entry_row(e))


def _insert_params(new: NewTask, now: float) -> dict[str, Any]:
    return {
        "id": new.id, "type": new.type, "payload": msgspec.json.encode(new.payload).decode(),
        "priority": new.priority, "run_at": new.run_at, "max_attempts": new.max_attempts,
        "timeout": new.timeout, "idempotency_key": new.idempotency_key,
        "request_hash": new.request_hash, "now": now, "queue": new.queue,
        "callback_url": new.callback_url,
    }


def _new_tasks(tasks: Sequence[NewTask], now: float) -> list[tuple[Task, bool]]:
    """The rows a batch became, as inserted at `now` (created), each `(task, True)`; the times
    the tasks share (created now, runnable now) are converted once."""
    when = to_datetime(now)
    times: dict[float, datetime | None] = {now: when}
    out = []
    for new in tasks:
        run_at = times.get(new.run_at)
        if run_at is None:
            run_at = times[new.run_at] = to_datetime(new.run_at)
        out.append((Task(
            id=new.id, type=new.type, payload=new.payload, status="queued",
            priority=new.priority, run_at=run_at, attempts=0,  # type: ignore[arg-type]
            max_attempts=new.max_attempts, timeout=new.timeout,
            idempotency_key=new.idempotency_key, result=None, last_error=None,
            cancel_requested=False, created_at=when, updated_at=when,  # type: ignore[arg-type]
            started_at=None, finished_at=None, queue=new.queue, callback_url=new.callback_url,
        ), True))
    return out


def _existing(conn: sqlite3.Connection, new: NewTask) -> tuple[Task, bool]:
    """The task holding `new`'s idempotency key, which kept `new` out; IdempotencyConflict
    if it was made by a different request."""
    existing = fetchall(conn, Q.get_task_by_key, (new.idempotency_key,))[0]
    if existing["request_hash"] != new.request_hash:
        raise IdempotencyConflict(str(new.idempotency_key), existing["id"])
    return _task(existing), False


def _urgency(c: Claimed) -> tuple[int, float, str]:
    return (-c.priority, c.run_at, c.id)


def _claimed(
    task_id: str, task_type: str, payload: str, attempts: int, max_attempts: int,
    timeout: float, priority: int, run_at: float, token: str, queue: str,
) -> Claimed:
    """A claim's RETURNING row (its columns in this order: queue.sql, `claim`)."""
    return Claimed(
        id=task_id, type=task_type, payload=msgspec.json.decode(payload), attempt=attempts,
        max_attempts=max_attempts, timeout=timeout, priority=priority, run_at=run_at,
        token=token, queue=queue,
    )


def _insert_alone(conn: sqlite3.Connection, rows: str) -> sqlite3.Error | None:
    conn.execute("SAVEPOINT new_task")
    try:
        conn.execute(Q.insert_new_tasks, (rows,))
    except sqlite3.Error as exc:
        conn.execute("ROLLBACK TO new_task")
        return exc
    finally:
        conn.execute("RELEASE new_task")
    return None


def claim_picked(conn: sqlite3.Connection, params: dict[str, Any]) -> str:
    """queued -> running for up to params["limit"] tasks, their attempt rows opened: the usual
    claim, in the caller's write transaction; the claimed tasks as claim_pick's JSON array
    (queue.sql says why three statements). Also run by bench/outcome_batch_cost.py,
    bench/schema_cost.py and bench/claim_cost.py."""
    claimed, moves = conn.execute(Q.claim_pick, params).fetchone()
    if claimed != "[]":
        params = {**params, "moves": moves}
        conn.execute(Q.claim_picked, params)
        conn.execute(Q.insert_picked_attempts, params)
    return str(claimed)


def decode_picked(answer: str) -> list[Claimed]:
    """claim_pick's JSON array as Claimed (decoded on the event loop, not the writer thread)."""
    return _CLAIMED_LIST.decode(answer)


_CLAIMED_LIST = msgspec.json.Decoder(list[Claimed])


def _complete_many(
    conn: sqlite3.Connection, items: list[tuple[str, str, int, float, str | None]]
) -> list[bool]:
    """running -> succeeded for a batch of (id, token, attempt, now, result JSON), each fenced
    by its token, its attempt row finished in the same transaction; True per task completed."""
    if len({item[0] for item in items}) != len(items):
        # The same task twice in one batch (callers racing): one at a time, as before.
        return [_complete_one(conn, *item) for item in items]
    conn.execute(Q.finishing_table)
    if len({item[3] for item in items}) == 1:
        # One time for all (complete_many): the rows go in as one JSON array (queue.sql,
        # claim_pick: each row stepped through is a GIL retake on this thread).
        conn.execute(Q.finishing_fill, {
            "now": items[0][3],
            "items": msgspec.json.encode([(i[0], i[1], i[2], i[4]) for i in items]).decode(),
        })
    else:
        conn.executemany(Q.finishing_add, items)
    # The usual case, every task still ours: one UPDATE without RETURNING, its row count the
    # proof. Short of that, it is taken back, the stale rows leave temp.finishing and it runs
    # again, so the tasks completed, their attempt rows and the answer are the same rows.
    # (Dropping the stale rows first every time cost the usual case 2 us of writer CPU a task:
    # bench/README.md, "Session 5".)
    conn.execute("SAVEPOINT finishing")
    if conn.execute(Q.complete_finishing).rowcount == len(items):
        conn.execute("RELEASE finishing")
        conn.execute(Q.finish_attempts_finishing)
        conn.execute(Q.finishing_clear)
        return [True] * len(items)
    conn.execute("ROLLBACK TO finishing")
    stale = {row[0] for row in conn.execute(Q.finishing_drop_stale)}
    conn.execute(Q.complete_finishing)
    conn.execute("RELEASE finishing")
    if len(stale) != len(items):
        conn.execute(Q.finish_attempts_finishing)
    conn.execute(Q.finishing_clear)
    return [item[0] not in stale for item in items]


def _complete_one(
    conn: sqlite3.Connection, task_id: str, token: str, attempt: int, now: float,
    result: str | None,
) -> bool:
    params = {"id": task_id, "token": token, "now": now, "result": result}
    if conn.execute(Q.complete, params).rowcount != 1:
        return False
    conn.execute(Q.finish_attempt, {"id": task_id, "attempt": attempt, "now": now,
                                    "outcome": "succeeded", "error": None, "output": result})
    return True


def _finish_attempt(
    conn: sqlite3.Connection, task: Claimed, now: float, outcome: str, error: str | None,
    output: Any,
) -> None:
    conn.execute(Q.finish_attempt, {
        "id": task.id, "attempt": task.attempt, "now": now, "outcome": outcome,
        "error": error, "output": _json(output),
    })


def _carry_out(
    conn: sqlite3.Connection, due: DueSchedule, plan: FirePlan, now: float
) -> Fire | None:
    """FirePlan's steps, in its order (shared/store/base.py)."""
    schedule_id = due.id
    advanced = conn.execute(
        S.advance, {"id": schedule_id, "next": plan.next_fire_at, "expected": due.next_fire_at}
    )
    if advanced.rowcount != 1:
        return None  # another scheduler moved it on first: this fire is not ours

    def skip(outcome: Any, reason: str | None = None) -> Fire:
        conn.execute(S.record_skip, {"id": schedule_id, "fire_time": plan.fire_time,
                                     "reason": reason or outcome})
        return Fire(schedule_id=schedule_id, fire_time=plan.fire_time, outcome=outcome,
                    late=plan.late)

    if plan.missed_fire_time is not None:
        conn.execute(S.record_skip, {"id": schedule_id, "reason": "missed",
                                     "fire_time": plan.missed_fire_time})
    if plan.skip is not None:
        return skip(plan.skip, plan.skip_reason)
    if due.fields.overlap == "skip" and fetchall(conn, S.has_active_task, (schedule_id,)):
        return skip("overlap")
    if plan.task_error is not None or plan.task is None:
        return skip("error", plan.task_error or "error: no task")
    inserted = conn.execute(S.insert_scheduled_task, {
        **_scheduled_task_params(plan.task), "schedule_id": schedule_id,
        "fire_time": plan.fire_time, "run_at": plan.fire_time, "now": now,
    })
    if inserted.rowcount != 1:
        # The unique index: this fire time already has its task (the clock went back).
        return skip("already fired")
    conn.execute(S.record_fire,
                 {"id": schedule_id, "fire_time": plan.fire_time, "task_id": plan.task.id})
    return Fire(schedule_id=schedule_id, fire_time=plan.fire_time, outcome="fired",
                task_id=plan.task.id, late=plan.late)


# -- row mappers ---------------------------------------------------------------------------------


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def _task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        type=row["type"],
        payload=msgspec.json.decode(row["payload"]),
        status=row["status"],
        priority=row["priority"],
        run_at=to_datetime(row["run_at"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        idempotency_key=row["idempotency_key"],
        result=None if row["result"] is None else msgspec.json.decode(row["result"]),
        last_error=row["last_error"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
        started_at=to_datetime(row["started_at"]),
        finished_at=to_datetime(row["finished_at"]),
        schedule_id=row["schedule_id"],
        queue=row["queue"],
        callback_url=row["callback_url"],
    )


def _delivery(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "task_id", "url", "task_status", "state", "tries",
                               "next_try_at", "created_at", "finished_at")}
    out["history"] = msgspec.json.decode(row["history"])
    return out


def _event(row: sqlite3.Row) -> TaskEvent:
    return TaskEvent(cursor=make_cursor(0, row["id"]), task_id=row["task_id"],
                     status=row["status"], attempts=row["attempts"], type=row["type"],
                     time=row["time"], queue=row["queue"])


_VACUUM_PAGES_PER_BATCH = 512  # ~2 MiB of 4 KiB pages, some milliseconds of write lock


def _return_free_pages(conn: sqlite3.Connection) -> None:
    """Hand free pages back to the file system, a bounded number per prune transaction.

    Only files with auto_vacuum=INCREMENTAL can (every file migrations.py creates now; for older
    ones see docs/retention.md): elsewhere the freelist stays and new rows reuse it. Each
    execution of the pragma frees one page -- Python's sqlite3 steps a statement that
    returns no rows only once -- so it runs once per page, each closed at once (an
    unfinished statement would block the commit).
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    for _ in range(min(free, _VACUUM_PAGES_PER_BATCH)):
        conn.execute("PRAGMA incremental_vacuum(1)").close()


def _gate(row: sqlite3.Row) -> QueueGate:
    return QueueGate(name=row["name"], concurrency=row["concurrency"],
                     paused=bool(row["paused"]))


def _gates(
    conn: sqlite3.Connection, only: Sequence[str] | None
) -> tuple[list[QueueGate], dict[str, int]]:
    """The queue settings and, for the limited queues this worker may take, their running
    tasks (in the caller's transaction)."""
    gates = [g for g in map(_gate, fetchall(conn, Q.queue_gates)) if not only or g.name in only]
    names = limited(gates)
    running: dict[str, int] = {}
    if names:
        running = {r["queue"]: r["n"]
                   for r in fetchall(conn, Q.running_in_queues, {"names": _json(names)})}
    return gates, running


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        started_at=to_datetime(row["started_at"]),
        finished_at=to_datetime(row["finished_at"]),
        outcome=row["outcome"],
        error=row["error"],
        output=None if row["output"] is None else msgspec.json.decode(row["output"]),
    )


def _fields(row: sqlite3.Row) -> ScheduleFields:
    return ScheduleFields(
        name=row["name"], cron_expr=row["cron_expr"], timezone=row["timezone"],
        task_type=row["task_type"], payload=msgspec.json.decode(row["payload"]),
        enabled=bool(row["enabled"]), priority=row["priority"],
        max_attempts=row["max_attempts"], timeout=row["timeout"], overlap=row["overlap"],
        missed=row["missed"], queue=row["queue"], callback_url=row["callback_url"],
    )


def _schedule(row: sqlite3.Row) -> Schedule:
    return Schedule(
        id=row["id"], name=row["name"], cron_expr=row["cron_expr"], timezone=row["timezone"],
        task_type=row["task_type"], payload=msgspec.json.decode(row["payload"]),
        enabled=bool(row["enabled"]), priority=row["priority"],
        max_attempts=row["max_attempts"], timeout=row["timeout"], overlap=row["overlap"],
        missed=row["missed"], next_fire_at=to_datetime(row["next_fire_at"]),
        last_fire_at=to_datetime(row["last_fire_at"]), last_task_id=row["last_task_id"],
        last_task_status=row["last_task_status"], last_skip_at=to_datetime(row["last_skip_at"]),
        last_skip_reason=row["last_skip_reason"], created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]), queue=row["queue"],
        callback_url=row["callback_url"],
    )


def _schedule_params(fields: ScheduleFields) -> dict[str, Any]:
    params = msgspec.structs.asdict(fields)
    params["payload"] = msgspec.json.encode(fields.payload).decode()
    params["enabled"] = int(fields.enabled)
    return params


def _scheduled_task_params(task: NewTask) -> dict[str, Any]:
    return {
        "id": task.id, "type": task.type, "payload": msgspec.json.encode(task.payload).decode(),
        "priority": task.priority, "max_attempts": task.max_attempts, "timeout": task.timeout,
        "queue": task.queue, "callback_url": task.callback_url,
    }


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # no WAL file yet (or a checkpoint just truncated it)
        return 0

