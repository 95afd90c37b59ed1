"""Submit latency while a million old tasks are pruned (docs/retention.md quotes the numbers).

    uv run python -m bench.prune_bench [--rows 1000000] [--seconds 20]

Builds a SQLite file with `--rows` succeeded tasks (one attempt each) that finished 30 days
ago, starts `localflow api` on it, and submits tasks one after the other over HTTP:

1. for `--seconds` with no worker (the baseline), then
2. with a `localflow worker --prune-interval 1s` pruning them (retention 7 d), until the old
   tasks are gone.

Prints p50/p99/max submit latency of each phase, how long the prune took, and the file's
size and free pages before and after.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench import procs
from shared.store.sqlite import migrations

BODY = {"type": "shell", "payload": {"command": "true"}, "delay": 3600}


def build(path: Path, rows: int) -> None:
    migrations.migrate(str(path))
    finished = time.time() - 30 * 86400
    with sqlite3.connect(path) as conn:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            conn.executemany(
                "INSERT INTO tasks (id, type, payload, status, run_at, timeout, attempts, "
                "created_at, updated_at, started_at, finished_at, result) VALUES "
                "(?, 'shell', '{\"command\":\"true\",\"args\":[],\"env\":{}}', 'succeeded', "
                "?, 300, 1, ?, ?, ?, ?, '{\"exit_code\":0,\"stdout\":\"\",\"stderr\":\"\"}')",
                [(f"0{start + i:025d}", finished, finished, finished, finished, finished)
                 for i in range(n)])
            conn.executemany(
                "INSERT INTO task_attempts (task_id, attempt, worker_id, started_at, "
                "finished_at, outcome) VALUES (?, 1, 'bench', ?, ?, 'succeeded')",
                [(f"0{start + i:025d}", finished, finished) for i in range(n)])
            conn.commit()


def file_facts(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        size, free, page = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                            for p in ("page_count", "freelist_count", "page_size"))
        old = conn.execute("SELECT count(*) FROM tasks WHERE status = 'succeeded'").fetchone()[0]
    return f"{size * page / 2**20:.0f} MiB, {free} free pages, {old} old tasks"


def old_left(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM tasks INDEXED BY tasks_finished "
                            "WHERE finished_at IS NOT NULL").fetchone()[0]


def submit_for(client: httpx.Client, until: callable) -> list[float]:
    times = []
    while not until():
        began = time.perf_counter()
        r = client.post("/api/tasks", json=BODY)
        times.append(time.perf_counter() - began)
        assert r.status_code == 201, r.text
    return times


def summary(name: str, times: list[float]) -> str:
    q = statistics.quantiles(times, n=100)
    return (f"{name}: {len(times)} submits, p50 {q[49] * 1000:.1f} ms, "
            f"p99 {q[98] * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = work / "prune.db"
        began = time.monotonic()
        build(db, args.rows)
        print(f"built in {time.monotonic() - began:.0f} s: {file_facts(db)}")
        api = procs.localflow("api", db, work)
        worker = None
        try:
            with httpx.Client(base_url=api.url, timeout=60) as client:
                end = time.monotonic() + args.seconds
                print(summary("baseline (no pruning)",
                              submit_for(client, lambda: time.monotonic() > end)))
                worker = procs.localflow("worker", db, work, "--workers", "1",
                                         "--metrics-addr", "off", "--prune-interval", "1s")
                began = time.monotonic()
                checked = [0.0]

                def done() -> bool:
                    if time.monotonic() - checked[0] < 1.0:
                        return False
                    checked[0] = time.monotonic()
                    return old_left(db) == 0

                times = submit_for(client, done)
                print(summary("while pruning", times))
                print(f"pruned {args.rows} tasks (and their attempts) in "
                      f"{time.monotonic() - began:.0f} s")
        finally:
            if worker:
                worker.stop()
            api.stop()
        print(f"after: {file_facts(db)}")


if __name__ == "__main__":
    main()
