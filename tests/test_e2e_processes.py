"""The two-container topology without Docker: `localflow api` and `localflow worker` as two OS
processes on one database file, signalled like a container runtime would."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_processes(tmp_path):
    db = tmp_path / "shared.db"
    env = {"LOCALFLOW_LEASE": "1s", "LOCALFLOW_GRACE": "5s"}
    # Started together on a fresh file: both migrate, one waits for the other.
    worker = procs.start("worker", db, env=env)
    api = procs.start("api", db, env=env)
    yield api, worker, db, env
    api.stop()
    worker.stop()


def test_api_and_worker_processes_share_one_database(two_processes):
    api, _, _, _ = two_processes
    with httpx.Client(base_url=api.url, timeout=10) as client:
        ids = [
            client.post("/api/tasks", json={"type": "shell", "payload": {
                "command": "echo", "args": [str(i)]}}).json()["id"]
            for i in range(20)
        ]
        for i, task_id in enumerate(ids):
            task = procs.wait_for_status(client, task_id, {"succeeded", "failed"})
            assert task["status"] == "succeeded" and task["result"]["stdout"] == f"{i}\n"


def test_killed_worker_task_is_rerun_after_its_lease_expires(two_processes, tmp_path):
    api, worker, db, env = two_processes
    marker = tmp_path / "runs.txt"
    # Appends a line per run; the first run then outlasts any delay before the kill (on a busy
    # machine too), the second ends at once.
    code = (f"m = open({str(marker)!r}, 'a+'); m.write('run\\n'); m.flush(); m.seek(0); "
            "import time; time.sleep(60 if m.read().count('run') == 1 else 0)")
    with httpx.Client(base_url=api.url, timeout=10) as client:
        task_id = client.post("/api/tasks", json={"type": "shell", "payload": {
            "command": sys.executable, "args": ["-c", code]}}).json()["id"]
        procs.wait_for_status(client, task_id, {"running"})
        _wait_until(lambda: marker.exists())
        worker.signal(signal.SIGKILL)
        worker.popen.wait(30)

        replacement = procs.start("worker", db, env=env)
        try:
            task = procs.wait_for_status(client, task_id, {"succeeded", "failed"}, timeout=30)
        finally:
            replacement.stop()
        assert task["status"] == "succeeded" and task["attempts"] == 2
        attempts = client.get(f"/api/tasks/{task_id}/attempts").json()
        assert [a["outcome"] for a in attempts] == ["lost", "succeeded"]
    assert marker.read_text() == "run\nrun\n"  # at-least-once: the handler ran twice


def test_sigterm_returns_long_task_to_queue_and_next_worker_runs_it(tmp_path):
    db = tmp_path / "graceful.db"
    marker = tmp_path / "ran-once"
    env = {"LOCALFLOW_GRACE": "0.5s"}
    api = procs.start("api", db)
    worker = procs.start("worker", db, env=env)
    try:
        with httpx.Client(base_url=api.url, timeout=10) as client:
            # Long on its first run, so it is surely still running when SIGTERM's grace ends;
            # short on the next.
            script = f"[ -e {marker} ] && exit 0; touch {marker}; sleep 60"
            task_id = client.post("/api/tasks", json={"type": "shell", "payload": {
                "command": "sh", "args": ["-c", script]}}).json()["id"]
            procs.wait_for_status(client, task_id, {"running"})
            assert worker.stop() == 0
            task = client.get(f"/api/tasks/{task_id}").json()
            assert task["status"] == "queued" and task["attempts"] == 0
            worker = procs.start("worker", db)
            task = procs.wait_for_status(client, task_id, {"succeeded"})
            assert task["attempts"] == 1
    finally:
        worker.stop()
        api.stop()


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("LOCALFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "localflow.cli", *args], env={**base, **(env or {})},
        capture_output=True, text=True, timeout=30, cwd=procs.REPO,
    )


def test_cli_refuses_to_listen_beyond_loopback_without_token(tmp_path):
    result = _run_cli("serve", "--addr", "0.0.0.0:0", "--db", str(tmp_path / "x.db"))
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0:0 without an API token" in result.stderr


def test_cli_bad_flag_values_are_clear(tmp_path):
    result = _run_cli("serve", "--poll", "soon")
    assert result.returncode == 2 and "invalid duration 'soon'" in result.stderr
    result = _run_cli("serve", env={"LOCALFLOW_WORKERS": "zero"})
    assert result.returncode == 2 and "LOCALFLOW_WORKERS" in result.stderr


def test_flags_win_over_environment(tmp_path):
    env_db, flag_db = tmp_path / "env.db", tmp_path / "flag.db"
    result = _run_cli("migrate", "-db", str(flag_db), env={"LOCALFLOW_DB": str(env_db)})
    assert result.returncode == 0, result.stderr
    assert flag_db.exists() and not env_db.exists()
    result = _run_cli("migrate", env={"LOCALFLOW_DB": str(env_db)})
    assert result.returncode == 0 and env_db.exists()


def test_refuses_database_with_newer_schema(tmp_path):
    db = tmp_path / "future.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 999")
    result = _run_cli("migrate", "--db", str(db))
    assert result.returncode == 2
    assert "schema version 999" in result.stderr and "upgrade LocalFlow" in result.stderr


def _wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
