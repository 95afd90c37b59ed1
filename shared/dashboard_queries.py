"""Read-only views the dashboard needs and the queue does not offer: throughput over time, the
longest-waiting task, recently seen workers, database size, counts under filters; and one
write, "run now" for a waiting task. SQL in shared/sql/dashboard.sql."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.db import Database
from shared.schemas import STATUSES
from shared.sql import Queries

Q = Queries("dashboard")


@dataclass(frozen=True)
class Bucket:
    start: float  # Unix seconds at the start of the bucket
    succeeded: int
    failed: int


@dataclass(frozen=True)
class Throughput:
    buckets: list[Bucket]
    bucket_seconds: int

    @property
    def succeeded(self) -> int:
        return sum(b.succeeded for b in self.buckets)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.buckets)

    @property
    def peak(self) -> int:
        return max((b.succeeded + b.failed for b in self.buckets), default=0)


@dataclass(frozen=True)
class WaitingTask:
    id: str
    type: str
    priority: int
    run_at: float
    created_at: float


@dataclass(frozen=True)
class WorkerSeen:
    id: str
    hostname: str
    pid: int
    slots: int
    started_at: float
    last_seen: float
    stopped_at: float | None
    running: int


@dataclass(frozen=True)
class StorageStats:
    db_bytes: int
    wal_bytes: int
    page_size: int
    page_count: int
    freelist_count: int
    sqlite_version: str


CHART_SLICE = 10  # buckets read at a time


async def throughput(
    db: Database | CountingReader, now: float, hours: float = 3.0, bucket_seconds: int = 60
) -> Throughput:
    """Succeeded and failed tasks per bucket over the last `hours`, oldest first, gaps as 0."""
    first = int((now - hours * 3600) // bucket_seconds) + 1
    last = int(now // bucket_seconds)
    counts: dict[int, dict[str, int]] = {}
    # A slice of the window per read (see the SQL): at most CHART_SLICE buckets at a time.
    for start in range(first, last + 1, CHART_SLICE):
        rows = await db.fetch_all(Q.throughput, {
            "bucket": bucket_seconds, "since": start * bucket_seconds,
            "until": min(start + CHART_SLICE, last + 1) * bucket_seconds,
        })
        for row in rows:
            counts.setdefault(row["bucket"], {})[row["status"]] = row["n"]
    buckets = [
        Bucket(
            start=float(b * bucket_seconds),
            succeeded=counts.get(b, {}).get("succeeded", 0),
            failed=counts.get(b, {}).get("failed", 0),
        )
        for b in range(first, last + 1)
    ]
    return Throughput(buckets=buckets, bucket_seconds=bucket_seconds)


async def oldest_runnable(db: Database, now: float) -> WaitingTask | None:
    """The task that has been due longest (earliest run_at at or before now): what "how far
    behind are we" is about. Reads one index entry per distinct priority, not the backlog."""
    row = await db.fetch_one(Q.oldest_runnable, {"now": now})
    if row is None:
        return None
    return WaitingTask(
        id=row["id"], type=row["type"], priority=row["priority"], run_at=row["run_at"],
        created_at=row["created_at"],
    )


async def recent_workers(db: Database, now: float, within: float = 300.0) -> list[WorkerSeen]:
    """Workers that reported in during the last `within` seconds, with their running tasks."""
    running = {r["worker_id"]: r["n"] for r in await db.fetch_all(Q.running_by_worker)}
    rows = await db.fetch_all(Q.recent_workers, {"since": now - within})
    return [
        WorkerSeen(
            id=r["id"], hostname=r["hostname"], pid=r["pid"], slots=r["slots"],
            started_at=r["started_at"], last_seen=r["last_seen"], stopped_at=r["stopped_at"],
            running=running.get(r["id"], 0),
        )
        for r in rows
    ]


async def task_id_by_key(db: Database, key: str) -> str | None:
    row = await db.fetch_one(Q.task_id_by_key, (key,))
    return None if row is None else row["id"]


async def storage(db: Database) -> StorageStats:
    """Sizes of the database file and its write-ahead log, as the file system reports them."""
    pages = await db.fetch_one(Q.page_stats)
    version = await db.fetch_one(Q.sqlite_version)
    return StorageStats(
        db_bytes=_size(db.path),
        wal_bytes=_size(db.path + "-wal"),
        page_size=pages["page_size"] if pages else 0,
        page_count=pages["page_count"] if pages else 0,
        freelist_count=pages["freelist_count"] if pages else 0,
        sqlite_version=version["version"] if version else "",
    )


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # no WAL file yet (or a checkpoint just truncated it)
        return 0


