"""What a completion costs the SQLite writer thread: one statement pair per task (`complete`,
`finish_attempt`) against the batch the store now writes (`finishing_*` in queue.sql).

    uv run python bench/outcome_batch_cost.py            # batches of 64 and 8, 20000 tasks

Pure sqlite3 on one connection, no asyncio: N tasks inserted, then claimed `--batch` at a time
and completed, `synchronous=OFF` so the fsync does not drown the CPU. Prints the process's CPU
per task for the claim, the completions and the attempt rows, alternating the two ways twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.localflow_side import _pre_enqueue, fresh_db
from shared.sql import Queries
from shared.store.sqlite.store import claim_picked, decode_picked

Q = Queries("sqlite", "queue")


def run(src: Path, n: int, batch: int, batched: bool) -> dict[str, float]:
    path = src.with_name("copy.db")
    shutil.copy(src, path)
    for ext in ("-wal", "-shm"):
        if os.path.exists(f"{src}{ext}"):
            shutil.copy(f"{src}{ext}", f"{path}{ext}")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(Q.finishing_table)
    spent = {"claim": 0.0, "complete": 0.0, "attempts": 0.0}
    clock = time.process_time
    done = 0
    while done < n:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        began = clock()
        rows = decode_picked(claim_picked(conn, {
            "now": now, "lease_until": now + 30, "worker_id": "w", "limit": batch,
            "closed": "[]", "only": None}))
        spent["claim"] += clock() - began
        began = clock()
        if batched:
            conn.executemany(Q.finishing_add, [(r.id, r.token, r.attempt, now, "{}")
                                               for r in rows])
            assert conn.execute(Q.complete_finishing).rowcount == len(rows)
            spent["complete"] += clock() - began
            began = clock()
            conn.execute(Q.finish_attempts_finishing)
            conn.execute(Q.finishing_clear)
            spent["attempts"] += clock() - began
        else:
            for r in rows:
                mid = clock()
                conn.execute(Q.complete, {"id": r.id, "token": r.token, "now": now, "result": "{}"})
                spent["complete"] += clock() - mid
                mid = clock()
                conn.execute(Q.finish_attempt, {"id": r.id, "attempt": r.attempt, "now": now,
                                                "outcome": "succeeded", "error": None,
                                                "output": "{}"})
                spent["attempts"] += clock() - mid
        conn.execute("COMMIT")
        done += len(rows)
    conn.close()
    return {k: v / n * 1e6 for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 8])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="outcome-batch-"))
    try:
        src = fresh_db(workdir, "src")
        asyncio.run(_pre_enqueue(src, args.tasks))
        for batch in args.batch:
            for _ in range(2):
                for batched in (False, True):
                    us = run(src, args.tasks, batch, batched)
                    print(f"batch {batch:3} {'one batch ' if batched else 'per task  '} "
                          + "  ".join(f"{k} {v:5.1f} us" for k, v in us.items())
                          + f"  total {sum(us.values()):5.1f} us/task", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
