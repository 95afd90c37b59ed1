"""The real image and docker-compose.yml: two containers, one SQLite volume.

The tests share one stack (starting it is the slow part) and run in file order; the
last one takes it down and up again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.compose.conftest import BASE_IMAGE, DONE, REPO, TEST_IMAGE, Stack, run

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

SHELL_ECHO = {"command": "echo", "args": ["hello from compose"]}
# The worker reaches the API by its service name on the compose network.
HTTP_HEALTH = {"url": "http://api:8080/health", "method": "GET", "timeout": 10}

# Runs inside a plain python:3.11-slim container on the compose network: a client that
# is not LocalFlow, finding the API by service name and authenticating with the token.
CLIENT = """
import json, os, time, urllib.request

base, token = os.environ["LOCALFLOW_URL"], os.environ["LOCALFLOW_API_TOKEN"]

def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.load(r)

ids = []
for body in json.loads(os.environ["TASKS"]):
    status, task = call("POST", "/api/tasks", body)
    assert status == 201, (status, task)
    ids.append(task["id"])
deadline = time.monotonic() + 60
while True:
    tasks = [call("GET", "/api/tasks/" + i)[1] for i in ids]
    if all(t["status"] in ("succeeded", "failed", "cancelled") for t in tasks):
        break
    assert time.monotonic() < deadline, tasks
    time.sleep(0.2)
print(json.dumps(tasks))
"""


def test_image_is_slim_unprivileged_and_has_a_healthcheck(stack: Stack) -> None:
    probe = "id -u; for c in gcc cc g++ make uv; do command -v $c || true; done"
    out = run(["docker", "run", "--rm", "--entrypoint", "sh", TEST_IMAGE, "-c", probe]).stdout
    assert out.split() == ["10001"], f"expected uid 10001 and no compilers/uv, got {out!r}"
    config = json.loads(run(["docker", "image", "inspect", TEST_IMAGE]).stdout)[0]["Config"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["User"] == "localflow"


def test_health_is_open_and_the_api_needs_the_token(stack: Stack) -> None:
    r = stack.client.get("/health")
    assert r.status_code == 200, r.text
    assert stack.client.get("/api/tasks/nope").status_code == 401
    bad = {"Authorization": "Bearer not-the-token"}
    assert stack.client.get("/api/tasks/nope", headers=bad).status_code == 401
    assert stack.client.get("/api/tasks/nope", headers=stack.auth).status_code == 404


def test_shell_and_http_tasks_from_the_host(stack: Stack) -> None:
    shell = stack.submit("shell", SHELL_ECHO)
    http = stack.submit("http", HTTP_HEALTH)
    for task_id in (shell, http):
        task = stack.wait_status(task_id, DONE)
        assert task["status"] == "succeeded", task
    assert stack.task(shell)["result"]["stdout"] == "hello from compose\n"


def test_tasks_from_another_container_by_service_name(stack: Stack) -> None:
    tasks = [{"type": "shell", "payload": SHELL_ECHO}, {"type": "http", "payload": HTTP_HEALTH}]
    out = run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            stack.network,
            "-e",
            "LOCALFLOW_URL=http://api:8080",
            "-e",
            "LOCALFLOW_API_TOKEN",
            "-e",
            f"TASKS={json.dumps(tasks)}",
            BASE_IMAGE,
            "python",
            "-c",
            CLIENT,
        ],
        # `-e NAME` without a value: the token comes from our environment, not argv.
        env={**os.environ, "LOCALFLOW_API_TOKEN": stack.token},
    ).stdout
    results = json.loads(out.strip().splitlines()[-1])
    assert [t["status"] for t in results] == ["succeeded", "succeeded"], results


def test_sigterm_lets_the_running_task_finish(stack: Stack) -> None:
    task_id = stack.submit("shell", {"command": "sleep", "args": ["3"]})
    stack.wait_status(task_id, {"running"})
    # `stop` sends SIGTERM and waits (up to stop_grace_period) for the worker to exit.
    stack("stop", "worker")
    task = stack.task(task_id)
    assert task["status"] == "succeeded", task
    stack("start", "worker")
    stack.wait_healthy("worker")


def test_sigkilled_worker_loses_nothing(stack: Stack) -> None:
    long_task = stack.submit("shell", {"command": "sleep", "args": ["5"]})
    stack.wait_status(long_task, {"running"})
    run(["docker", "kill", stack.container("worker")])
    # Submitted while no worker runs: they wait in the queue.
    waiting = [stack.submit("shell", SHELL_ECHO) for _ in range(3)]
    assert {stack.task(t)["status"] for t in waiting} == {"queued"}
    stack("start", "worker")
    stack.wait_healthy("worker")
    # The killed attempt's lease expires (LOCALFLOW_LEASE=5s) and the task runs again.
    task = stack.wait_status(long_task, DONE, timeout=90)
    assert task["status"] == "succeeded", task
    assert task["attempts"] >= 2, task
    for task_id in waiting:
        assert stack.wait_status(task_id, DONE)["status"] == "succeeded"


def test_a_crashed_worker_is_restarted(stack: Stack) -> None:
    """restart: unless-stopped, with tini as PID 1 passing the crash on as the exit."""
    worker = stack.container("worker")

    def restarts() -> int:
        return int(run(["docker", "inspect", "-f", "{{.RestartCount}}", worker]).stdout)

    before = restarts()
    # `docker kill` counts as a deliberate stop; a crash is the worker process dying
    # on its own. kill -1 reaches every process of the user but PID 1 (tini).
    stack("exec", "-T", "worker", "sh", "-c", "kill -9 -1", check=False)
    deadline = time.monotonic() + 30
    while restarts() == before:
        assert time.monotonic() < deadline, f"worker was not restarted\n{stack.logs()}"
        time.sleep(0.2)
    stack.wait_healthy("worker")
    task_id = stack.submit("shell", SHELL_ECHO)
    assert stack.wait_status(task_id, DONE)["status"] == "succeeded"


def test_backup_from_a_one_off_container(stack: Stack, tmp_path: Path) -> None:
    """The documented backup: VACUUM INTO through SQLite, streamed out of a one-off container."""
    task_id = stack.submit("shell", SHELL_ECHO)
    stack.wait_status(task_id, DONE)
    backup = tmp_path / "backup.db"
    argv = stack.argv(
        "run", "--rm", "--no-deps", "-T", "api", "python", "/app/docker/backup.py", "-"
    )
    with backup.open("wb") as out:
        result = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env=stack.env,
            cwd=REPO,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(backup) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        row = db.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    assert row == ("succeeded",)


def test_data_survives_down_and_up(stack: Stack) -> None:
    task_id = stack.submit("shell", SHELL_ECHO)
    stack.wait_status(task_id, DONE)
    token = stack.token
    stack("down")  # no --volumes: the named volume stays
    stack.up()
    assert stack("exec", "-T", "api", "cat", "/data/api-token").stdout.strip() == token
    assert stack.task(task_id)["status"] == "succeeded"
