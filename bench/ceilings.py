"""Ceilings: how fast this machine can go at all, with nothing of LocalFlow's own work, beside
LocalFlow and Huey in the same run. For the targets issue 10 calls out of reach, this measures
the part nothing LocalFlow does can shorten.

    uv run python bench/ceilings.py                 # both parts (~1 minute)
    uv run python bench/ceilings.py --only http     # or --only writer, --only pickup

http: wrk (c=64, as bench/run.py) against three servers in turn:
  - `bare`: uvicorn with LocalFlow's exact HTTP settings (uvloop, httptools through
    localflow/http_protocol.py, no proxy headers, no access log) serving an ASGI app that reads
    the body and answers 201 with a 300-byte JSON body. No framework, no database: what any
    Python app on this server stack could reach on this machine while wrk shares its cores.
  - `localflow api` on a fresh SQLite file (the real submit path);
  - Huey's in-process enqueue (bench/huey_proc.py), the target's reference.
writer: the full LocalFlow schema (migrations/sqlite) on a fresh file with the writer's own
  pragmas (WAL, synchronous=FULL, temp_store=MEMORY), batches of 100 rows through the same
  INSERT as the API's (shared/sql/sqlite/queue.sql: insert_new_tasks, the rows as one JSON
  array) and one COMMIT per batch, from one thread and no event loop: the most any batch path
  can insert with this schema. Then the same without the triggers (kept counts, event log),
  and without the triggers and the secondary indexes (the bare table of the issue's probe).
pickup: the pickup row's path (created_at -> handler start, API and worker in two processes) with
  nothing but sqlite3 calls: one process inserts a task with the API's statement (stamping
  created_at just before BEGIN), sends a datagram to the other before its COMMIT (as the API's
  wake-up does) and commits with synchronous=FULL; the other, blocked in recv, retries BEGIN
  IMMEDIATE without sleeping until the lock is free, runs the early start's claim statement
  (shared/sql/sqlite/queue.sql: claim, then the attempt row) and takes the time a handler would
  start (before its COMMIT, as the early start does). No event loop, no threads, no LocalFlow
  code on the path: the least any design on this schema, disk and pair of processes can reach.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import procs
from bench.http_load import SUBMIT_BODY, run_load
from bench.localflow_side import _percentiles

ANSWER = json.dumps({"id": "0" * 26, "type": "shell", "status": "queued", "priority": 0,
                     "queue": "default", "payload": {"command": "true"},
                     "attempts": 0, "max_attempts": 3, "created_at": "2026-12-01T00:00:00Z",
                     "run_at": "2026-12-01T00:00:00Z", "pad": "x" * 60}).encode()


# -- http ---------------------------------------------------------------------------------------

async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body and answers 201: the least an ASGI app can do per submission."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": ANSWER})


def serve_bare(port: int) -> None:
    import uvicorn

    from localflow.http_protocol import OneWriteHttpProtocol

    # The same settings as localflow/http_server.py, minus the app.
    config = uvicorn.Config(bare_app, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, log_config=None, lifespan="on",
                            proxy_headers=False, http=OneWriteHttpProtocol)
    uvicorn.Server(config).run()


def _bare_server(workdir: Path) -> procs.Proc:
    port = procs.free_port()
    proc = procs._start([sys.executable, "-m", "bench.ceilings", "bare", str(port)],
                        workdir / "bare.log", procs.clean_env())
    proc.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.post(f"{proc.url}/api/tasks", json=SUBMIT_BODY, timeout=1)
            return proc
        except httpx.TransportError:
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare server did not start:\n{proc.log()}") from None
            time.sleep(0.05)


def _load(proc: procs.Proc, seconds: float, connections: int, workdir: Path) -> dict[str, Any]:
    cpu0 = procs.cpu_seconds(proc.pid)
    load = run_load(f"{proc.url}/api/tasks", SUBMIT_BODY, seconds, connections, workdir)
    cpu = procs.cpu_seconds(proc.pid) - cpu0
    return {"per_s": load.ok_per_second, "p99_ms": load.latency_ms.get("p99"),
            "errors": load.errors, "server_cpu_us_per_request": 1e6 * cpu / max(1, load.ok),
            "server_cpu_percent": 100 * cpu / load.seconds}


def http_part(workdir: Path, seconds: float, connections: int, rounds: int) -> dict[str, Any]:
    from bench.huey_side import _run as huey_run
    from bench.localflow_side import fresh_db

    out: dict[str, list[Any]] = {"bare": [], "localflow": [], "huey_enqueue_per_s": []}
    for _ in range(rounds):  # alternated, so a busy moment hits both
        bare = _bare_server(workdir)
        try:
            out["bare"].append(_load(bare, seconds, connections, workdir))
        finally:
            bare.stop()
        api = procs.localflow("api", fresh_db(workdir, f"ceiling-{time.monotonic_ns()}"),
                              workdir)
        try:
            with httpx.Client() as client:  # warm-up, as bench/run.py
                for _ in range(50):
                    client.post(f"{api.url}/api/tasks", json=SUBMIT_BODY).raise_for_status()
            out["localflow"].append(_load(api, seconds, connections, workdir))
        finally:
            api.stop()
        db = workdir / f"huey-{time.monotonic_ns()}.db"
        enq, _ = huey_run(workdir, "enqueue", "--db", str(db), "--n", "20000")
        out["huey_enqueue_per_s"].append(20000 / enq["seconds"])
    return out


# -- writer -------------------------------------------------------------------------------------

def _writer_db(path: Path, variant: str) -> sqlite3.Connection:
    from shared.store.sqlite import migrations

    migrations.migrate(str(path))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA temp_store=MEMORY")
    if variant in ("no-triggers", "bare-table"):
        for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='tasks'"
        ).fetchall():
            conn.execute(f"DROP TRIGGER {name}")
    if variant == "bare-table":
        for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='tasks' "
                "AND sql IS NOT NULL").fetchall():
            conn.execute(f"DROP INDEX {name}")
    return conn


def writer_once(variant: str, batches: int, size: int) -> dict[str, float]:
    from shared.ids import new_ids
    from shared.sql import Queries

    Q = Queries("sqlite", "queue")

    with tempfile.TemporaryDirectory() as tmp:
        conn = _writer_db(Path(tmp) / "w.db", variant)
        payload = json.dumps({"command": "true"})
        now = time.time()
        rows = [json.dumps([(i, "shell", payload, 0, now, 3, 300.0, now, "default", None)
                            for i in new_ids(size)]) for _ in range(batches)]
        cpu0, t0 = time.thread_time(), time.perf_counter()
        for params in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(Q.insert_new_tasks, (params,))
            conn.execute("COMMIT")
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        (n,) = conn.execute("SELECT count(*) FROM tasks").fetchone()
        conn.close()
    assert n == batches * size, (n, batches * size)
    return {"tasks_per_s": n / wall, "cpu_us_per_task": 1e6 * cpu / n}


def writer_part(batches: int, size: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {v: [] for v in
                                               ("full", "no-triggers", "bare-table")}
    for _ in range(rounds):
        for variant in out:
            out[variant].append(writer_once(variant, batches, size))
    return out


# -- pickup -------------------------------------------------------------------------------------

def pickup_worker(db: str, sock_path: str, out: str, expect: int) -> None:
    """The claiming side (its own process): woken by a datagram, claim what is due."""
    import contextlib
    import select
    import socket

    from shared.sql import Queries

    Q = Queries("sqlite", "queue")
    # timeout=0: SQLite's own busy handler would sleep 1 ms and more between tries.
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA temp_store=MEMORY")
    wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    wake.bind(sock_path)
    released = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    released.bind(sock_path + ".released")
    released.setblocking(False)
    started: dict[str, float] = {}
    while len(started) < expect:
        wake.recv(16)
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:
                # The API still holds the lock: wait for its byte after COMMIT (as LocalFlow's
                # unlock FIFO does). A spin here slowed the API's commit threefold.
                select.select([released], [], [], 0.005)
        with contextlib.suppress(BlockingIOError):
            while True:  # the bytes of commits before this BEGIN: none is for a later one
                released.recv(16)
        now = time.time()
        rows = conn.execute(Q.claim, {"now": now, "lease_until": now + 60, "worker_id": "w",
                                      "limit": 64, "closed": "[]", "only": None}).fetchall()
        conn.executemany(Q.insert_attempt, [(r[0], r[3], "w", now) for r in rows])
        at = time.time()  # the early start: handlers start here, before the COMMIT
        for r in rows:
            started[r[0]] = at
        conn.execute("COMMIT")
    Path(out).write_text(json.dumps(started))


def pickup_part(tasks: int, gap: float) -> dict[str, Any]:
    import contextlib
    import socket
    import subprocess

    from shared.ids import new_ids
    from shared.sql import Queries

    Q = Queries("sqlite", "queue")
    with tempfile.TemporaryDirectory() as tmp:
        conn = _writer_db(Path(tmp) / "p.db", "full")
        sock_path, out = str(Path(tmp) / "wake"), str(Path(tmp) / "started.json")
        worker = subprocess.Popen([sys.executable, __file__, "pickup-worker",
                                   str(Path(tmp) / "p.db"), sock_path, out, str(tasks)])
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock_path + ".released"):
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the pickup worker did not start")
                time.sleep(0.01)
            wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            released = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            released.setblocking(False)
            payload = json.dumps({"command": "true"})
            created: dict[str, float] = {}
            committed: dict[str, float] = {}
            for task_id in new_ids(tasks):
                now = time.time()
                created[task_id] = now
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(Q.insert_new_tasks, (json.dumps(
                    [(task_id, "shell", payload, 0, now, 3, 300.0, now, "default", None)]),))
                wake.sendto(b"!", sock_path)  # before COMMIT, as the API's wake-up
                conn.execute("COMMIT")
                committed[task_id] = time.time()
                with contextlib.suppress(BlockingIOError):  # its queue is full: it will see
                    released.sendto(b"!", sock_path + ".released")
                time.sleep(gap)
            worker.wait(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
        started = json.loads(Path(out).read_text())
        conn.close()

    def ms(since: dict[str, float], until: dict[str, float]) -> dict[str, float]:
        return _percentiles(sorted((until[t] - since[t]) * 1000 for t in created))

    return {
        "tasks": tasks,
        "created_to_handler_ms": ms(created, started),
        "created_to_api_commit_ms": ms(created, committed),
        "api_commit_to_handler_ms": ms(committed, started),
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "bare":
        serve_bare(int(sys.argv[2]))
        return
    if len(sys.argv) == 6 and sys.argv[1] == "pickup-worker":
        pickup_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("http", "writer", "pickup"))
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--pickup-tasks", type=int, default=500)
    args = p.parse_args()
    result: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="lf-ceilings-") as tmp:
        if args.only in (None, "http"):
            result["http"] = http_part(Path(tmp), args.seconds, args.connections, args.rounds)
        if args.only in (None, "writer"):
            result["writer"] = writer_part(args.batches, 100, args.rounds)
        if args.only in (None, "pickup"):
            result["pickup"] = [pickup_part(args.pickup_tasks, 0.005)
                                for _ in range(args.rounds)]
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
