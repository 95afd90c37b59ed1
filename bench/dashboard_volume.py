"""How the dashboard, GET /api/tasks and /metrics answer with a big backlog and a long history.

    uv run python bench/dashboard_volume.py                        # SQLite, 1M queued + 1M finished
    uv run python bench/dashboard_volume.py --backend postgres     # a throwaway PostgreSQL cluster
    uv run python bench/dashboard_volume.py --backend postgres --pg-url postgresql://...
    uv run python bench/dashboard_volume.py --queued 2000 --finished 100000   # smaller
    uv run python bench/dashboard_volume.py --keep /tmp/volume.db      # fill once, reuse after
    uv run python bench/dashboard_volume.py --backend postgres --pg-url postgresql://... \
        --keep lf_volume                                               # a kept database

Fills a fresh database: `--queued` tasks waiting (half of them due, half delayed by up to a
day, 60 of the delayed ones waiting out a retry's backoff) and `--finished` tasks finished over
the last 6 hours (a tenth of them made by 10 schedules). Rows go in through plain INSERT
(SQLite) or COPY (PostgreSQL), so the database's own triggers run as they do for LocalFlow's
writes. Then `localflow api` runs on it (no worker: nothing changes while we measure), and each
page, the fragments the live pages poll every 2 s, the API's first page and /metrics are asked
21 times back to back. For each: the server's own time (its Server-Timing header: up to the
answer's head, what the handler's queries and templates cost), median and max of the last 20,
the first (cold) one, the time at the client, and the API process's CPU per request (its
utime+stime from /proc over those 20, so a loaded machine does not inflate it; on PostgreSQL
the server's own CPU is not in it). Then three tabs poll as a browser would for
`--tabs-seconds`. Prints Markdown tables; writes nothing but the temporary database.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from shared.ids import new_id
from shared.store import redact
from shared.store.sqlite import migrations
from tests import procs

FINISHED = ("succeeded",) * 85 + ("failed",) * 10 + ("cancelled",) * 5
PAYLOAD = '{"command":"echo","args":["hello"],"env":{},"timeout":null}'
COLUMNS = ("id", "type", "payload", "status", "priority", "run_at", "attempts", "max_attempts",
           "timeout", "created_at", "updated_at", "started_at", "finished_at", "schedule_id",
           "fire_time")
RETRYING = 60
TARGETS = {"page": 20.0, "api": 10.0, "metrics": 20.0}  # ms of server time (issue 10)


def task_rows(queued: int, finished: int, now: float, schedules: list[str]) -> Iterator[tuple]:
    """Every task, oldest first: the finished history over the last 6 h, then the backlog
    made over the last hour (due ones and delayed ones interleaved)."""
    rng = random.Random(7)
    for i in range(finished):
        created = now - 6 * 3600 + 5 * 3600 * i / max(finished, 1)
        status = rng.choice(FINISHED)
        sid = schedules[(i // 10) % 10] if i % 10 == 0 else None
        yield (new_id(created), "shell", PAYLOAD, status, 0, created, 1, 3, 300.0, created,
               created, created, created + rng.uniform(0.01, 2), sid, created if sid else None)
    every = max(queued // 2 // RETRYING, 1)
    for i in range(queued):
        created = now - 3600 + 3600 * i / max(queued, 1)
        delayed = i % 2 == 1
        run_at = now + rng.uniform(60, 86400) if delayed else created
        attempts = 1 if delayed and (i // 2) % every == 0 else 0
        yield (new_id(created), "shell", PAYLOAD, "queued", 0, run_at, attempts, 3, 300.0,
               created, created, created if attempts else None, None, None, None)


def schedule_rows(now: float) -> list[tuple]:
    return [(new_id(now - 7 * 86400), f"bench {i}", "* * * * *", "UTC", "shell", PAYLOAD, True,
             0, "allow", "skip", now, now) for i in range(10)]


SCHEDULE_COLUMNS = ("id", "name", "cron_expr", "timezone", "task_type", "payload", "enabled",
                    "priority", "overlap", "missed", "created_at", "updated_at")


def fill_sqlite(path: Path, queued: int, finished: int, now: float) -> list[str]:
    migrations.migrate(str(path))
    conn = sqlite3.connect(path, isolation_level=None)
    # A fresh file no one else has open: no journal and a big cache while it fills (a single
    # 2 GB write-ahead log took 20 minutes here), WAL again afterwards.
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    # The event log's trigger (004) is off while filling: two million events are not what is
    # measured. The count triggers (009) stay on: the counts are the database's own.
    events = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'"
                          " AND name = 'tasks_inserted_event'").fetchone()[0]
    conn.execute("DROP TRIGGER tasks_inserted_event")
    conn.execute("BEGIN")
    schedules = schedule_rows(now)
    conn.executemany(f"INSERT INTO schedules ({', '.join(SCHEDULE_COLUMNS)}) VALUES"
                     f" ({', '.join('?' * len(SCHEDULE_COLUMNS))})", schedules)
    sql = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    batch = []
    for row in task_rows(queued, finished, now, [s[0] for s in schedules]):
        batch.append(row)
        if len(batch) == 50_000:
            conn.executemany(sql, batch)
            batch = []
    conn.executemany(sql, batch)
    conn.execute("COMMIT")
    conn.execute(events)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return [s[0] for s in schedules]


def fill_postgres(url: str, queued: int, finished: int, now: float) -> list[str]:
    import psycopg

    schedules = schedule_rows(now)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO schedules ({', '.join(SCHEDULE_COLUMNS)}) VALUES"
                            f" ({', '.join(['%s'] * len(SCHEDULE_COLUMNS))})", schedules)
            # As on SQLite: no event per filled row (nor a NOTIFY); the count triggers stay on.
            cur.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_added_or_removed")
            with cur.copy(f"COPY tasks ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in task_rows(queued, finished, now, [s[0] for s in schedules]):
                    copy.write_row(row)
            cur.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_added_or_removed")
        conn.execute("VACUUM ANALYZE")
    return [s[0] for s in schedules]


def kept_schedules(backend: str, db: str) -> list[str]:
    """The bench schedules' ids in a database filled by an earlier run (--keep)."""
    sql = "SELECT id FROM schedules WHERE name LIKE 'bench %' ORDER BY name"
    if backend == "sqlite":
        with sqlite3.connect(db) as conn:
            return [r[0] for r in conn.execute(sql)]
    import psycopg

    with psycopg.connect(db) as conn:
        return [r[0] for r in conn.execute(sql)]


