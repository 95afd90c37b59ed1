"""What live output costs the worker's database: N chatty shell tasks running at once.

    uv run python bench/live_output.py                     # 32 tasks, 10 s, SQLite
    uv run python bench/live_output.py --tasks 8 --seconds 3
    uv run python bench/live_output.py --db postgresql://user:pw@host/db   # a migrated db

The real `worker.pool.Worker` with its real shell handler, in this process, on a fresh SQLite
file (or the PostgreSQL database given). N tasks each run a Python program that prints a line
every millisecond (each flushed: a write per line, as a chatty program does) for --seconds, then
says on stderr how many it printed. Measured: the lines printed, the live-output transactions the
worker committed (worker/live_output.py flushes) and the rows they stored, each flush's time
(p50/p99), and the largest stored tail. The point: writes follow the interval, not the lines.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import open_store
from worker.pool import Worker

CHATTY = (
    "import sys, time\n"
    "end, i = time.monotonic() + float(sys.argv[1]), 0\n"
    "while time.monotonic() < end:\n"
    "    print(f'line {i} of a chatty task, with some words to make it longer', flush=True)\n"
    "    i += 1\n"
    "    time.sleep(0.001)\n"
    "print(i, file=sys.stderr)\n"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0, help="how long each task prints")
    p.add_argument("--db", help="a PostgreSQL URL (default: a fresh SQLite file)")
    return p.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "live.db")
        settings = Settings(db=db, workers=args.tasks, lease=60, poll=0.25,
                            metrics_addr="off")
        store = await open_store(settings)
        queue = Queue(store, settings=settings)
        ids = [t.id for t, _ in await queue.enqueue_many([
            TaskCreate(type="shell", timeout=args.seconds + 120, payload={
                "command": sys.executable, "args": ["-c", CHATTY, str(args.seconds)]})
            for _ in range(args.tasks)])]
        worker = Worker(queue, settings)
        times: list[float] = []
        rows: list[int] = []
        largest = [0]
        save = store.save_live_output

        async def timed(outputs, ended, now):  # type: ignore[no-untyped-def]
            began = time.perf_counter()
            await save(outputs, ended, now)
            times.append(time.perf_counter() - began)
            rows.append(len(outputs))
            for o in outputs:
                largest[0] = max(largest[0], len(o.stdout.encode()), len(o.stderr.encode()))

        store.save_live_output = timed  # type: ignore[method-assign]
        stop = asyncio.Event()
        began = time.monotonic()
        running = asyncio.create_task(worker.run(stop))
        while (await queue.counts())["succeeded"] + (await queue.counts())["failed"] < len(ids):
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - began
        stop.set()
        await running
        lines = 0
        for task_id in ids:
            task = await queue.get(task_id)
            lines += int(task.result["stderr"].strip() or 0) if task.status == "succeeded" else 0
        await store.close()
    print(f"backend: {'postgresql' if args.db else 'sqlite'}; {args.tasks} tasks printing for "
          f"{args.seconds:g} s; wall {elapsed:.1f} s")
    print(f"lines printed (each a write to a pipe): {lines:,}")
    print(f"live-output transactions: {worker.live_output.flushes} "
          f"({worker.live_output.flushes / elapsed:.2f}/s), rows stored: {sum(rows):,} "
          f"(max {max(rows, default=0)} per transaction)")
    if times:
        ms = sorted(t * 1000 for t in times)
        print(f"flush time: p50 {statistics.median(ms):.2f} ms, "
              f"p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.2f} ms")
    print(f"largest stored tail: {largest[0]:,} bytes; writes per line printed: "
          f"{worker.live_output.flushes / max(lines, 1):.6f}")


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
