"""Outcomes held through a PostgreSQL restart (issue 11 item 2, on the other backend): tasks
that finish while the server is down are written once it is back, each after one attempt."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest

from tests import pg, procs

pytestmark = pytest.mark.e2e  # real processes


def _longest_outcome_wait(proc: procs.Proc) -> float:
    longest = 0.0
    for line in proc.log().splitlines():
        if "outcome not written yet" in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                longest = max(longest, float(json.loads(line)["waited"]))
    return longest


def test_outcomes_finished_while_the_server_is_down_are_written_once_it_is_back(
    tmp_path: Path,
) -> None:
    try:
        cluster = pg.start_cluster()
    except pg.Unavailable as exc:
        pytest.skip(str(exc))
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    runs.mkdir()
    proc = None
    try:
        proc = procs.start("serve", tmp_path / "unused.db", "--workers", "3", "--lease", "3s",
                           env={"LOCALFLOW_DB": cluster.url}, log_dir=tmp_path)
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            ids = []
            for n in range(3):
                script = f"touch {runs}/{n}-$$; while [ ! -e {gate} ]; do sleep 0.05; done"
                created = client.post("/api/tasks", json={"type": "shell", "payload": {
                    "command": "sh", "args": ["-c", script]}})
                assert created.status_code == 201, created.text
                ids.append(created.json()["id"])
            deadline = time.monotonic() + 60
            while len(list(runs.iterdir())) < 3:
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.05)
            cluster.kill_server()
            gate.touch()  # all three finish while the server is down
            while _longest_outcome_wait(proc) < 6.0:  # two leases
                assert time.monotonic() < deadline + 60, proc.log()
                time.sleep(0.1)
            cluster.start_server()
            for task_id in ids:
                task = procs.wait_for_status(client, task_id, {"succeeded", "failed",
                                                               "cancelled"})
                assert task["status"] == "succeeded" and task["attempts"] == 1, task
        assert len(list(runs.iterdir())) == 3
        assert "Task exception was never retrieved" not in proc.log()
    finally:
        if proc is not None:
            assert proc.stop() == 0, proc.log()
        cluster.stop()
