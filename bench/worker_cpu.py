"""The worker's CPU per task end to end, for A/B runs of two trees on a busy machine.

    uv run python bench/worker_cpu.py --tasks 20000 --slots 64 8

Runs `bench.localflow_side.end_to_end` (the same worker process as `bench/run.py`'s (b), from
the tree this file is in) and prints tasks/s, the worker's CPU (all threads) per task, commits
per task and the load average. Run it from two checkouts in turn (`git archive` of each into a
directory) and compare the CPU per task: it moves far less with others' load than tasks/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.localflow_side import end_to_end


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--slots", type=int, nargs="+", default=[64, 8])
    args = parser.parse_args()
    for slots in args.slots:
        with tempfile.TemporaryDirectory() as workdir:
            r = end_to_end(Path(workdir), args.tasks, slots)
        us = r["worker_cpu_percent"] / 100 * r["seconds"] / args.tasks * 1e6
        print(f"slots={slots} {r['tasks_per_s']:.0f}/s cpu%={r['worker_cpu_percent']:.0f} "
              f"us/task={us:.1f} (user {r['worker_user_seconds'] / args.tasks * 1e6:.0f} "
              f"sys {r['worker_system_seconds'] / args.tasks * 1e6:.0f}) "
              f"per-claim={r.get('tasks_per_claim', 0):.1f} "
              f"commits/task={r['write_transactions_per_task']:.3f} "
              f"load={os.getloadavg()[0]:.2f}", flush=True)
        threads = r.get("worker_thread_cpu_seconds") or {}
        print("  per thread, us/task (this run): "
              + ", ".join(f"{name}={s / args.tasks * 1e6:.0f}"
                          for name, s in sorted(threads.items(), key=lambda t: -t[1])),
              flush=True)


if __name__ == "__main__":
    main()
