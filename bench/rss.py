"""Resident memory of `localflow api` and `localflow worker` on one fresh SQLite file, after
start-up and 200 submissions (all run), from /proc/<pid>/status (issue 10: API <= 60 MB,
worker <= 50 MB): the API's when it has started, once the tasks have run, and again a few
seconds later (idle: localflow/idle_memory.py gives back what a load left), the worker's once
the tasks have run. Like bench/run.py, the processes import compiled bytecode
(bench/procs.py PYCACHE, filled first).

    uv run python bench/rss.py --runs 2
    # as the image installs it (runtime dependencies only):
    UV_PROJECT_ENVIRONMENT=/tmp/lf-rt uv sync --no-dev --frozen
    /tmp/lf-rt/bin/python bench/rss.py --runs 2

The processes are started with the interpreter that runs this script.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs
from bench.localflow_side import IDLE_RSS_SECONDS, fresh_db, warm_up

BODY = {"type": "shell", "payload": {"command": "true"}}


def once(submissions: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db = fresh_db(workdir, "rss")
        api = procs.localflow("api", db, workdir)
        api_start = procs.rss_mb(api.pid)
        worker = procs.localflow("worker", db, workdir, "--metrics-addr", "off")
        try:
            with httpx.Client(base_url=api.url) as client:
                for _ in range(submissions):
                    client.post("/api/tasks", json=BODY).raise_for_status()
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    done = client.get("/api/tasks", params={"status": "succeeded",
                                                            "limit": 500}).json()["items"]
                    if len(done) >= submissions:
                        break
                    time.sleep(0.2)
                else:
                    raise RuntimeError("the worker did not finish the tasks in 120 s")
            out = {"api_start": api_start, "api_after": procs.rss_mb(api.pid),
                   "worker": procs.rss_mb(worker.pid)}
            time.sleep(IDLE_RSS_SECONDS)
            return {**out, "api_idle": procs.rss_mb(api.pid)}
        finally:
            api.stop()
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--submissions", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(Path(tmp))
    for _ in range(args.runs):
        m = once(args.submissions)
        print(f"localflow api {m['api_idle']:.1f} MB {IDLE_RSS_SECONDS:.0f} s after the tasks "
              f"ran (started {m['api_start']:.1f}, right after {m['api_after']:.1f}); "
              f"localflow worker {m['worker']:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
