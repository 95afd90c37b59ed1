"""docker-compose.postgres.yml for real: PostgreSQL, the API, and a scalable worker service with
no volume shared between the API and the workers.

One stack for the module (starting it is the slow part); the tests run in file order.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.compose.conftest import DONE, Stack, run

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

# Long enough that a worker is killed while some of these run, short enough to finish soon.
SLEEP = {"command": "sleep", "args": ["0.5"]}


def submit_many(stack: Stack, n: int, payload: dict) -> list[str]:
    tasks = [{"type": "shell", "payload": payload} for _ in range(n)]
    r = stack.client.post("/api/tasks/batch", json={"tasks": tasks}, headers=stack.auth)
    assert r.status_code == 201, r.text
    return r.json()["ids"]


def wait_all(stack: Stack, ids: list[str], timeout: float = 240) -> list[dict]:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        pending = {i for i in pending if stack.task(i)["status"] not in DONE}
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} tasks not finished\n{stack.logs()}")
        if pending:
            time.sleep(0.5)
    return [stack.task(i) for i in ids]


def mounts(container: str) -> list[str]:
    out = run(["docker", "inspect", "-f", "{{json .Mounts}}", container]).stdout
    return [m.get("Destination", "") for m in json.loads(out)]


def test_runs_a_task_on_postgres_with_no_shared_volume(postgres_stack: Stack) -> None:
    task_id = postgres_stack.submit("shell", {"command": "echo", "args": ["hello, postgres"]})
    task = postgres_stack.wait_status(task_id, DONE)
    assert task["status"] == "succeeded", task
    assert task["result"]["stdout"] == "hello, postgres\n"
    # Workers share nothing with the API but the database server.
    for worker in postgres_stack.containers("worker"):
        assert mounts(worker) == [], "a worker container has a volume"
    health = postgres_stack.client.get("/health").json()
    assert "password" not in json.dumps(health)
    assert "compose-test-pw" not in postgres_stack.logs()


def test_scaled_workers_lose_nothing_when_one_is_killed(postgres_stack: Stack) -> None:
    postgres_stack.up("--scale", "worker=3", "--no-recreate")
    workers = postgres_stack.containers("worker")
    assert len(workers) == 3, workers
    ids = submit_many(postgres_stack, 300, SLEEP)
    # Kill one worker once it is running tasks: its tasks must be rescued after the lease.
    victim = workers[0]
    deadline = time.monotonic() + 120
    while True:
        r = postgres_stack.client.get(
            "/api/tasks", params={"status": "running", "limit": 50}, headers=postgres_stack.auth
        )
        if len(r.json()["items"]) >= 3:
            break
        assert time.monotonic() < deadline, "no task started running"
        time.sleep(0.2)
    run(["docker", "kill", "--signal", "KILL", victim])
    tasks = wait_all(postgres_stack, ids)
    statuses = {t["status"] for t in tasks}
    assert statuses == {"succeeded"}, statuses
    # Each task ran once, or twice where its first worker died mid-run (at-least-once).
    for t in tasks:
        assert t["attempts"] in (1, 2), t
    lost = [t for t in tasks if t["attempts"] == 2]
    for t in lost:
        attempts = postgres_stack.client.get(
            f"/api/tasks/{t['id']}/attempts", headers=postgres_stack.auth
        ).json()
        outcomes = [a["outcome"] for a in attempts]
        assert outcomes == ["lost", "succeeded"], outcomes