def _pg_kept(pg_url: str, name: str) -> tuple[str, bool]:
    """The URL of database `name` on the server at pg_url, made and migrated if missing;
    and whether it was there already (then filled by an earlier run)."""
    import psycopg

    from shared.store.postgres import schema as pg_migrate
    from tests import pg

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise SystemExit(f"--keep: {name!r} is not a plain database name ([a-z_][a-z0-9_]*)")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        there = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (name,)).fetchone() is not None
        if not there:
            conn.execute(f'CREATE DATABASE "{name}"')  # checked above: a plain name
    url = pg.with_database(pg_url, name)
    if not there:
        pg_migrate.migrate(url)
    return url, there


@contextmanager
def database(backend: str, pg_url: str | None, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield str(tmp / "volume.db")
        return
    from bench import pg_side

    server = pg_side.open_server(pg_url)
    try:
        url = server.new_database()
        print(f"PostgreSQL: {server.describe()}")
        yield url
        server.server.drop_database(url)
    finally:
        server.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_APP = re.compile(r"app;dur=([0-9.]+)")


def one(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, float]:
    """(client ms, server ms) of one request."""
    start = time.perf_counter()
    r = client.get(url, headers=headers)
    took = (time.perf_counter() - start) * 1000
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    found = _APP.search(r.headers.get("server-timing", ""))
    assert found, f"{url}: no Server-Timing header"
    return took, float(found.group(1))


class ServerCPU:
    """The CPU time of the PostgreSQL backends serving one database (the API's pooled
    connections), read from /proc: the database's own share of a request, which the API's
    CPU leaves out. Only where the server runs on this machine (a throwaway or a local
    cluster) and this user may read its processes."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def seconds(self) -> dict[int, float]:
        pids = [r[0] for r in self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()")]
        found = {}
        for pid in pids:
            with contextlib.suppress(OSError):  # gone, or not ours to read
                found[pid] = _cpu_seconds(pid)
        return found


def measure(client: httpx.Client, pid: int, url: str, headers: dict[str, str],
            n: int = 21, server_cpu: ServerCPU | None = None) -> dict[str, float]:
    first = one(client, url, headers)
    cpu0 = _cpu_seconds(pid)
    db0 = server_cpu.seconds() if server_cpu else {}
    times = [one(client, url, headers) for _ in range(n - 1)]
    cpu = (_cpu_seconds(pid) - cpu0) * 1000 / (n - 1)
    db1 = server_cpu.seconds() if server_cpu else {}
    db_cpu = sum(t - db0.get(p, 0.0) for p, t in db1.items()) * 1000 / (n - 1)
    server = [s for _, s in times]
    return {"first": first[1], "median": statistics.median(server), "max": max(server),
            "client": statistics.median(c for c, _ in times), "cpu": cpu, "db_cpu": db_cpu}


def tabs(client: httpx.Client, pid: int, seconds: float
         ) -> tuple[float, dict[str, list[float]]]:
    """Three open tabs (overview, task list, overview with the 1 h chart), each polling every
    2 s as they do in a browser: the server's CPU over that time (% of one core) and each
    poll's server time in ms."""
    live = {"hx-request": "true"}
    polls = [("overview poll", "/dashboard/overview", live),
             ("tasks poll", "/dashboard/tasks", {**live, "hx-target": "tasks-live"}),
             ("overview poll, 1 h chart", "/dashboard/overview?hours=1", live)]
    times: dict[str, list[float]] = {name: [] for name, _, _ in polls}
    cpu0, start = _cpu_seconds(pid), time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for name, url, headers in polls:
            times[name].append(one(client, url, headers)[1])
        tick += 1
        time.sleep(max(0.0, start + 2 * tick - time.monotonic()))  # the tabs' 2 s rhythm
    return 100 * (_cpu_seconds(pid) - cpu0) / (time.monotonic() - start), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", help="a PostgreSQL server to use (default: a throwaway "
                        "cluster of the machine's PostgreSQL, as the tests start)")
    parser.add_argument("--queued", type=int, default=1_000_000,
                        help="tasks waiting: half due, half delayed (60 of those retrying)")
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--tabs-seconds", type=float, default=30.0)
    parser.add_argument("--keep", metavar="FILE_OR_NAME",
                        help="fill once and keep: SQLite, this file; PostgreSQL (with "
                        "--pg-url), this database. If it exists it is reused as it is (filled "
                        "by an earlier run; --queued/--finished are then ignored, and its "
                        "delayed tasks come due as time passes)")
    parser.add_argument("--only", metavar="REGEX",
                        help="measure only the requests whose name matches (e.g. 'schedule|ready')")
    args = parser.parse_args()
    if args.keep and args.backend == "postgres" and not args.pg_url:
        parser.error("--keep with --backend postgres needs --pg-url (a server that outlives "
                     "this run)")
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        there = False
        if not args.keep:
            db = stack.enter_context(database(args.backend, args.pg_url, Path(tmp)))
        elif args.backend == "sqlite":
            db, there = args.keep, Path(args.keep).exists()
        else:
            db, there = _pg_kept(args.pg_url, args.keep)
        run(args, db, Path(tmp), there)


def run(args: argparse.Namespace, db: str, tmp: Path, there: bool) -> None:
    if there:
        schedules = kept_schedules(args.backend, db)
        print(f"{args.backend}: reusing {redact(db)} as filled by an earlier run")
    else:
        started = time.perf_counter()
        now = time.time()
        fill = fill_sqlite if args.backend == "sqlite" else fill_postgres
        schedules = fill(Path(db) if args.backend == "sqlite" else db,  # type: ignore[arg-type]
                         args.queued, args.finished, now)
        print(f"{args.backend}: filled {args.queued:,} queued + {args.finished:,} "
              f"finished in {time.perf_counter() - started:.0f} s ({redact(db)})")
    print(f"load average before: {os.getloadavg()}")
    proc = procs.start("api", db, env={"LOCALFLOW_METRICS_ADDR": "off"},
                       log_dir=tmp)
    try:
        with httpx.Client(base_url=proc.url, timeout=120) as client:
            middle = client.get("/api/tasks", params={"limit": 500}).json()["next_cursor"]
            live = {"hx-request": "true"}
            cases = [
                ("overview page", "/dashboard", {}, "page"),
                ("overview poll (every 2 s)", "/dashboard/overview", live, "page"),
                ("tasks page", "/dashboard/tasks", {}, "page"),
                ("tasks poll (every 2 s)", "/dashboard/tasks",
                 {**live, "hx-target": "tasks-live"}, "page"),
                ("tasks: failed", "/dashboard/tasks?status=failed", {}, "page"),
                ("tasks: page 2 by cursor", f"/dashboard/tasks?cursor={middle}", {}, "page"),
                ("tasks: one schedule", f"/dashboard/tasks?schedule={schedules[3]}", {},
                 "page"),
                ("tasks: type filter", "/dashboard/tasks?type=shell", {}, "page"),
                ("tasks: ready", "/dashboard/tasks?status=ready", {}, "page"),
                ("tasks: retrying", "/dashboard/tasks?status=retrying", {}, "page"),
                ("tasks: scheduled", "/dashboard/tasks?status=scheduled", {}, "page"),
                # Every task is in queue "default": the queue filter's worst case.
                ("tasks: queue filter", "/dashboard/tasks?queue=default", {}, "page"),
                ("tasks: queue + ready", "/dashboard/tasks?queue=default&status=ready",
                 {}, "page"),
                ("queues page", "/dashboard/queues", {}, "page"),
                ("schedules page", "/dashboard/schedules", {}, "page"),
                ("system page", "/dashboard/system", {}, "page"),
                ("GET /api/tasks (first page)", "/api/tasks", {}, "api"),
                ("GET /api/tasks?status=queued", "/api/tasks?status=queued", {}, "api"),
                ("GET /api/queues", "/api/queues", {}, "api"),
                ("GET /metrics", "/metrics", {}, "metrics"),
            ]
            pg = args.backend == "postgres"
            server_cpu = ServerCPU(db) if pg else None
            out = io.StringIO()
            out.write("| request | server ms: first / median / max | client ms (median) "
                      "| API CPU ms per request |"
                      + (" database CPU ms per request |" if pg else "")
                      + " target |\n|---|---:|---:|---:|" + ("---:|" if pg else "")
                      + "---:|\n")
            for name, url, headers, kind in cases:
                if args.only and not re.search(args.only, name):
                    continue
                m = measure(client, proc.popen.pid, url, headers, server_cpu=server_cpu)
                out.write(f"| {name} | {m['first']:.1f} / {m['median']:.1f} / "
                          f"{m['max']:.1f} | {m['client']:.1f} | {m['cpu']:.1f} "
                          + (f"| {m['db_cpu']:.1f} " if pg else "")
                          + f"| ≤ {TARGETS[kind]:g} |\n")
            print(out.getvalue())
            if args.tabs_seconds <= 0:
                print(f"load average after: {os.getloadavg()}")
                return
            cpu, steady = tabs(client, proc.popen.pid, args.tabs_seconds)
            print(f"three tabs polling every 2 s for {args.tabs_seconds:g} s: API CPU "
                  f"{cpu:.1f}% of one core")
            print("| poll | server ms median | max | polls |\n|---|---:|---:|---:|")
            for name, times in steady.items():
                print(f"| {name} | {statistics.median(times):.1f} | {max(times):.1f} "
                      f"| {len(times)} |")
            print(f"load average after: {os.getloadavg()}")
    finally:
        proc.stop()


if __name__ == "__main__":
    main()
