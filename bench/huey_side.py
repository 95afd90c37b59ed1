"""Huey's SqliteHuey beside LocalFlow: (a') enqueues/s in-process, (b') tasks/s end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import procs


def _run(workdir: Path, *args: str) -> tuple[dict[str, Any], str]:
    proc = procs.python_module("bench.huey_proc", workdir, *args)
    stdout, _ = proc.popen.communicate(timeout=600)
    if proc.popen.returncode != 0:
        raise RuntimeError(f"huey helper failed:\n{proc.log()}")
    return json.loads(stdout.decode().strip().splitlines()[-1]), " ".join(proc.argv[1:])


def enqueue_and_consume(workdir: Path, n: int, workers: int) -> dict[str, Any]:
    """Enqueue n no-op tasks (timed), then a consumer with `workers` threads runs them."""
    db = workdir / f"huey-{workers}.db"
    enq, enq_cmd = _run(workdir, "enqueue", "--db", str(db), "--n", str(n))
    # +1: the helper enqueues one task before timing, to create the tables.
    con, con_cmd = _run(
        workdir, "consume", "--db", str(db), "--workers", str(workers), "--expect", str(n + 1)
    )
    return {
        "workers": workers, "tasks": n,
        "enqueue_per_s": n / enq["seconds"], "enqueue_command": enq_cmd,
        "tasks_per_s": con["n"] / con["seconds"], "consume_seconds": con["seconds"],
        "consume_command": con_cmd,
    }
