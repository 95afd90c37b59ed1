"""The LocalFlow measurements: (a) HTTP submit, (b) end to end, (c) pickup, (d) idle CPU,
(e) scale-out: several worker processes on one queue (SQLite file or PostgreSQL database)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.http_load import SUBMIT_BODY, LoadResult, batch_body, run_load
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import open_store, redact
from shared.store.sqlite import migrations
from shared.store.sqlite.wake import wake_dir

IDLE_RSS_SECONDS = 3.0  # after (a)'s loads, before the API's RSS is read again


def fresh_db(workdir: Path, name: str) -> Path:
    path = workdir / f"{name}.db"
    migrations.migrate(str(path))
    return path


def warm_up(workdir: Path) -> None:
    """Start what the measured processes start, once, so that every module they import is in
    the bench's bytecode cache (procs.PYCACHE) before any of them is measured: a `localflow
    api` answering a submission and a batch, and the worker side's imports."""
    api = procs.localflow("api", fresh_db(workdir, "warm-up"), workdir)
    try:
        with httpx.Client(base_url=api.url) as client:
            client.post("/api/tasks", json=SUBMIT_BODY).raise_for_status()
            client.post("/api/tasks/batch", json={"tasks": [SUBMIT_BODY] * 2}).raise_for_status()
            client.get("/metrics").raise_for_status()
    finally:
        api.stop()
    imports = "import localflow.cli, localflow.runtime, bench.lf_worker, worker.handlers.shell"
    subprocess.run([sys.executable, "-c", imports], cwd=procs.REPO, env=procs.clean_env(),
                   check=True, timeout=300)


def _load_dict(load: LoadResult, per_request: int = 1) -> dict[str, Any]:
    return {
        "tasks_per_s": load.ok_per_second * per_request,
        "requests_per_s": load.ok_per_second,
        "requests": load.requests, "ok": load.ok, "errors": load.errors,
        "seconds": load.seconds, "latency_ms": load.latency_ms, "tool": load.tool,
        "command": load.command,
    }


async def _counts(db: str) -> dict[str, int]:
    database = await open_store(Settings(db=db), migrate_first=False)
    try:
        return await database.counts()
    finally:
        await database.close()


def _count_tasks(db: Path | str) -> int:
    return sum(asyncio.run(_counts(str(db))).values())


def http_submit(
    workdir: Path, seconds: float, connections: int, batch_size: int, db: str | None = None
) -> dict[str, Any]:
    """(a) POST /api/tasks against `localflow api` with no worker: only the submit path.
    `db`: a fresh, migrated database to use (a postgresql:// URL); default a new SQLite file."""
    db = db or str(fresh_db(workdir, "submit"))
    api = procs.localflow("api", db, workdir)
    out: dict[str, Any] = {"process": " ".join(api.argv[1:]), "db": redact(db)}
    try:
        url = f"{api.url}/api/tasks"
        with httpx.Client() as client:  # warm-up: first requests build Litestar's caches
            for _ in range(50):
                client.post(url, json=SUBMIT_BODY).raise_for_status()
        before = _count_tasks(db)
        cpu0 = procs.cpu_seconds(api.pid)
        single = run_load(url, SUBMIT_BODY, seconds, connections, workdir)
        cpu = procs.cpu_seconds(api.pid) - cpu0
        out["single"] = _load_dict(single)
        out["single"]["tasks_in_db"] = _count_tasks(db) - before
        # Near 100%: the API process is CPU-bound (Python), not waiting on the disk.
        out["single"]["api_cpu_percent"] = 100 * cpu / single.seconds
        body, why = batch_body(api.url, batch_size)
        if body is None:
            out["batch"] = {"skipped": why}
        else:
            batch = run_load(f"{url}/batch", body, seconds, max(2, connections // 8), workdir)
            out["batch"] = _load_dict(batch, per_request=batch_size)
            out["batch"]["batch_size"] = batch_size
        out["api_rss_mb_after"] = procs.rss_mb(api.pid)  # after both loads
        # And once it has been idle for a while: an idle API gives back the page caches and
        # free heap a load left (localflow/idle_memory.py: after one idle second).
        time.sleep(IDLE_RSS_SECONDS)
        out["api_rss_mb_idle"] = procs.rss_mb(api.pid)
        out["api_rss_idle_seconds"] = IDLE_RSS_SECONDS
    finally:
        api.stop()
    return out


async def _pre_enqueue(db: Path | str, n: int, chunk: int = 500) -> float:
    database = await open_store(Settings(db=str(db)), migrate_first=False)
    queue = Queue(database, settings=Settings(db=str(db)))
    create = TaskCreate(type="shell", payload={"command": "true"})
    started = time.perf_counter()
    try:
        for i in range(0, n, chunk):
            await queue.enqueue_many([create] * min(chunk, n - i))
        return time.perf_counter() - started
    finally:
        await database.close()


def run_to_the_end(
    workdir: Path, db: Path, n: int, slots: int, name: str, timeout: float
) -> dict[str, Any]:
    """A bench/lf_worker.py process (no-op handler) on db until it has run n tasks: what it
    wrote to `<name>.json` (start and end times, CPU, claims, write transactions) and the
    command that started it."""
    result = workdir / f"{name}.json"
    worker = procs.python_module(
        "bench.lf_worker", workdir, "--db", str(db), "--slots", str(slots), "--expect", str(n),
        "--out", str(result),
    )
    try:
        worker.popen.wait(timeout=timeout)
    finally:
        worker.stop()
    if worker.popen.returncode != 0 or not result.exists():
        raise RuntimeError(f"bench worker failed:\n{worker.log()}")
    return {**json.loads(result.read_text()), "command": " ".join(worker.argv[1:])}


def end_to_end(workdir: Path, n: int, slots: int) -> dict[str, Any]:
    """(b) N queued tasks, then a worker process (no-op handler) runs them all."""
    db = fresh_db(workdir, f"e2e-{slots}")
    enqueue_s = asyncio.run(_pre_enqueue(db, n))
    data = run_to_the_end(workdir, db, n, slots, f"e2e-{slots}", timeout=600)
    seconds = data["done"] - data["started"]
    return {
        "slots": slots, "tasks": n, "seconds": seconds, "tasks_per_s": n / seconds,
        # Diagnostics: is the worker CPU-bound, and how many commits (fsyncs) per task?
        "worker_cpu_percent": 100 * data["cpu_seconds"] / seconds,
        "worker_user_seconds": data.get("user_seconds"),
        "worker_system_seconds": data.get("system_seconds"),
        "worker_thread_cpu_seconds": data.get("thread_cpu_seconds"),
        "write_transactions_per_task": data["write_transactions"] / n,
        **_claim_stats(data["claims"]),
        "pre_enqueue_tasks_per_s": n / enqueue_s,
        "worker_rss_mb_after": data.get("rss_mb"),
        "command": data["command"],
    }


def scale_out(workdir: Path, db: str, n: int, processes: int, slots: int) -> dict[str, Any]:
    """(e) N queued tasks, then P worker processes (no-op handler, `slots` each) on the same
    database run them all. The processes open their stores and say "ready"; all are told
    "go" at once, and the time runs from "go" to the last committed success among them."""
    enqueue_s = asyncio.run(_pre_enqueue(db, n))
    results = [workdir / f"scale-{processes}-{i}-{time.monotonic_ns()}.json"
               for i in range(processes)]
    workers = [procs.python_module("bench.lf_worker", workdir, "--slots", str(slots),
                                   "--expect", "0", "--wait-go", "--out", str(out), db=db,
                                   stdin=subprocess.PIPE)
               for out in results]
    try:
        for worker in workers:
            procs.wait_line(worker, "ready", timeout=60)
        go = time.time()
        for worker in workers:
            assert worker.popen.stdin is not None
            worker.popen.stdin.write(b"go\n")
            worker.popen.stdin.flush()
        # The parent sees the total; 0.1 s polls of the counts cost the database little.
        deadline = time.monotonic() + 600
        while asyncio.run(_counts(db)).get("succeeded", 0) < n:
            if any(w.popen.poll() is not None for w in workers):
                raise RuntimeError("a bench worker exited:\n"
                                   + "\n".join(w.log()[-2000:] for w in workers))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} tasks not done in 600 s")
            time.sleep(0.1)
        for worker in workers:
            worker.popen.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.popen.wait(60)
    finally:
        for worker in workers:
            worker.stop()
    data = [json.loads(path.read_text()) for path in results]
    done = sum(d["count"] for d in data)
    if done != n:
        raise RuntimeError(f"the workers report {done} successes, expected {n}")
    seconds = max(d["last_success"] for d in data) - go
    cpu = sum(d["cpu_seconds"] for d in data)
    return {
        "processes": processes, "slots_per_process": slots, "tasks": n, "seconds": seconds,
        "tasks_per_s": n / seconds, "per_process": [d["count"] for d in data],
        # Of the two cores, how much the workers took (the rest: the database server, if any).
        "workers_cpu_percent": 100 * cpu / seconds,
        "write_transactions_per_task": sum(d["write_transactions"] for d in data) / n,
        "pre_enqueue_tasks_per_s": n / enqueue_s,
        "command": " ".join(workers[0].argv[1:]), "db": redact(db),
    }


def _claim_stats(claims: list[list[float]]) -> dict[str, Any]:
    taken = [c for c in claims if c[0] > 0]
    if not taken:
        return {}
    ms = sorted(c[1] * 1000 for c in taken)
    return {
        "claims": len(taken), "tasks_per_claim": sum(c[0] for c in taken) / len(taken),
        "claim_ms": _percentiles(ms),
    }


def pickup_latency(workdir: Path, n: int, gap: float) -> dict[str, Any]:
    """(c) One task at a time over HTTP to `localflow api`; a separate worker process
    records when each handler started."""
    db = fresh_db(workdir, "pickup")
    api = procs.localflow("api", db, workdir)
    result = workdir / "pickup.json"
    worker = procs.python_module(
        "bench.lf_worker", workdir, "--db", str(db), "--slots", "8", "--expect", str(n),
        "--out", str(result),
    )
    sent: dict[str, float] = {}
    created: dict[str, float] = {}
    try:
        procs.wait_line(worker, "ready")
        with httpx.Client(base_url=api.url, timeout=10) as client:
            for _ in range(n):
                before = time.time()
                resp = client.post("/api/tasks", json=SUBMIT_BODY)
                resp.raise_for_status()
                task = resp.json()
                sent[task["id"]] = before
                created[task["id"]] = datetime.fromisoformat(task["created_at"]).timestamp()
                time.sleep(gap)
        worker.popen.wait(timeout=60)
    finally:
        worker.stop()
        api.stop()
    starts: dict[str, float] = json.loads(result.read_text())["starts"]
    from_created = sorted((starts[i] - created[i]) * 1000 for i in created)
    from_sent = sorted((starts[i] - sent[i]) * 1000 for i in sent)
    return {
        "tasks": n, "gap_ms": gap * 1000,
        "from_created_ms": _percentiles(from_created),
        "from_client_send_ms": _percentiles(from_sent),
        "api": " ".join(api.argv[1:]), "worker": " ".join(worker.argv[1:]),
    }


def disk_probe(workdir: Path, commits: int) -> dict[str, Any]:
    """How long one small fsync'd (synchronous=FULL, WAL) SQLite commit takes right now.
    Both queues wait on this; on a shared VM it moves between runs, so it is reported."""
    path = workdir / f"probe-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (x TEXT)")
        times = []
        for _ in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES ('x')")
            started = time.perf_counter()
            conn.execute("COMMIT")
            times.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    times.sort()
    return {"commits": commits, "commit_ms": _percentiles(times)}


def _percentiles(values: list[float]) -> dict[str, float]:
    def pick(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": values[-1]}


def idle_cpu(workdir: Path, seconds: float) -> dict[str, Any]:
    """(d) CPU time of an idle `localflow worker` (utime+stime of all its threads)."""
    db = fresh_db(workdir, "idle")
    worker = procs.localflow("worker", db, workdir)
    try:
        deadline = time.monotonic() + 30
        while not any(wake_dir(str(db)).glob("*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # let start-up (imports, rescue, first claim) finish
        cpu0, t0 = procs.cpu_seconds(worker.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = procs.cpu_seconds(worker.pid), time.monotonic()
        rss = procs.rss_mb(worker.pid)
    finally:
        worker.stop()
    return {
        "seconds": t1 - t0, "cpu_seconds": cpu1 - cpu0,
        "percent_of_one_core": 100 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": rss,
        "command": " ".join(worker.argv[1:]),
    }
