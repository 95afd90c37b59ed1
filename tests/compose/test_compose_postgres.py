"""docker-compose.postgres.yml for real: PostgreSQL, the API, and a scalable worker service with
no volume shared between the API and the workers.

One stack for the module (starting it is the slow part); the tests run in file order.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store import open_store
from tests.compose.conftest import DONE, REPO, Stack, run
from tests.history import make_history

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

# Long enough that a worker is killed while some of these run, short enough to finish soon.
SLEEP = {"command": "sleep", "args": ["1"]}


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


def test_workers_have_the_sqlite_files_security_settings(postgres_stack: Stack) -> None:
    """Same users and capabilities as docker-compose.yml's worker: tasks run as nobody; and
    the worker holds no API token."""
    task_id = postgres_stack.submit("shell", {"command": "id", "args": ["-un"]})
    task = postgres_stack.wait_status(task_id, DONE)
    assert task["result"]["stdout"] == "nobody\n", task
    fmt = ("{{json .Config.User}} {{json .HostConfig.CapAdd}} {{json .HostConfig.CapDrop}} "
           "{{json .HostConfig.ReadonlyRootfs}} {{json .Config.Env}}")
    for worker in postgres_stack.containers("worker"):
        user, cap_add, cap_drop, read_only, env = (
            json.loads(part) for part in run(["docker", "inspect", "-f", fmt, worker])
            .stdout.split(" ", 4)
        )
        assert user == "0:0" and read_only is True
        assert sorted(c.removeprefix("CAP_") for c in cap_add) == ["KILL", "SETGID", "SETUID"]
        assert [c.removeprefix("CAP_") for c in cap_drop] == ["ALL"]
        names = {e.split("=", 1)[0] for e in env}
        assert "LOCALFLOW_TASK_USER=nobody" in env
        # (The image's LOCALFLOW_API_TOKEN_FILE names a file a worker has no volume for.)
        assert "LOCALFLOW_API_TOKEN" not in names, names


def attempts_of(stack: Stack, task_id: str) -> list[dict]:
    r = stack.client.get(f"/api/tasks/{task_id}/attempts", headers=stack.auth)
    assert r.status_code == 200, r.text
    return r.json()


def host_of(worker_id: str) -> str:
    """A worker id is hostname-pid-suffix; a container's hostname is its short id."""
    return worker_id.rsplit("-", 2)[0]


def test_scaled_workers_lose_nothing_when_one_is_killed(postgres_stack: Stack) -> None:
    # Submitted while one worker runs; the service scales out to three; more work arrives.
    ids = submit_many(postgres_stack, 200, SLEEP)
    postgres_stack.up("--scale", "worker=3", "--no-recreate")
    workers = postgres_stack.containers("worker")
    assert len(workers) == 3, workers
    ids += submit_many(postgres_stack, 300, SLEEP)
    # Kill a worker while it is running tasks: find the container of a running task's
    # attempt, then SIGKILL it. Its tasks must be rescued after the lease.
    by_host = {cid[:12]: cid for cid in workers}
    victim = None
    deadline = time.monotonic() + 120
    while victim is None:
        r = postgres_stack.client.get(
            "/api/tasks", params={"status": "running", "limit": 20}, headers=postgres_stack.auth
        )
        for task in r.json()["items"]:
            attempts = attempts_of(postgres_stack, task["id"])
            host = host_of(attempts[-1]["worker_id"]) if attempts else ""
            if host in by_host:
                victim = by_host[host]
                break
        else:
            assert time.monotonic() < deadline, "no worker was seen running a task"
            time.sleep(0.1)
    run(["docker", "kill", "--signal", "KILL", victim])
    tasks = wait_all(postgres_stack, ids)
    statuses = {t["status"] for t in tasks}
    assert statuses == {"succeeded"}, statuses
    # Each task ran once, or twice where its first worker died mid-run (at-least-once).
    hosts: set[str] = set()
    lost = 0
    for t in tasks:
        attempts = attempts_of(postgres_stack, t["id"])
        hosts.update(host_of(a["worker_id"]) for a in attempts)
        outcomes = [a["outcome"] for a in attempts]
        assert outcomes in (["succeeded"], ["lost", "succeeded"]), (t, attempts)
        assert t["attempts"] == len(attempts)
        if outcomes[0] == "lost":
            assert host_of(attempts[0]["worker_id"]) == victim[:12]
            lost += 1
    assert lost >= 1, "the killed worker held no task"
    # The work was spread over the scaled service: every container ran some.
    assert {w[:12] for w in workers} <= hosts, (hosts, workers)


