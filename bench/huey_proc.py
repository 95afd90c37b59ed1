"""Huey's SqliteHuey, run the way its docs describe, for comparison.

    python -m bench.huey_proc enqueue --db X --n N        -> {"seconds": ...}
    python -m bench.huey_proc consume --db X --workers 8 --expect N   -> {"seconds": ...}

`enqueue` calls a no-op task N times from one thread (Huey has no HTTP front end).
`consume` starts a thread-worker consumer and times from its start until the Nth task
finished (Huey's SIGNAL_COMPLETE), then stops it.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time

from huey import SqliteHuey
from huey.signals import SIGNAL_COMPLETE


def make_huey(db: str) -> tuple[SqliteHuey, object]:
    # Defaults, as a user gets them: results stored, SQLite's default synchronous (FULL).
    huey = SqliteHuey("bench", filename=db)

    @huey.task()
    def noop(i: int) -> None:
        return None

    return huey, noop


def enqueue(db: str, n: int) -> dict[str, float]:
    _, noop = make_huey(db)
    noop(-1)  # create the tables and connection outside the timing
    started = time.perf_counter()
    for i in range(n):
        noop(i)
    return {"seconds": time.perf_counter() - started, "n": n}


def consume(db: str, workers: int, expect: int) -> dict[str, float]:
    huey, _ = make_huey(db)
    done = threading.Event()
    lock = threading.Lock()
    count = 0
    finished_at: list[float] = []

    @huey.signal(SIGNAL_COMPLETE)
    def completed(signal: str, task: object) -> None:
        nonlocal count
        with lock:
            count += 1
            if count == expect:
                finished_at.append(time.perf_counter())
                done.set()

    consumer = huey.create_consumer(
        workers=workers, worker_type="thread", periodic=False, check_worker_health=False
    )
    started = time.perf_counter()
    consumer.start()
    done.wait()
    consumer.stop(graceful=True)
    return {"seconds": finished_at[0] - started, "n": count}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["enqueue", "consume"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.mode == "enqueue":
        result = enqueue(args.db, args.n)
    else:
        result = consume(args.db, args.workers, args.expect)
    print(json.dumps(result), flush=True)
