"""The typed client (localflow/client.py) and the `localflow submit | status | tasks | schedules`
commands, against `localflow serve`'s app in this process (tests/inproc.py); what needs a real
port or a real process runs a real `localflow serve` and is marked e2e."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from localflow import cli
from localflow import client as client_module
from localflow.client import AsyncClient, Client, ClientError, WaitTimeout
from shared.schedule_schemas import ScheduleCreate, ScheduleUpdate
from shared.schemas import Task, TaskCreate
from tests import inproc, procs

TOKEN = "client-test-token-71c3a9d2"
MISSING = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
ECHO = {"command": "echo", "args": ["hi"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[procs.Proc]:
    """One real `localflow serve` for this module (the conftest one is per test, and a start
    costs seconds); no test here needs an empty database."""
    proc = procs.start("serve", tmp_path_factory.mktemp("client") / "lf.db")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """`localflow serve`'s app in this process, for all but the e2e tests here."""
    # A webhook secret, so tasks and schedules may carry a callback_url (refused without one).
    with inproc.serving(tmp_path_factory.mktemp("client-inproc") / "lf.db",
                        env={"LOCALFLOW_WEBHOOK_SECRET": "client-test-secret"}) as client:
        yield client


@pytest.fixture
def lf(app) -> Iterator[Client]:
    with Client(str(app.base_url), timeout=10, transport=inproc.transport(app)) as c:
        yield c


# -- the Python client ----------------------------------------------------------------------


def test_submit_wait_get_list_and_attempts(lf: Client):
    task = lf.submit("shell", ECHO, priority=3)
    assert isinstance(task, Task) and task.type == "shell" and task.priority == 3
    done = lf.wait(task.id, timeout=20)
    assert done.status == "succeeded" and done.result["stdout"] == "hi\n"
    assert lf.get(task.id).finished_at is not None

    as_struct = lf.submit(TaskCreate(type="shell", payload=ECHO, idempotency_key="k-1"))
    as_dict = lf.submit({"type": "shell", "payload": ECHO, "idempotency_key": "k-1"})
    assert as_struct.id == as_dict.id  # the same key and request: the same task

    page = lf.list(type="shell", limit=10)
    assert {task.id, as_struct.id} <= {t.id for t in page.items}
    [attempt] = lf.attempts(task.id)
    assert attempt.attempt == 1 and attempt.outcome == "succeeded"
    assert lf.health()["status"] == "ok"


def test_cancel_retry_and_delete(lf: Client):
    later = lf.submit("shell", ECHO, delay=3600)
    assert lf.cancel(later.id).status == "cancelled"
    again = lf.retry(later.id)
    assert again.status == "queued"
    assert lf.wait(later.id, timeout=20).status == "succeeded"
    lf.delete(later.id)
    with pytest.raises(ClientError) as gone:
        lf.get(later.id)
    assert gone.value.status == 404


def test_errors_carry_the_problem_details(lf: Client):
    with pytest.raises(ClientError) as missing:
        lf.get(MISSING)
    assert missing.value.status == 404 and MISSING in missing.value.detail
    assert missing.value.problem["status"] == 404 and missing.value.title == "Not Found"

    with pytest.raises(ClientError) as invalid:
        lf.submit("shell", {"command": "echo", "args": "not a list"})
    assert invalid.value.status == 422 and "args" in invalid.value.detail

    with pytest.raises(ClientError) as unknown:
        lf.submit({"type": "shell", "payload": ECHO, "colour": "blue"})
    assert unknown.value.status in (400, 422) and "colour" in str(unknown.value)

    # An id cannot reach another route: the server refuses a path with `..` segments.
    with pytest.raises(ClientError) as traversal:
        lf.get("../../health")
    assert traversal.value.status == 400 and "`..`" in traversal.value.detail

    later = lf.submit("shell", ECHO, delay=3600)
    with pytest.raises(WaitTimeout) as waited:
        lf.wait(later.id, timeout=0)
    assert waited.value.task.status == "queued" and "still queued" in str(waited.value)

    nowhere = Client(f"http://127.0.0.1:{procs.free_port()}", timeout=2)
    with nowhere, pytest.raises(ClientError) as unreachable:
        nowhere.get(MISSING)
    assert unreachable.value.status is None and "cannot reach" in unreachable.value.detail


def test_schedules(lf: Client):
    created = lf.create_schedule(ScheduleCreate(
        name="nightly", cron_expr="0 3 * * *", task_type="shell", payload=ECHO,
    ))
    assert created.enabled and created.next_fire_at is not None
    assert created.id in {s.id for s in lf.schedules()}
    paused = lf.update_schedule(created.id, ScheduleUpdate(enabled=False))
    assert not paused.enabled and paused.next_fire_at is None
    assert lf.update_schedule(created.id, {"enabled": True}).enabled
    assert lf.get_schedule(created.id).name == "nightly"
    with pytest.raises(ClientError) as bad_cron:
        lf.create_schedule({"name": "x", "cron_expr": "every tuesday", "task_type": "shell",
                            "payload": ECHO})
    assert bad_cron.value.status == 422
    lf.delete_schedule(created.id)
    with pytest.raises(ClientError) as gone:
        lf.get_schedule(created.id)
    assert gone.value.status == 404


