"""What the task list's text search and time range cost with a million tasks.

    uv run python bench/dashboard_search.py              # 1,000,000 tasks (SQLite)
    uv run python bench/dashboard_search.py --tasks 100000
    uv run python bench/dashboard_search.py --keep /tmp/search.db   # fill once, reuse after
    uv run python bench/dashboard_search.py --backend postgres --pg-url URL --keep lf_search

Fills a fresh database as bench/dashboard_volume.py does (a tenth of the tasks by schedules,
8 % failed), gives every failed task an error and 500 bytes of stderr, starts `localflow api`
on it (no worker), and times the list under a search and a time range: median and max of 20
requests after a first (cold) one. A search looks at a window of at most SEARCH_SCAN (500)
tasks per page (Store.search_task_ids), so the worst case is a text nothing contains: a whole
window read. PostgreSQL: needs --pg-url and --keep (a database that is filled once).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.dashboard_volume import ServerCPU, _pg_kept, fill_postgres, fill_sqlite, measure
from tests import procs

STDERR = ("step %d of the export\n" * 20) % tuple(range(20)) + "ERROR: connection refused\n"


def add_errors(db: str, backend: str = "sqlite") -> int:
    result = json.dumps({"exit_code": 3, "stdout": "", "stderr": STDERR[-500:]})
    sql = ("UPDATE tasks SET last_error = 'sh exited with status 3', result = ?"
           " WHERE status = 'failed'")
    if backend == "postgres":
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            done = conn.execute(sql.replace("?", "%s"), (result,)).rowcount
            conn.execute("VACUUM ANALYZE tasks")
            return done
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, (result,)).rowcount


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--keep", metavar="FILE", help="fill this file once and keep it; if "
                        "it exists, reuse it as it is (--tasks is then ignored)")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", help="the PostgreSQL server (with --keep)")
    args = parser.parse_args()
    if args.backend == "postgres" and not (args.pg_url and args.keep):
        parser.error("--backend postgres needs --pg-url and --keep (a database name)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "postgres":
            db, there = _pg_kept(args.pg_url, args.keep)
        else:
            path = Path(args.keep) if args.keep else Path(tmp) / "search.db"
            db, there = str(path), path.exists()
        if there:
            print(f"reusing {args.keep}")
        else:
            started = time.perf_counter()
            if args.backend == "postgres":
                fill_postgres(db, 0, args.tasks, time.time())
            else:
                fill_sqlite(Path(db), 0, args.tasks, time.time())
            failed = add_errors(db, args.backend)
            print(f"filled {args.tasks:,} tasks ({failed:,} failed with stderr) in "
                  f"{time.perf_counter() - started:.1f}s")
        print(f"load average before: {os.getloadavg()}")
        server_cpu = ServerCPU(db) if args.backend == "postgres" else None
        proc = procs.start("api", db, env={"LOCALFLOW_METRICS_ADDR": "off"},
                           log_dir=Path(tmp))
        try:
            with httpx.Client(base_url=proc.url, timeout=60) as client:
                middle = client.get("/api/tasks", params={"limit": 500}).json()["next_cursor"]
                cases = [
                    ("plain list (for comparison)", "/dashboard/tasks"),
                    ("search: matches every task", "/dashboard/tasks?q=hello"),
                    ("search: matches nothing", "/dashboard/tasks?q=no-such-text"),
                    ("search: nothing, deep cursor",
                     f"/dashboard/tasks?q=no-such-text&cursor={middle}"),
                    ("search: stderr of failed", "/dashboard/tasks?q=refused&status=failed"),
                    ("search: nothing, failed", "/dashboard/tasks?q=no-such-text&status=failed"),
                    ("search: nothing, last hour", "/dashboard/tasks?q=no-such-text&created=1h"),
                    ("created in the last hour", "/dashboard/tasks?created=1h"),
                    ("failed, last 24 hours", "/dashboard/tasks?status=failed&created=24h"),
                ]
                print("| page | server ms: first / median / max | API CPU ms per request "
                      "| database CPU ms per request |\n|---|---:|---:|---:|")
                for name, url in cases:
                    m = measure(client, proc.popen.pid, url, {}, server_cpu=server_cpu)
                    db_cpu = f"{m['db_cpu']:.1f}" if server_cpu else "-"
                    print(f"| {name} | {m['first']:.1f} / {m['median']:.1f} / {m['max']:.1f} "
                          f"| {m['cpu']:.1f} | {db_cpu} |")
                print(f"load average after: {os.getloadavg()}")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
