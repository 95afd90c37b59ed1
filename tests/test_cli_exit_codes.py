"""`localflow submit --wait` and `status --wait` as real subprocesses against a real server
(`localflow api` and `localflow worker` apart, as in two containers): each documented exit
status (0 succeeded, 1 failed, 2 usage or connection error, 3 cancelled or the wait timed out),
and that waiting is one long request, not a polling loop (the API's access log counts them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localflow.client import Client
from tests import procs

pytestmark = pytest.mark.e2e

TOKEN = "exit-codes-token-4f1a9c"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Proc]:
    tmp = tmp_path_factory.mktemp("exit")
    db = tmp / "exit.db"
    env = {"LOCALFLOW_API_TOKEN": TOKEN, "LOCALFLOW_METRICS_ADDR": "off"}
    worker = procs.start("worker", db, env=env, log_dir=tmp)
    api = procs.start("api", db, env={**env, "LOCALFLOW_ACCESS_LOG": "1"}, log_dir=tmp)
    yield api
    api.stop()
    worker.stop()


def localflow(server: procs.Proc, *args: str, token: str | None = TOKEN,
              url: str | None = None) -> subprocess.CompletedProcess[str]:
    """`localflow ARGS` as another container would run it: the server from LOCALFLOW_URL, the
    token from LOCALFLOW_API_TOKEN."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    env["LOCALFLOW_URL"] = url or str(server.url)
    if token:
        env["LOCALFLOW_API_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "localflow.cli", *args], cwd=procs.REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_exit_0_when_the_task_succeeds(server: procs.Proc) -> None:
    done = localflow(server, "submit", "--wait", "shell", "--", "echo", "built")
    assert done.returncode == 0, done.stderr
    assert "status    succeeded" in done.stdout and "built" in done.stdout


def test_exit_1_when_the_task_fails(server: procs.Proc) -> None:
    done = localflow(server, "submit", "--wait", "--max-attempts", "1", "shell", "--", "false")
    assert done.returncode == 1, done.stderr
    assert "status    failed" in done.stdout


@pytest.mark.parametrize("args", [
    ("submit",),  # nothing to submit
    ("submit", "shell"),  # no command
    ("submit", "--wait", "shell", "--delay", "soon", "--", "true"),  # argparse's own error
])
def test_exit_2_on_a_usage_error(server: procs.Proc, args: tuple[str, ...]) -> None:
    done = localflow(server, *args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr


def test_exit_2_when_the_server_refuses_or_cannot_be_reached(server: procs.Proc) -> None:
    refused = localflow(server, "submit", "--wait", "--json", '{"type": "ftp", "payload": {}}')
    assert refused.returncode == 2 and "422" in refused.stderr
    no_token = localflow(server, "submit", "--wait", "shell", "--", "true", token=None)
    assert no_token.returncode == 2 and "401" in no_token.stderr
    unreachable = localflow(server, "submit", "--wait", "shell", "--", "true",
                            url=f"http://127.0.0.1:{procs.free_port()}")
    assert unreachable.returncode == 2 and "cannot reach LocalFlow" in unreachable.stderr


def test_exit_3_when_the_wait_times_out(server: procs.Proc) -> None:
    began = time.monotonic()
    done = localflow(server, "submit", "--wait", "--wait-timeout", "1s", "--delay", "1h",
                     "shell", "--", "true")
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - began >= 1.0
    assert "status    queued" in done.stdout and "still queued after 1s" in done.stderr


def test_exit_3_when_the_task_is_cancelled_while_waiting(server: procs.Proc) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    env.update({"LOCALFLOW_URL": str(server.url), "LOCALFLOW_API_TOKEN": TOKEN})
    mark = f"cancel-me-{time.monotonic_ns()}"  # tells this test's task from any other
    waiting = subprocess.Popen(
        [sys.executable, "-m", "localflow.cli", "submit", "--wait", "-o", "json", "--delay",
         "1h", "--env", f"MARK={mark}", "shell", "--", "true"],
        cwd=procs.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with Client(str(server.url), TOKEN) as lf:
            deadline = time.monotonic() + 60
            queued = []
            while not queued and time.monotonic() < deadline:
                queued = [t for t in lf.list(status="queued").items
                          if t.payload.get("env", {}).get("MARK") == mark]
                time.sleep(0.05)
            assert queued, "the waiting client never submitted"
            lf.cancel(queued[0].id)
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 3, err
    assert json.loads(out)["status"] == "cancelled"


def test_waiting_is_a_few_long_requests_not_a_polling_loop(server: procs.Proc) -> None:
    done = localflow(server, "submit", "--wait", "-o", "json", "shell", "--", "sleep", "2")
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout)["id"]
    deadline = time.monotonic() + 30
    gets: list[dict] = []
    while time.monotonic() < deadline:  # the access log line is written as the answer goes
        gets = [line for line in map(_json, Path(server.log_path).read_text().splitlines())
                if line.get("event") == "request" and line.get("path") == f"/api/tasks/{task_id}"
                and line.get("method") == "GET"]
        if gets:
            break
        time.sleep(0.05)
    # 2 s of running: polling every 0.2 s would be ~10 requests; a long poll is one.
    assert len(gets) == 1, gets


def test_python_client_wait_is_answered_as_the_task_finishes(server: procs.Proc) -> None:
    with Client(str(server.url), TOKEN) as lf:
        task = lf.submit("shell", {"command": "sleep", "args": ["1"]})
        done = lf.wait(task.id, timeout=60)
        answered = time.time()
        assert done.status == "succeeded"
        assert done.finished_at is not None
        assert answered - done.finished_at.timestamp() < 1.0


def _json(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def test_usage_error_without_a_server_still_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    done = subprocess.run([sys.executable, "-m", "localflow.cli", "submit", "--bogus-flag"],
                          cwd=procs.REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bogus" in done.stderr
