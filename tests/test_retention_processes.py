"""Retention seen from outside: `localflow worker` processes prune finished tasks once their
retention has passed, one worker at a time, and keep what is set to be kept for ever."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e


def test_workers_prune_old_tasks_one_at_a_time(tmp_path: Path):
    db = tmp_path / "lf.db"
    env = {"LOCALFLOW_RETAIN_SUCCEEDED": "2s", "LOCALFLOW_RETAIN_FAILED": "forever",
           "LOCALFLOW_PRUNE_INTERVAL": "500ms"}
    api = procs.start("api", db)
    workers = [procs.start("worker", db, "--metrics-addr", "off", env=env) for _ in range(2)]
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            def submit(command: str) -> str:
                r = client.post("/api/tasks", json={"type": "shell", "max_attempts": 1,
                                                    "payload": {"command": command}})
                assert r.status_code == 201, r.text
                return r.json()["id"]

            ok, bad = submit("true"), submit("false")

            def status(task_id: str) -> int | str:
                r = client.get(f"/api/tasks/{task_id}")
                return r.json()["status"] if r.status_code == 200 else r.status_code

            procs.wait_until(lambda: status(ok) == "succeeded" and status(bad) == "failed", 60,
                       "both tasks to finish")
            procs.wait_until(lambda: status(ok) == 404, 60, "the succeeded task to be pruned")
            assert status(bad) == "failed"  # failed ones are kept for ever here
    finally:
        for w in workers:
            w.stop()
        api.stop()
    pruners = set()
    for w in workers:
        for line in w.log().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "pruned finished tasks":
                pruners.add(w.log_path)
    assert len(pruners) == 1  # the lease: one worker pruned
