"""End-to-end throughput with a big backlog against the empty case (issue 10's backlog row).

    uv run python bench/backlog_e2e.py                      # 1M queued (half delayed) + 1M done
    uv run python bench/backlog_e2e.py --queued 20000 --finished 20000 --tasks 2000 --rounds 1

The backlog database is filled once as bench/dashboard_volume.py fills it (`--queued` tasks
waiting, half due and half delayed by up to a day; `--finished` tasks finished over the last
6 hours; the count triggers on). Then, alternating, `--rounds` times each:

- empty: a fresh database with `--tasks` queued tasks (bench/run.py's (b): inserted first,
  500 per transaction), then a bench/lf_worker.py process (no-op handler, `--slots`) runs them;
- backlog: the same worker on the backlog database runs `--tasks` of its due tasks (the
  oldest first, as it claims them), the other due ones, the delayed ones and the finished
  history all around them.

Time: from the worker loop's start to the Nth committed success (as (b)). Each backlog round
takes its tasks from the same database, so each sees `--tasks` fewer queued and as many more
finished rows than the one before (2 % of the backlog at the defaults). Prints each round and
the ratio of the medians; the issue's target is >= 90 %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.dashboard_volume import fill_sqlite
from bench.localflow_side import _claim_stats, _pre_enqueue, fresh_db, run_to_the_end


def run_worker(workdir: Path, db: Path, tasks: int, slots: int, name: str) -> dict[str, Any]:
    data = run_to_the_end(workdir, db, tasks, slots, name, timeout=900)
    seconds = data["done"] - data["started"]
    return {"name": name, "tasks_per_s": tasks / seconds, "seconds": seconds,
            "worker_cpu_us_per_task": 1e6 * data["cpu_seconds"] / tasks,
            "write_transactions_per_task": data["write_transactions"] / tasks,
            **_claim_stats(data["claims"]), "load_average": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queued", type=int, default=1_000_000)
    p.add_argument("--finished", type=int, default=1_000_000)
    p.add_argument("--tasks", type=int, default=20_000, help="tasks run per round")
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if args.tasks > args.queued // 2 // (args.rounds or 1):
        p.error("--tasks x --rounds must not exceed the due half of --queued")
    workdir = Path(tempfile.mkdtemp(prefix="lf-backlog-e2e-"))
    try:
        backlog = workdir / "backlog.db"
        began = time.monotonic()
        fill_sqlite(backlog, args.queued, args.finished, time.time())
        # The fill writes without syncing; its ~900 MB would otherwise reach the disk during
        # the first rounds (a checkpoint's fsync of the file waits for all of it).
        with open(backlog, "rb+") as f:
            os.fsync(f.fileno())
        print(f"filled {args.queued:,} queued + {args.finished:,} finished in "
              f"{time.monotonic() - began:.0f} s ({backlog.stat().st_size / 2**20:.0f} MB)",
              flush=True)
        rows: dict[str, list[dict[str, Any]]] = {"empty": [], "backlog": []}
        for r in range(args.rounds):
            empty = fresh_db(workdir, f"empty-{r}")
            asyncio.run(_pre_enqueue(empty, args.tasks))
            for name, db in (("empty", empty), ("backlog", backlog)):
                out = run_worker(workdir, db, args.tasks, args.slots, f"{name}-{r}")
                rows[name].append(out)
                print(f"round {r + 1} {name:7}  {out['tasks_per_s']:8,.0f} tasks/s  "
                      f"worker {out['worker_cpu_us_per_task']:5.0f} us CPU/task  "
                      f"claim p50 {out.get('claim_ms', {}).get('p50', 0):6.2f} ms  "
                      f"{out.get('tasks_per_claim', 0):5.1f} tasks/claim  "
                      f"load {out['load_average']:.1f}", flush=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{empty}{suffix}").unlink(missing_ok=True)
        med = {k: statistics.median(o["tasks_per_s"] for o in v) for k, v in rows.items()}
        cpu = {k: statistics.median(o["worker_cpu_us_per_task"] for o in v)
               for k, v in rows.items()}
        print(f"median: empty {med['empty']:,.0f} tasks/s, backlog {med['backlog']:,.0f} tasks/s"
              f" = {100 * med['backlog'] / med['empty']:.0f} % (target >= 90 %); worker CPU per"
              f" task {cpu['empty']:.0f} -> {cpu['backlog']:.0f} us")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