async def task_ids_of_schedule(
    db: Database, schedule_id: str, *, status: str | None = None, type: str | None = None,
    cursor: str | None = None, limit: int = 50,
) -> list[str]:
    """Ids of the tasks a schedule made, newest first, from before `cursor` (an id)."""
    rows = await db.fetch_all(Q.task_ids_of_schedule, {
        "schedule_id": schedule_id, "status": status, "type": type,
        "cursor": cursor or "~", "limit": limit,
    })
    return [r["id"] for r in rows]


QUEUED_VIEWS = ("ready", "scheduled", "retrying")  # derived from queued; not stored states


INDEX_CHUNK = 20_000  # index entries one count reads at a time (a few ms)
ROW_CHUNK = 4_000  # rows one count reads at a time when it needs more than an index holds


async def _count_in_chunks(
    db: Database, sql: str, params: dict[str, Any], chunk: int
) -> dict[str, int]:
    counts: dict[str, int] = {}
    after = ""
    while True:
        rows = await db.fetch_all(sql, {**params, "after": after, "chunk": chunk})
        for r in rows:
            if r["key"] is not None:
                counts[r["key"]] = counts.get(r["key"], 0) + r["n"]
        if not rows or rows[0]["seen"] < chunk:
            return counts
        after = rows[0]["last"]


async def status_counts(
    db: Database | CountingReader, now: float, *, type: str | None = None,
    schedule_id: str | None = None,
) -> dict[str, int]:
    """Tasks per status under the list's filters, with the queued ones split into ready,
    scheduled and retrying (their sum is the queued count). Read in chunks: see the SQL."""
    if schedule_id:
        counts = await _count_in_chunks(
            db, Q.count_schedule_chunk, {"schedule_id": schedule_id, "type": type}, ROW_CHUNK
        )
    elif type:
        counts = await _count_in_chunks(db, Q.count_type_chunk, {"type": type}, ROW_CHUNK)
    else:
        counts = {}
        for status in STATUSES:
            counts |= await _count_in_chunks(
                db, Q.count_status_chunk, {"status": status}, INDEX_CHUNK
            )
    views = await _count_in_chunks(
        db, Q.count_queued_views_chunk,
        {"now": now, "type": type, "schedule_id": schedule_id}, ROW_CHUNK,
    )
    return dict.fromkeys(STATUSES, 0) | counts | {v: views.get(v, 0) for v in QUEUED_VIEWS}


VIEW_SCAN = 2000  # queued tasks looked at per page of a derived view


async def queued_view_ids(
    db: Database, view: str, now: float, *, type: str | None = None,
    schedule_id: str | None = None, cursor: str | None = None, limit: int = 50,
    scan: int = VIEW_SCAN,
) -> tuple[list[str], str | None]:
    """Up to `limit` ids of queued tasks in one derived view, newest first from before
    `cursor`, looking at no more than `scan` queued tasks; and the cursor to go on from (None
    when the queued tasks are all looked at). A page may hold fewer than `limit` ids."""
    params = {"view": view, "now": now, "type": type, "schedule_id": schedule_id,
              "cursor": cursor or "~", "scan": scan, "limit": limit}
    ids = [r["id"] for r in await db.fetch_all(Q.queued_view_ids, params)]
    if len(ids) == limit:
        return ids, ids[-1]
    end = await db.fetch_one(Q.queued_window_end, {"cursor": cursor or "~", "offset": scan - 1})
    return ids, (end["id"] if end else None)


async def run_waiting_now(db: Database, task_id: str, now: float) -> bool:
    """Make a queued task that is not yet due runnable now. False if it was not waiting."""
    return await db.write(
        lambda conn: conn.execute(Q.run_waiting_now, {"id": task_id, "now": now}).rowcount == 1
    )


async def attempt_seconds(db: Database, task_ids: list[str], now: float) -> dict[str, float]:
    """Seconds each task's attempts took, summed (no backoff waits); absent: no attempt yet."""
    if not task_ids:
        return {}
    rows = await db.fetch_all(Q.attempt_seconds, {"ids": json.dumps(task_ids), "now": now})
    return {r["task_id"]: r["seconds"] for r in rows}


class CountingReader:
    """A second, read-only connection for the dashboard's long reads (counts, the chart), on a
    thread of its own. The shared reader serves every page and API request in turn; a count of
    a million rows there would make each of them wait. SQLite in WAL mode lets this one read
    alongside, so they never do. It has what status_counts and throughput use: fetch_all."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dash-counts")
        self._conn: sqlite3.Connection | None = None  # used on the executor's thread only

    def _fetch(self, sql: str, params: Any) -> list[sqlite3.Row]:
        if self._conn is None:
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False,
                isolation_level=None,
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA busy_timeout=5000")
        return self._conn.execute(sql, params).fetchall()

    async def fetch_all(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._fetch, sql, params
        )
