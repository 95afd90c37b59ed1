"""What webhooks cost and how quickly they arrive (docs/webhooks.md).

    uv run python bench/webhooks.py                    # 500 tasks, SQLite
    uv run python bench/webhooks.py --tasks 200 --workers 4

A `localflow api` and a `localflow worker` (separate processes) on a fresh SQLite file, and a
receiver (http.server, in this process) on 127.0.0.1 that checks every signature. First N
`shell true` tasks without a callback: the time until all have succeeded. Then N with a
callback_url: the time until all have succeeded and until every delivery has arrived, and per
task the latency from its finished_at (written by the worker) to the receiver's receipt of its
delivery (one host, one clock).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import httpx

from bench import procs

SECRET = "bench-webhook-secret-0123456789abcdef"


class Receiver:
    def __init__(self) -> None:
        self.received: dict[str, float] = {}  # task id -> receipt time
        self.bad_signatures = 0
        self.posts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.time()
                stamp = self.headers.get("X-LocalFlow-Timestamp", "")
                mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body,
                               hashlib.sha256).hexdigest()
                ok = hmac.compare_digest("sha256=" + mac,
                                         self.headers.get("X-LocalFlow-Signature", ""))
                with receiver.lock:
                    receiver.posts += 1
                    if not ok:
                        receiver.bad_signatures += 1
                    receiver.received.setdefault(json.loads(body)["id"], now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        # http.server's default listen backlog is 5: 16 deliveries at once would see refusals.
        ThreadingHTTPServer.request_queue_size = 128
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start(command: str, db: Path, workdir: Path, *args: str) -> procs.Proc:
    argv = [sys.executable, "-m", "localflow.cli", command, *args]
    url = None
    if command == "api":
        port = procs.free_port()
        argv += ["--addr", f"127.0.0.1:{port}"]
        url = f"http://127.0.0.1:{port}"
    env = procs.clean_env(LOCALFLOW_DB=str(db), LOCALFLOW_WEBHOOK_SECRET=SECRET)
    proc = procs._start(argv, workdir / f"{command}-{time.monotonic_ns()}.log", env)
    proc.url = url
    if url:
        procs._wait_healthy(proc)
    return proc


def submit(api: httpx.Client, n: int, callback_url: str | None) -> list[str]:
    ids: list[str] = []
    for start_at in range(0, n, 500):
        tasks = [{"type": "shell", "payload": {"command": "true"}}
                 for _ in range(min(500, n - start_at))]
        if callback_url:
            for t in tasks:
                t["callback_url"] = callback_url
        r = api.post("/api/tasks/batch", json={"tasks": tasks})
        r.raise_for_status()
        ids += r.json()["ids"]
    return ids


def wait_until(check, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


def succeeded(api: httpx.Client) -> int:
    return api.get("/api/queues/default").json()["counts"]["succeeded"]


def _latency(api: httpx.Client, receiver: Receiver, task_id: str) -> float:
    """From the task's finished_at (the worker's commit) to the receiver's receipt."""
    task = api.get(f"/api/tasks/{task_id}").json()
    end = datetime.fromisoformat(task["finished_at"].replace("Z", "+00:00")).timestamp()
    return receiver.received[task_id] - end


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(ms), 1), "p95": round(ms[int(len(ms) * 0.95) - 1], 1),
            "max": round(ms[-1], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--alone", type=int, default=20, help="tasks sent one at a time after")
    args = p.parse_args()
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = work / "bench.db"
        api_proc = start("api", db, work)
        worker = start("worker", db, work, "--workers", str(args.workers),
                       "--metrics-addr", "off")
        try:
            with httpx.Client(base_url=api_proc.url, timeout=60) as api:
                began = time.monotonic()
                submit(api, args.tasks, None)
                done = wait_until(lambda: succeeded(api) >= args.tasks, 600, "plain tasks")
                plain = done - began

                began = time.monotonic()
                ids = submit(api, args.tasks, receiver.url)
                finished = wait_until(lambda: succeeded(api) >= 2 * args.tasks, 600,
                                      "hooked tasks")
                delivered = wait_until(lambda: len(receiver.received) >= args.tasks, 600,
                                       "deliveries")
                latencies = [_latency(api, receiver, task_id) for task_id in ids]
                retried = sum(1 for task_id in ids
                              if api.get(f"/api/tasks/{task_id}/deliveries").json()[0]["tries"] > 1)

                # One at a time: the latency of a delivery with no backlog ahead of it.
                alone = []
                for _ in range(args.alone):
                    [task_id] = submit(api, 1, receiver.url)
                    wait_until(lambda t=task_id: t in receiver.received, 60, "one delivery")
                    alone.append(_latency(api, receiver, task_id))
        finally:
            worker.stop()
            api_proc.stop()
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    print(json.dumps({
        "tasks": args.tasks, "worker_slots": args.workers,
        "plain_all_succeeded_s": round(plain, 2),
        "hooked_all_succeeded_s": round(finished - began, 2),
        "hooked_all_delivered_s": round(delivered - began, 2),
        "backlog_latency_ms": _summary(ms),
        "deliveries_needing_a_retry": retried,
        "alone_latency_ms": _summary(sorted(x * 1000 for x in alone)),
        "posts": receiver.posts, "bad_signatures": receiver.bad_signatures,
    }, indent=2))


if __name__ == "__main__":
    main()