def test_copy_moves_a_sqlite_file_into_the_stack(postgres_stack: Stack, tmp_path) -> None:
    """docs/scaling.md's move from SQLite, in a one-off api container of this image."""
    sqlite_dir = tmp_path / "sqlite"
    sqlite_dir.mkdir()
    ids = asyncio.run(_sqlite_with_history(str(sqlite_dir / "localflow.db")))
    # The container runs as uid 10001: let it open (and journal) the file.
    sqlite_dir.chmod(0o777)
    for path in sqlite_dir.iterdir():
        path.chmod(0o666)
    copied = postgres_stack(
        "run", "--rm", "--no-deps", "-v", f"{sqlite_dir}:/sqlite", "api", "sh", "-c",
        # --append: the earlier tests left tasks in this database.
        'localflow copy --from /sqlite/localflow.db --to "$LOCALFLOW_DB" --append',
    )
    assert "tasks: 12 copied" in copied.stdout, copied.stdout
    assert "task_attempts: 8 copied" in copied.stdout, copied.stdout
    assert "compose-test-pw" not in copied.stdout + copied.stderr
    task = postgres_stack.task(ids["retried"])
    assert task["status"] == "succeeded" and task["attempts"] == 2, task
    outcomes = [a["outcome"] for a in attempts_of(postgres_stack, ids["retried"])]
    assert outcomes == ["failed", "succeeded"]
    # The copied queued task is the stack's work now: its workers run it.
    assert postgres_stack.wait_status(ids["queued"], DONE)["status"] == "succeeded"


async def _sqlite_with_history(path: str) -> dict[str, str]:
    store = await open_store(Settings(db=path))
    try:
        # Two to three hours ago, on the hour (as the history's cron fires expect): by now
        # every lease has run out and every task is due.
        clock = FakeClock(start=(time.time() - 7200) // 3600 * 3600)
        queue = Queue(store, clock)
        return await make_history(queue, Schedules(queue), clock)
    finally:
        await store.close()


def test_pg_dump_backup_and_restore(postgres_stack: Stack, tmp_path) -> None:
    """docs/scaling.md's backup and restore, with the postgres service's own tools."""
    task_id = postgres_stack.submit("shell", {"command": "echo", "args": ["keep me"]})
    assert postgres_stack.wait_status(task_id, DONE)["status"] == "succeeded"
    dump = tmp_path / "localflow.dump"
    with dump.open("wb") as out:
        subprocess.run(
            postgres_stack.argv("exec", "-T", "postgres", "pg_dump", "-U", "localflow",
                                "-d", "localflow", "-Fc"),
            stdout=out, check=True, timeout=120, env=postgres_stack.env, cwd=REPO,
        )
    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format

    # Lose the task after the backup, then restore: it is back, as it was.
    before = postgres_stack.task(task_id)
    r = postgres_stack.client.delete(f"/api/tasks/{task_id}", headers=postgres_stack.auth)
    assert r.status_code in (200, 204), r.text
    postgres_stack("stop", "api", "worker")
    with dump.open("rb") as backup:
        subprocess.run(
            postgres_stack.argv("exec", "-T", "postgres", "pg_restore", "-U", "localflow",
                                "-d", "localflow", "--clean", "--if-exists"),
            stdin=backup, check=True, timeout=120, env=postgres_stack.env, cwd=REPO,
            capture_output=True,
        )
    postgres_stack("start", "api", "worker")
    postgres_stack.wait_healthy("api", "worker")
    assert postgres_stack.task(task_id) == before
