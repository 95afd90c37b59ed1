"""A running shell task's output, live, against real processes: `localflow api` and
`localflow worker` apart, on a SQLite file and on PostgreSQL, the API with a token. The task
prints, then blocks on a FIFO until the test opens it: the test sees the output while the task
runs (GET /api/tasks/{id}/output, and `event: output` on /api/events?output=ID), then releases
it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests import procs
from tests.test_events_api import Stream

pytestmark = pytest.mark.e2e

T = TypeVar("T")
TOKEN = "live-output-token-3f9c1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE = 60.0  # generous: a busy 2-core machine
LIVE_TAIL = 8 * 1024


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "live.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def api(db: str, tmp_path: Path) -> Iterator[procs.Proc]:
    env = {"LOCALFLOW_API_TOKEN": TOKEN}
    worker = procs.start("worker", db, env={**env, "LOCALFLOW_METRICS_ADDR": "off"},  # type: ignore[arg-type]
                         log_dir=tmp_path)
    api = procs.start("api", db, env=env, log_dir=tmp_path)  # type: ignore[arg-type]
    yield api
    api.stop()
    worker.stop()
    print("--- api log ---", api.log()[-4000:], "--- worker log ---", worker.log()[-4000:],
          sep="\n")


@pytest.fixture
def client(api: procs.Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=AUTH, timeout=90) as c:
        yield c


def eventually(read: Callable[[], T], ok: Callable[[T], bool], what: str) -> T:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: never happened; last seen {value!r}")
        time.sleep(0.05)


def submit(client: httpx.Client, *argv: str) -> str:
    r = client.post("/api/tasks", json={
        "type": "shell", "payload": {"command": argv[0], "args": list(argv[1:])},
        "max_attempts": 1, "timeout": 300})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def release(fifo: Path) -> None:
    fifo.write_text("go\n")  # opens the FIFO the task is blocked on: it reads and exits


def test_a_running_tasks_output_is_visible_before_it_finishes(
    api: procs.Proc, client: httpx.Client, tmp_path: Path
):
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    script = "echo 'hello from the task'; echo 'a warning' >&2; cat \"$1\""
    task_id = submit(client, "sh", "-c", script, "sh", str(fifo))
    stream = Stream(api.url, params={"task": task_id, "output": task_id}, headers=AUTH)
    try:
        live = eventually(lambda: client.get(f"/api/tasks/{task_id}/output").json(),
                          lambda o: "hello from the task" in o["stdout"],
                          "the first line via the endpoint")
        assert live["live"] is True and live["status"] == "running"
        assert live["stdout"] == "hello from the task\n" and live["stderr"] == "a warning\n"
        assert live["stdout_bytes"] == 20 and live["stderr_bytes"] == 10
        assert live["attempt"] == 1 and live["updated_at"]
        assert client.get(f"/api/tasks/{task_id}").json()["status"] == "running"

        event = eventually(
            lambda: [e for e in stream.events if e.get("event") == "output"],
            lambda found: any("hello from the task" in e["data"]["stdout"] for e in found),
            "the first line as `event: output`",
        )[0]
        assert event["data"]["id"] == task_id and event["data"]["stderr"] == "a warning\n"
        assert "id" not in event  # not a cursor of the event log
    finally:
        release(fifo)
    done = client.get(f"/api/tasks/{task_id}", params={"wait": 60}).json()
    assert done["status"] == "succeeded", done
    final = client.get(f"/api/tasks/{task_id}/output").json()
    assert final["live"] is False and final["status"] == "succeeded"
    # The final output is the attempt's own, with what came after (cat echoed the release).
    assert final["stdout"] == "hello from the task\ngo\n" and final["stderr"] == "a warning\n"
    assert final["stdout_bytes"] is None and final["updated_at"] is None
    stream.close()


def test_a_chatty_task_stays_bounded(client: httpx.Client, tmp_path: Path):
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    script = ("import sys\n"
              "for i in range(100_000): print(f'line {i}', flush=True)\n"
              "print('done printing', flush=True)\n"
              "open(sys.argv[1]).read()\n")
    task_id = submit(client, sys.executable, "-c", script, str(fifo))
    try:
        live = eventually(lambda: client.get(f"/api/tasks/{task_id}/output").json(),
                          lambda o: o["stdout"].endswith("done printing\n"),
                          "the last line via the endpoint")
    finally:
        release(fifo)
    everything = "".join(f"line {i}\n" for i in range(100_000)) + "done printing\n"
    assert live["stdout_bytes"] == len(everything)
    assert len(live["stdout"].encode()) <= LIVE_TAIL and everything.endswith(live["stdout"])
    assert client.get(f"/api/tasks/{task_id}", params={"wait": 60}).json()["status"] == \
        "succeeded"


def test_wrong_requests_are_told(client: httpx.Client):
    missing = client.get("/api/tasks/01NOSUCHTASK0000000000000/output")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    too_many = client.get("/api/events", params={"output": [f"T{i}" for i in range(101)]})
    assert too_many.status_code == 400  # the parameter's bound, in the OpenAPI document
    assert too_many.json()["errors"][0]["field"] == "output"
    assert httpx.get(f"{client.base_url}/api/tasks/x/output").status_code == 401
