"""How the claim's query is served with queues in play, on both engines, at volume.

    uv run python -m bench.queue_plans [--tasks 100000]

Fills a fresh database (a SQLite file; and a throwaway PostgreSQL cluster from tests/pg.py
when its binaries are on this machine) with `--tasks` queued tasks spread over four queues,
a fifth of them in a paused queue at the highest priority (the worst case for the index
walk: every claim passes them by), one queue limited to 2, and prints the plan of the claim
statement (EXPLAIN QUERY PLAN / EXPLAIN) and the median time of a claim of 8 through the
Store (docs/queues.md quotes the numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from shared.clock import FakeClock
from shared.queue import Queue
from shared.queue_schemas import QueueUpdate
from shared.queues import Queues
from shared.settings import Settings
from shared.sql import Queries
from shared.store import open_store
from shared.store.sqlite import migrations

QUEUES = [("paused", 100), ("limited", 50), ("default", 0), ("bulk", -10)]


def rows(n: int, now: float) -> list[tuple]:
    out = []
    for i in range(n):
        name, priority = QUEUES[i % len(QUEUES)] if i % 5 else QUEUES[0]
        out.append((f"B{i:025d}", "shell", '{"command":"true"}',
                    "queued", priority, now - 60 + i * 1e-4, 3, 300.0, now, now, name))
    return out


INSERT_SQLITE = ("INSERT INTO tasks (id, type, payload, status, priority, run_at, max_attempts,"
                 " timeout, created_at, updated_at, queue) VALUES (?,?,?,?,?,?,?,?,?,?,?)")


async def measure(db: str, now: float, *, closed: bool = True) -> float:
    """Median seconds of a claim of 8 (with the paused and limited queues, or none)."""
    settings = Settings(db=db, synchronous="NORMAL")
    store = await open_store(settings, migrate_first=False)
    clock = FakeClock(now)
    queue = Queue(store, clock, settings)
    await Queues(queue).update("paused", QueueUpdate(paused=closed))
    await Queues(queue).update("limited", QueueUpdate(concurrency=2 if closed else None))
    times = []
    for _ in range(30):
        began = time.perf_counter()
        claimed = await queue.claim("bench", 8, lease=30)
        times.append(time.perf_counter() - began)
        assert claimed and (not closed or all(c.queue != "paused" for c in claimed))
        for c in claimed:
            await queue.complete(c, None)
    await store.close()
    return statistics.median(times)


PARAMS = {"lease_until": 0, "worker_id": "w", "limit": 8, "queue": "default", "ids": None}
# The claim's statements whose plans matter (the walk, the per-queue probes), per dialect.
PLANNED = {"sqlite": ("claim_pick", "queues_with_work", "claim_candidates_in_queue",
                      "claim_ids"),
           "postgres": ("claim", "queues_with_work", "claim_candidates_in_queue")}


def sqlite_plan(path: str) -> str:
    q = Queries("sqlite", "queue")
    out = []
    with sqlite3.connect(path) as conn:
        for name in PLANNED["sqlite"]:
            plan = conn.execute("EXPLAIN QUERY PLAN " + getattr(q, name), {
                **PARAMS, "now": time.time(), "closed": '["paused"]', "only": None,
            }).fetchall()
            out.append(f"  -- {name}\n" + "\n".join(f"  {r[3]}" for r in plan))
    return "\n".join(out)


async def run_sqlite(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "plans.db")
        migrations.migrate(path)
        now = time.time()
        with sqlite3.connect(path) as conn:
            conn.executemany(INSERT_SQLITE, rows(n, now))
            conn.execute("ANALYZE")
        print(f"SQLite, {n} queued tasks:\n{sqlite_plan(path)}")
        await report(path, now)


async def run_postgres(n: int) -> None:
    try:
        from tests import pg
        server = pg.open_server()
    except Exception as exc:  # no PostgreSQL binaries here: say so, do the rest
        print(f"PostgreSQL: skipped ({exc})")
        return
    try:
        import psycopg
        url = server.create_database()
        now = time.time()
        with psycopg.connect(url) as conn:
            with conn.cursor() as cur:
                cur.executemany(INSERT_SQLITE.replace("?", "%s"), rows(n, now))
            conn.execute("ANALYZE tasks")
            q = Queries("postgres", "queue")
            print(f"PostgreSQL, {n} queued tasks:")
            for name in PLANNED["postgres"]:
                plan = conn.execute("EXPLAIN " + getattr(q, name), {
                    **PARAMS, "now": now, "closed": ["paused"], "only": None,
                }).fetchall()
                print(f"  -- {name}\n" + "\n".join(f"  {r[0]}" for r in plan))
        await report(url, now)
    finally:
        server.close()


async def report(db: str, now: float) -> None:
    closed = await measure(db, now)
    open_ = await measure(db, now, closed=False)
    print(f"  claim of 8, median of 30: {closed * 1000:.2f} ms with a paused and a full "
          f"queue (per-queue path); {open_ * 1000:.2f} ms with none (the ordinary walk)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(run_sqlite(args.tasks))
    asyncio.run(run_postgres(args.tasks))


if __name__ == "__main__":
    main()
