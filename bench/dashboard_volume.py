"""How the dashboard answers with a million tasks in the database.

    uv run python bench/dashboard_volume.py              # 1,000,000 tasks
    uv run python bench/dashboard_volume.py --tasks 100000

Fills a fresh database (rows written straight into SQLite, spread over the last 6 hours, a
tenth of them made by 10 schedules), starts `localflow api` on it (no worker: nothing changes
while we measure), and times each page and the fragments the live pages poll: median and max
of 20 requests after a first (cold) one, which is shown too. Prints a table; writes nothing
but the temporary database.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from shared.ids import new_id
from shared.store.sqlite import migrations
from tests import procs

STATUSES = ("succeeded",) * 80 + ("failed",) * 8 + ("queued",) * 8 + ("cancelled",) * 4
PAYLOAD = '{"command":"echo","args":["hello"],"env":{},"timeout":null}'


def fill(path: Path, n: int, now: float) -> list[str]:
    migrations.migrate(str(path))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    rng = random.Random(7)
    schedules = [new_id(now - 7 * 86400) for _ in range(10)]
    for sid in schedules:
        conn.execute(
            "INSERT INTO schedules (id, name, cron_expr, timezone, task_type, payload, enabled,"
            " priority, overlap, missed, created_at, updated_at) VALUES"
            " (?, ?, '* * * * *', 'UTC', 'shell', ?, 1, 0, 'allow', 'skip', ?, ?)",
            (sid, f"bench {sid[-4:]}", PAYLOAD, now, now),
        )
    batch = []
    for i in range(n):
        created = now - 6 * 3600 + 6 * 3600 * i / n
        status = rng.choice(STATUSES)
        finished = created + rng.uniform(0.01, 2) if status != "queued" else None
        sid = schedules[(i // 10) % 10] if i % 10 == 0 else None
        batch.append((new_id(created), status, created, finished, sid,
                      created if sid else None))
        if len(batch) == 50_000:
            _insert(conn, batch)
            batch = []
    _insert(conn, batch)
    conn.commit()
    conn.close()
    return schedules


def _insert(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    conn.executemany(
        "INSERT INTO tasks (id, type, payload, status, priority, run_at, attempts, max_attempts,"
        " timeout, created_at, updated_at, started_at, finished_at, schedule_id, fire_time)"
        " VALUES (?1, 'shell', '" + PAYLOAD + "', ?2, 0, ?3, 1, 3, 300, ?3, ?3, ?3, ?4, ?5, ?6)",
        rows,
    )


def measure(client: httpx.Client, url: str, headers: dict[str, str], n: int = 21) -> list[float]:
    """n timings in ms; the first is cold (the dashboard's short-lived caches are empty)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = client.get(url, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "volume.db"
        started = time.perf_counter()
        schedules = fill(db, args.tasks, time.time())
        print(f"filled {args.tasks:,} tasks in {time.perf_counter() - started:.1f}s; "
              f"database {os.path.getsize(db) / 2**20:.0f} MiB")
        proc = procs.start("api", db, env={"LOCALFLOW_METRICS_ADDR": "off"})
        try:
            with httpx.Client(base_url=proc.url, timeout=60) as client:
                middle = client.get("/api/tasks", params={"limit": 500}).json()["next_cursor"]
                live = {"hx-request": "true"}
                cases = [
                    ("overview page", "/dashboard", {}),
                    ("overview poll (every 2 s)", "/dashboard/overview", live),
                    ("tasks page", "/dashboard/tasks", {}),
                    ("tasks poll (every 2 s)", "/dashboard/tasks", {**live,
                                                                    "hx-target": "tasks-live"}),
                    ("tasks: failed", "/dashboard/tasks?status=failed", {}),
                    ("tasks: page 2 by cursor", f"/dashboard/tasks?cursor={middle}", {}),
                    ("tasks: one schedule", f"/dashboard/tasks?schedule={schedules[3]}", {}),
                    ("schedules page", "/dashboard/schedules", {}),
                    ("system page", "/dashboard/system", {}),
                ]
                print(f"{'page':32} {'first ms':>9} {'median ms':>10} {'max ms':>8}")
                for name, url, headers in cases:
                    first, *times = measure(client, url, headers)
                    print(f"{name:32} {first:9.1f} {statistics.median(times):10.1f} "
                          f"{max(times):8.1f}")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