async def test_async_client(tmp_path):
    async with inproc.serving_async(tmp_path / "async.db") as (url, transport), \
            AsyncClient(url, timeout=10, transport=transport) as lf:
        task = await lf.submit("shell", ECHO)
        done = await lf.wait(task.id, timeout=20)
        assert done.status == "succeeded"
        assert (await lf.get(task.id)).id == task.id
        assert isinstance(await lf.schedules(), list)
        with pytest.raises(ClientError) as missing:
            await lf.cancel(MISSING)
        assert missing.value.status == 404


@pytest.mark.e2e
def test_token_from_the_environment(tmp_path, monkeypatch):
    proc = procs.start("serve", tmp_path / "auth.db", env={"LOCALFLOW_API_TOKEN": TOKEN})
    try:
        with Client(proc.url) as anonymous, pytest.raises(ClientError) as denied:
            anonymous.list()
        assert denied.value.status == 401
        monkeypatch.setenv("LOCALFLOW_URL", proc.url)
        monkeypatch.setenv("LOCALFLOW_API_TOKEN", TOKEN)
        with Client.from_env() as lf:
            assert lf.list().items == []

        # The command line reads the same variables.
        code, out, err = _cli_subprocess("tasks")
        assert code == 0 and out.strip() == "no tasks", err
        monkeypatch.delenv("LOCALFLOW_API_TOKEN")
        code, _, err = _cli_subprocess("tasks")
        assert code == 2 and "401" in err and "LOCALFLOW_API_TOKEN" in err
    finally:
        proc.stop()
    assert TOKEN not in proc.log()


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def run(app, monkeypatch, capsys):
    """Run `localflow ARGS...` in this process against the app: (exit code, out, err)."""
    url = str(app.base_url)

    def client_for(server: str, *args, **kwargs) -> Client:
        # The app's address reaches the app in this process; any other is really tried.
        transport = inproc.transport(app) if server.rstrip("/") == url.rstrip("/") else None
        return Client(server, *args, transport=transport, **kwargs)

    # client_cli imports the client when it runs (so the server processes never load httpx).
    monkeypatch.setattr(client_module, "Client", client_for)
    return cli_runner(url, monkeypatch, capsys)


@pytest.fixture
def run_served(server: procs.Proc, monkeypatch, capsys):
    """Run `localflow ARGS...` in this process against a real server."""
    return cli_runner(server.url, monkeypatch, capsys)


