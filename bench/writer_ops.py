"""Where a 64-slot worker's CPU goes, in process: the event loop against the SQLite writer
thread, and inside the writer each write op (claim, complete_many, ...) and the COMMIT apart.

    uv run python bench/writer_ops.py --tasks 20000 --slots 64

N queued tasks, then the real Worker (no-op handler, on uvloop as `localflow worker` runs)
until all N succeeded. `Database._run_batch` is wrapped to time each op of a transaction with
the writer thread's own CPU clock and the wall clock (wall minus CPU: fsync, and waits for the
GIL while the event loop holds it). Prints per task: the loop thread's CPU, each op's, the
commit's. Numbers from one process on a shared machine move 10-20 % between runs: alternate
two trees (see worker_cpu.py) before believing a difference.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from bench.localflow_side import _pre_enqueue, fresh_db
from shared.queue import Queue
from shared.settings import Settings
from shared.store import open_store
from shared.store.sqlite.database import Database
from worker.pool import Worker

SPENT: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])  # wall, cpu


def _timed_run_batch(self: Database, ops: list[Any]) -> list[tuple[bool, Any]]:
    """Database._run_batch with each op and the COMMIT timed (the error path left out: the
    bench never takes it)."""
    conn = self._writer
    assert conn is not None
    wall, cpu = time.perf_counter(), time.thread_time()

    def lap(name: str) -> None:
        nonlocal wall, cpu
        w, c = time.perf_counter(), time.thread_time()
        SPENT[name][0] += w - wall
        SPENT[name][1] += c - cpu
        wall, cpu = w, c

    self._begin(conn)
    lap("BEGIN")
    results = []
    for op in ops:
        results.append((True, op(conn)))
        lap(getattr(op, "func", op).__qualname__.replace(".<locals>", ""))
    self._run_before_commit()
    conn.execute("COMMIT")
    lap("COMMIT")
    self.batches += 1
    return results


async def _run(db: Path, n: int, slots: int) -> None:
    settings = Settings(db=str(db), workers=slots)
    store = await open_store(settings, migrate_first=False)
    queue = Queue(store, settings=settings)
    done, stop = 0, asyncio.Event()

    async def noop(payload: Any, ctx: Any) -> dict[str, Any]:
        return {}

    def on_event(kind: str, *_: Any) -> None:
        nonlocal done
        if kind == "succeeded":
            done += 1
            if done == n:
                stop.set()

    worker = Worker(queue, settings, handlers={"shell": noop})
    worker.on_event = on_event
    SPENT.clear()
    wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    await worker.run(stop)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    loop_cpu = time.thread_time() - loop_cpu
    await store.close()
    us = 1e6 / n
    print(f"{n / wall:,.0f} tasks/s; process CPU {cpu * us:.1f} us/task, "
          f"event loop thread {loop_cpu * us:.1f} us/task")
    print("writer thread, per task:")
    for name, (w, c) in sorted(SPENT.items(), key=lambda kv: -kv[1][1]):
        if c * us >= 0.05:
            print(f"  {name:42} CPU {c * us:5.1f} us   wall {w * us:5.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--slots", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        db = fresh_db(Path(workdir), "ops")
        asyncio.run(_pre_enqueue(db, args.tasks))
        Database._run_batch = _timed_run_batch  # type: ignore[method-assign]
        uvloop.run(_run(db, args.tasks, args.slots))


if __name__ == "__main__":
    sqlite3.enable_callback_tracebacks(True)
    main()
