"""What the counts the database keeps (migration 009) cost each task's trip through the queue.

    uv run python bench/count_cost.py                          # SQLite, 3 rounds of 10000 tasks
    uv run python bench/count_cost.py --backend postgres --workers 4   # four claimers at once
    uv run python bench/count_cost.py --backend postgres --pg-url postgresql://...

In this process, on the real store: N tasks inserted (500 per transaction), then claimed 64 at
a time and completed by `--workers` stores at once (each its own connections, as separate
worker processes would have: on PostgreSQL their transactions commit in parallel, which is
where a shared counter row would make them queue). Each round runs twice on fresh databases:
as shipped, and with migration 009's count triggers and indexes dropped; rounds alternate the
two so other work on the machine hits both alike. Reports tasks/s and this process's CPU per
1000 tasks (SQLite: the writer thread does the SQL, so that is the cost; PostgreSQL: the
server's CPU is not ours to read, so tasks/s is what counts). SQLite at synchronous=NORMAL so
fsync does not drown what is measured; the PostgreSQL cluster keeps its durability settings
(bench/pg_side.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import open_store
from shared.store.sqlite import migrations

TRIGGERS = ["DROP TRIGGER tasks_counted_insert{on}", "DROP TRIGGER tasks_counted_update{on}",
            "DROP TRIGGER tasks_counted_delete{on}"]
INDEXES = ["DROP INDEX tasks_queued_due", "DROP INDEX tasks_queued_retry"]
DROP = TRIGGERS + INDEXES
ROOT = Path(__file__).resolve().parents[1]


def _without_schedule_counts(backend: str) -> list[str]:
    """--drop schedule-counts: migration 010's per-schedule counts off, 009's on. SQLite: its
    three triggers dropped. PostgreSQL: the triggers' function put back as 009 wrote it."""
    if backend == "sqlite":
        return [f"DROP TRIGGER tasks_schedule_counted_{op}" for op in
                ("insert", "update", "delete")]
    text = (ROOT / "migrations/postgres/009_dashboard_indexes.sql").read_text()
    start = text.index("CREATE FUNCTION localflow_count_tasks()")
    end = text.index("$$;", start) + 3
    return [text[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)]


def fresh_db(backend: str, server, workdir: Path, name: str, counted: bool) -> str:
    if backend == "sqlite":
        path = str(workdir / f"{name}.db")
        migrations.migrate(path)
        if not counted:
            with sqlite3.connect(path) as conn:
                for sql in DROP:
                    conn.execute(sql.format(on=""))
        return path
    import psycopg

    url = server.new_database()
    if not counted:
        with psycopg.connect(url, autocommit=True) as conn:
            for sql in DROP:
                conn.execute(sql.format(on=" ON tasks"))
    return url


async def one_run(db: str, tasks: int, workers: int) -> tuple[float, float]:
    """(tasks/s, CPU ms per 1000 tasks) for insert + claim + complete of `tasks`."""
    settings = Settings(db=db, synchronous="NORMAL")
    stores = [await open_store(settings, migrate_first=False) for _ in range(workers)]
    queues = [Queue(s, on_runnable=lambda: None) for s in stores]
    try:
        creates = [TaskCreate(type="shell", payload={"command": "true"}) for _ in range(500)]
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(tasks // 500):
            await queues[0].enqueue_many(creates)

        async def work(queue: Queue, name: str) -> int:
            done = 0
            while claimed := await queue.claim(name, 64, lease=60):
                await asyncio.gather(*(queue.complete(c, None) for c in claimed))
                done += len(claimed)
            return done

        done = sum(await asyncio.gather(*(work(q, f"w{i}") for i, q in enumerate(queues))))
        assert done == tasks - tasks % 500, done
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return done / wall, cpu / done * 1_000_000
    finally:
        for s in stores:
            await s.close()


async def main(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="lf-countcost-"))
    server = None
    if args.backend == "postgres":
        from bench import pg_side

        server = pg_side.open_server(args.pg_url)
    global DROP
    DROP = {"both": TRIGGERS + INDEXES, "triggers": TRIGGERS, "indexes": INDEXES,
            "schedule-counts": _without_schedule_counts(args.backend)}[args.drop]
    results: dict[str, list[tuple[float, float]]] = {"counts kept": [], "no counts": []}
    load_before = os.getloadavg()
    try:
        for round_ in range(args.rounds):
            order = list(results) if round_ % 2 == 0 else list(reversed(results))
            for variant in order:
                db = fresh_db(args.backend, server, workdir, f"r{round_}{len(variant)}",
                              counted=variant == "counts kept")
                results[variant].append(await one_run(db, args.tasks, args.workers))
    finally:
        if server is not None:
            server.close()
    summary: dict = {}
    for variant, runs in results.items():
        summary[variant] = {
            "tasks_per_s_median": round(statistics.median(r[0] for r in runs)),
            "cpu_ms_per_1000_tasks_median": round(statistics.median(r[1] for r in runs), 1),
            "runs": [(round(r[0]), round(r[1], 1)) for r in runs],
        }
    on, off = summary["counts kept"], summary["no counts"]
    summary["throughput_ratio"] = round(on["tasks_per_s_median"] / off["tasks_per_s_median"], 3)
    summary["cpu_ratio"] = round(
        on["cpu_ms_per_1000_tasks_median"] / off["cpu_ms_per_1000_tasks_median"], 3)
    summary |= {"dropped": args.drop, "engine": args.backend, "tasks": args.tasks,
                "workers": args.workers,
                "load_average_before": load_before, "load_average_after": os.getloadavg()}
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--pg-url", help="a PostgreSQL server (default: a throwaway cluster)")
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=1, help="stores claiming at once")
    p.add_argument("--drop", choices=("both", "triggers", "indexes", "schedule-counts"),
                   default="both", help="what the run without counts drops (to tell their "
                   "costs apart; schedule-counts: only migration 010's)")
    print(json.dumps(asyncio.run(main(p.parse_args())), indent=2))