def cli_runner(url: str, monkeypatch, capsys):
    monkeypatch.setenv("LOCALFLOW_URL", url)
    monkeypatch.delenv("LOCALFLOW_API_TOKEN", raising=False)

    def run_cli(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run_cli


@pytest.mark.e2e
def test_cli_submit_and_wait(run_served, server: procs.Proc):
    run = run_served
    code, out, _ = run("submit", "shell", "--wait", "--", "echo", "-n", "hello; rm -rf /")
    assert code == 0
    assert "status    succeeded" in out
    assert "hello; rm -rf /" in out  # metacharacters are one literal argument

    code, out, _ = run("submit", "shell", "--max-attempts", "1", "--wait", "--", "false")
    assert code == 1 and "status    failed" in out and "exited with status 1" in out

    code, out, _ = run("submit", "http", "--url", f"{server.url}/health", "--wait")
    assert code == 0 and "status code 200" in out

    code, out, _ = run("submit", "-o", "json", "--json",
                       json.dumps({"type": "shell", "payload": ECHO, "priority": 7}))
    assert code == 0
    submitted = json.loads(out)
    assert submitted["priority"] == 7 and submitted["status"] in ("queued", "running",
                                                                 "succeeded")
    code, out, _ = run("status", submitted["id"], "--wait", "-o", "json")
    assert code == 0 and json.loads(out)["result"]["stdout"] == "hi\n"


def test_cli_tasks(run):
    code, out, _ = run("submit", "shell", "--delay", "1h", "--env", "GREETING=hi", "--",
                       "printenv", "GREETING")
    assert code == 0
    task_id = out.strip()
    code, out, _ = run("tasks", "--status", "queued")
    assert code == 0 and task_id in out and out.startswith("ID ")
    code, out, _ = run("tasks", "cancel", task_id)
    assert code == 0 and "status    cancelled" in out
    code, out, _ = run("tasks", "retry", task_id)
    assert code == 0 and "status    queued" in out
    code, out, _ = run("status", task_id, "--wait")
    assert code == 0 and "  hi" in out
    code, out, _ = run("tasks", "attempts", task_id)
    assert code == 0 and "attempt 1: succeeded" in out
    code, out, _ = run("tasks", "-o", "json", "--limit", "1")
    assert code == 0 and len(json.loads(out)["items"]) == 1


def test_cli_queue_flags(run):
    code, out, _ = run("submit", "shell", "--queue", "mail", "--delay", "1h", "--", "true")
    assert code == 0
    task_id = out.strip()
    code, out, _ = run("tasks", "--queue", "mail", "-o", "json")
    assert code == 0 and [t["queue"] for t in json.loads(out)["items"]] == ["mail"]
    assert json.loads(out)["items"][0]["id"] == task_id
    code, out, err = run("submit", "shell", "--queue", "bad queue", "--", "true")
    assert code != 0 and "queue" in err
    code, out, _ = run("schedules", "create", "--name", "q", "--cron", "0 3 * * *",
                       "--queue", "reports", "-o", "json", "shell", "--", "true")
    assert code == 0 and json.loads(out)["queue"] == "reports"


def test_cli_schedules(run):
    code, out, err = run("schedules", "create", "--name", "every five", "--cron",
                         "*/5 * * * *", "shell", "--", "echo", "tick")
    assert code == 0, err
    schedule_id = out.split()[1]
    assert "cron      */5 * * * * (UTC)" in out
    code, out, _ = run("schedules")
    assert code == 0 and "every five" in out and schedule_id in out
    code, out, _ = run("schedules", "pause", schedule_id)
    assert code == 0 and "no (paused)" in out
    code, out, _ = run("schedules", "resume", schedule_id)
    assert code == 0 and "enabled   yes" in out
    code, out, _ = run("schedules", "delete", schedule_id)
    assert code == 0 and f"deleted schedule {schedule_id}" in out
    code, _, err = run("schedules", "get", schedule_id)
    assert code == 2 and "404" in err


@pytest.mark.parametrize(("args", "message"), [
    (("submit",), "what to submit"),
    (("submit", "shell"), "shell needs a command"),
    (("submit", "http"), "http needs a URL"),
    (("submit", "--json", "{oops"), "--json is not valid JSON"),
    (("submit", "--json", "{}", "shell", "--", "ls"), "not both"),
    (("submit", "shell", "--env", "NOEQUALS", "--", "ls"), "NAME=VALUE"),
    (("submit", "shell", "--delay", "soon", "--", "ls"), "invalid duration"),
    (("tasks", "cancel"), "needs a TASK_ID"),
    (("tasks", "--limit", "0"), "--limit"),
    (("schedules", "create", "shell", "--", "ls"), "--name"),
    (("schedules", "delete"), "one schedule ID"),
    (("status", "x", "--", "y"), "after --"),
])
def test_cli_usage_errors_exit_2_and_say_why(run, args, message):
    code, out, err = run(*args)
    assert code == 2 and message in err and out == ""


def test_cli_reports_refusals_and_an_unreachable_server(run):
    code, _, err = run("status", MISSING)
    assert code == 2 and "404 Not Found" in err and MISSING in err
    code, _, err = run("submit", "--json", json.dumps({"type": "ftp", "payload": {}}))
    assert code == 2 and "422" in err and "ftp" in err
    code, _, err = run("tasks", "--server", f"http://127.0.0.1:{procs.free_port()}")
    assert code == 2 and "cannot reach LocalFlow" in err


def _cli_subprocess(*args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "localflow.cli", *args], capture_output=True, text=True,
        timeout=60, cwd=procs.REPO, env=os.environ.copy(),
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.e2e
def test_cli_as_a_real_process(server: procs.Proc, monkeypatch):
    monkeypatch.setenv("LOCALFLOW_URL", server.url)
    code, out, err = _cli_subprocess("submit", "shell", "--wait", "--", "echo", "from a script")
    assert code == 0, err
    assert "from a script" in out


def test_cli_callback_url_flags(run):
    hook = "http://127.0.0.1:9/hook"  # the discard port: nothing answers, tries are recorded
    code, out, _ = run("submit", "shell", "--callback-url", hook, "--delay", "1h",
                       "-o", "json", "--", "true")
    assert code == 0 and json.loads(out)["callback_url"] == hook
    code, out, err = run("submit", "shell", "--callback-url", "ftp://example.test/x", "--",
                         "true")
    assert code != 0 and "callback_url" in err  # the server's own check, named
    code, out, _ = run("schedules", "create", "--name", "hooked", "--cron", "0 3 * * *",
                       "--callback-url", hook, "-o", "json", "shell", "--", "true")
    assert code == 0 and json.loads(out)["callback_url"] == hook
