"""What the task event log (and its wake-up) costs each task's trip through the queue.

    uv run python bench/event_log_cost.py                 # SQLite, 3 rounds of 10000 tasks
    uv run python bench/event_log_cost.py --db postgresql://...   # a migrated, empty database

In this process, on the real store: N tasks inserted (500 per transaction), then claimed 64 at a
time and completed (each a write; the store's group commit shares transactions), i.e. three
status changes, so three events, per task. Run twice per round on fresh databases: as shipped,
and with the event triggers dropped (PostgreSQL: also the NOTIFY they send). Rounds alternate
the two so other work on the machine hits both alike. SQLite: the CPU time of this process
(all threads: the writer thread does the SQL) per task, which the machine's load scatters far
less than wall time, and tasks/s. PostgreSQL: tasks/s (the server's CPU is not ours to read).
synchronous=NORMAL on SQLite, so fsync does not drown what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import is_postgres, open_store
from shared.store.sqlite import migrations

DROP_SQLITE = ["DROP TRIGGER tasks_inserted_event", "DROP TRIGGER tasks_status_event"]
DROP_POSTGRES = ["DROP TRIGGER tasks_status_changed ON tasks",
                 "DROP TRIGGER tasks_added_or_removed ON tasks"]


def fresh_db(base: str | None, workdir: Path, name: str, events: bool) -> str:
    if base is None:
        path = str(workdir / f"{name}.db")
        migrations.migrate(path)
        if not events:
            import sqlite3

            with sqlite3.connect(path) as conn:
                for sql in DROP_SQLITE:
                    conn.execute(sql)
        return path
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, task_events CASCADE")
        conn.execute("DROP TRIGGER IF EXISTS tasks_status_changed ON tasks")
        conn.execute("DROP TRIGGER IF EXISTS tasks_added_or_removed ON tasks")
        if events:
            conn.execute("""CREATE TRIGGER tasks_status_changed AFTER UPDATE OF status ON tasks
                FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
                EXECUTE FUNCTION localflow_task_changed()""")
            conn.execute("""CREATE TRIGGER tasks_added_or_removed AFTER INSERT OR DELETE ON tasks
                FOR EACH ROW EXECUTE FUNCTION localflow_task_changed()""")
    return base


async def one_run(db: str, tasks: int) -> tuple[float, float]:
    """(tasks/s, CPU seconds per 1000 tasks) for insert + claim + complete of `tasks`."""
    store = await open_store(Settings(db=db, synchronous="NORMAL"), migrate_first=False)
    queue = Queue(store, on_runnable=lambda: None)
    try:
        creates = [TaskCreate(type="shell", payload={"command": "true"}) for _ in range(500)]
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(tasks // 500):
            await queue.enqueue_many(creates)
        done = 0
        while done < tasks:
            claimed = await queue.claim("bench", 64, lease=60)
            await asyncio.gather(*(queue.complete(c, None) for c in claimed))
            done += len(claimed)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return tasks / wall, cpu / tasks * 1_000_000  # ms per 1000 tasks
    finally:
        await store.close()


async def main(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="lf-eventcost-"))
    results: dict[str, list[tuple[float, float]]] = {"events": [], "no events": []}
    for round_ in range(args.rounds):
        order = ["events", "no events"] if round_ % 2 == 0 else ["no events", "events"]
        for variant in order:
            db = fresh_db(args.db, workdir, f"r{round_}-{variant.replace(' ', '')}",
                          events=variant == "events")
            results[variant].append(await one_run(db, args.tasks))
    if args.db and is_postgres(args.db):
        fresh_db(args.db, workdir, "restore", events=True)  # leave it as migrated
    summary = {}
    for variant, runs in results.items():
        summary[variant] = {
            "tasks_per_s_median": round(statistics.median(r[0] for r in runs)),
            "cpu_ms_per_1000_tasks_median": round(statistics.median(r[1] for r in runs), 1),
            "runs": [(round(r[0]), round(r[1], 1)) for r in runs],
        }
    on, off = summary["events"], summary["no events"]
    summary["throughput_cost_pct"] = round(
        (1 - on["tasks_per_s_median"] / off["tasks_per_s_median"]) * 100, 1)
    summary["cpu_cost_pct"] = round(
        (on["cpu_ms_per_1000_tasks_median"] / off["cpu_ms_per_1000_tasks_median"] - 1) * 100, 1)
    summary["engine"] = "postgresql" if args.db else "sqlite"
    summary["tasks"] = args.tasks
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--db", help="a migrated PostgreSQL database URL (default: SQLite files)")
    print(json.dumps(asyncio.run(main(p.parse_args())), indent=2))
