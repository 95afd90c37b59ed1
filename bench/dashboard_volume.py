"""How the dashboard answers with a million tasks in the database.

    uv run python bench/dashboard_volume.py              # 1,000,000 tasks
    uv run python bench/dashboard_volume.py --tasks 100000
    uv run python bench/dashboard_volume.py --tasks 2000 --delayed 100000   # a delayed backlog

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


def fill_delayed(path: Path, n: int, now: float, retrying: int = 60) -> None:
    """n queued tasks due over the next day (a delayed backlog), `retrying` of them waiting out
    a backoff after a failed attempt, written after the rest (so they are the newest)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    rng = random.Random(11)
    rows = []
    for i in range(n):
        created = now - 3600 + 3600 * i / max(n, 1)
        attempts = 1 if i % max(n // retrying, 1) == 0 else 0
        rows.append((new_id(created), now + rng.uniform(60, 86400), attempts, created))
        if len(rows) == 50_000:
            _insert_delayed(conn, rows)
            rows = []
    _insert_delayed(conn, rows)
    conn.commit()
    conn.close()


def _insert_delayed(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    conn.executemany(
        "INSERT INTO tasks (id, type, payload, status, priority, run_at, attempts, max_attempts,"
        " timeout, created_at, updated_at) VALUES (?1, 'shell', '" + PAYLOAD + "', 'queued', 0,"
        " ?2, ?3, 3, 300, ?4, ?4)",
        rows,
    )


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


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tabs(client: httpx.Client, pid: int, seconds: float) -> tuple[float, dict[str, list[float]]]:
    """Three open tabs (overview, task list, overview): each polls every 2 s, as they do in a
    browser. Returns the server's CPU use over that time, in percent of one core (Linux /proc),
    and each poll's times in ms: what a refresh costs in steady use."""
    live = {"hx-request": "true"}
    polls = [("overview poll", "/dashboard/overview", live),
             ("tasks poll", "/dashboard/tasks", {**live, "hx-target": "tasks-live"}),
             ("overview poll, 1 h chart", "/dashboard/overview?hours=1", live)]
    times: dict[str, list[float]] = {name: [] for name, _, _ in polls}
    cpu0, start = _cpu_seconds(pid), time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for name, url, headers in polls:
            times[name] += measure(client, url, headers, n=1)
        tick += 1
        time.sleep(max(0.0, start + 2 * tick - time.monotonic()))  # the tabs' 2 s rhythm
    return 100 * (_cpu_seconds(pid) - cpu0) / (time.monotonic() - start), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--delayed", type=int, default=0,
                        help="queued tasks due later (a delayed backlog), on top of --tasks")
    parser.add_argument("--tabs-seconds", type=float, default=30.0,
                        help="how long three polling tabs are simulated for the CPU figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "volume.db"
        started = time.perf_counter()
        schedules = fill(db, args.tasks, time.time())
        if args.delayed:
            fill_delayed(db, args.delayed, time.time())
        print(f"filled {args.tasks:,} tasks + {args.delayed:,} delayed in "
              f"{time.perf_counter() - started:.1f}s; "
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
                    ("tasks: type filter", "/dashboard/tasks?type=shell", {}),
                    ("tasks: retrying", "/dashboard/tasks?status=retrying", {}),
                    ("tasks: scheduled", "/dashboard/tasks?status=scheduled", {}),
                    ("schedules page", "/dashboard/schedules", {}),
                    ("system page", "/dashboard/system", {}),
                ]
                print(f"{'page':32} {'first ms':>9} {'median ms':>10} {'max ms':>8}")
                for name, url, headers in cases:
                    first, *times = measure(client, url, headers)
                    print(f"{name:32} {first:9.1f} {statistics.median(times):10.1f} "
                          f"{max(times):8.1f}")
                cpu, steady = tabs(client, proc.popen.pid, args.tabs_seconds)
                print(f"three tabs polling every 2 s for {args.tabs_seconds:g} s: server CPU "
                      f"{cpu:.1f}% of one core")
                for name, times in steady.items():
                    print(f"  {name:30} median {statistics.median(times):6.1f} ms, "
                          f"max {max(times):6.1f} ms ({len(times)} polls)")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
