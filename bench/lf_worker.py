"""A LocalFlow worker process for the bench: the real Worker, queue and database code, with the
`shell` type mapped to a no-op handler so we time the platform and not `fork/exec`.

    python -m bench.lf_worker --db X --slots 8 --expect N --out result.json
    python -m bench.lf_worker --slots 8 --expect 0 --wait-go --out result.json

On uvloop, as `localflow worker` runs (--loop asyncio: the standard library's loop).

--db (or LOCALFLOW_DB: a URL's password stays out of the process list) is a SQLite file or a
postgresql:// URL. Exits once N tasks have *succeeded* (their completion committed), writing
when the worker loop started, when the Nth success committed, and (for the pickup-latency run)
the wall-clock time each handler started. With --expect 0 it runs until SIGTERM (one of
several worker processes sharing a queue: the parent sees the total) and reports its own
count and when its last success committed; with --wait-go it says "ready" once open and
starts claiming only when a line arrives on stdin, so several processes start together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import uvloop

import localflow.lean  # noqa: F401  # as `localflow worker`: no rich (localflow/lean.py)
from bench.procs import rss_mb
from shared import logs
from shared.heap import freeze_start_up_objects
from shared.queue import Claimed, Queue
from shared.settings import Settings
from shared.store import open_store
from worker.handlers import HandlerContext
from worker.pool import Worker


async def main(db_path: str, slots: int, expect: int, out: str, poll: float,
               wait_go: bool) -> None:
    # LOCALFLOW_SYNCHRONOUS=NORMAL only for diagnosis (how much of a latency is fsync); the
    # bench itself always runs FULL, as `localflow` does by default.
    settings = Settings(db=db_path, workers=slots, poll=poll,
                        synchronous=os.environ.get("LOCALFLOW_SYNCHRONOUS", "FULL"))
    db = await open_store(settings, migrate_first=False)
    queue = Queue(db, settings=settings)
    starts: dict[str, float] = {}

    async def noop(payload: Any, ctx: HandlerContext) -> dict[str, Any]:
        starts[ctx.task_id] = time.time()
        return {}

    worker = Worker(queue, settings, handlers={"shell": noop})
    stop = asyncio.Event()
    done_at: list[float] = []
    last_success = [0.0]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    succeeded = 0

    def on_event(kind: str, claimed: Claimed, _: float) -> None:
        # "succeeded" is reported after the completion committed.
        nonlocal succeeded
        if kind == "succeeded":
            succeeded += 1
            last_success[0] = time.time()
            if succeeded == expect:
                done_at.append(time.time())
                stop.set()

    worker.on_event = on_event
    claims: list[tuple[int, float]] = []
    if hasattr(worker, "on_claim"):  # (tasks claimed, seconds the claim took)
        worker.on_claim = lambda n, seconds: claims.append((n, seconds))
    freeze_start_up_objects()  # as `localflow worker` does (localflow/runtime.py)
    if wait_go:
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
    batches0, cpu0, times0 = db.write_transactions, time.process_time(), os.times()
    threads0 = _thread_cpu()
    started = time.time()
    run = asyncio.create_task(worker.run(stop))
    # Tell the parent we are listening for wake-ups (the pickup test must not race start-up).
    # (its wake-up socket is bound before the worker counts as running)
    while not worker.running and not run.done():
        await asyncio.sleep(0.005)
    if not wait_go:
        print("ready", flush=True)
    await run
    cpu, batches = time.process_time() - cpu0, db.write_transactions - batches0
    times = os.times()  # user and system apart: fsync and WAL writes are system time
    threads = _thread_cpu()
    # The run only: start-up (imports, opening the store) left out.
    threads = {name: s - threads0.get(name, 0.0) for name, s in threads.items()}
    await db.close()
    with open(out, "w") as f:
        json.dump({"started": started, "done": done_at[0] if done_at else None,
                   "count": succeeded, "cpu_seconds": cpu, "write_transactions": batches,
                   "user_seconds": times.user - times0.user,
                   "system_seconds": times.system - times0.system,
                   "claims": claims, "last_success": last_success[0], "rss_mb": rss_mb(),
                   "thread_cpu_seconds": threads,
                   "starts": starts}, f)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each of this process's threads since it started, by
    Python thread name: the event loop (MainThread), the database writer, the reader (Linux
    /proc only; threads Python did not start are "other")."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            name = names.get(int(tid), "other")
            seconds[name] = seconds.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    except OSError:
        return {}
    return seconds


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=os.environ.get("LOCALFLOW_DB"))
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--poll", type=float, default=Settings().poll)
    parser.add_argument("--wait-go", action="store_true")
    # `localflow worker` runs on uvloop (localflow/cli.py); asyncio's own loop for comparison.
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if not args.db:
        parser.error("--db or LOCALFLOW_DB is required")
    logs.configure("json", level=logging.WARNING)
    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    run(main(args.db, args.slots, args.expect, args.out, args.poll, args.wait_go))
