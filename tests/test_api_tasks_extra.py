"""Retry, delete, batch, the Idempotency-Key header, the attempts view and the error shape,
against `localflow serve`'s app, worker and scheduler in this process (tests/inproc.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import httpx
import pytest

from tests import inproc, procs

FINAL = {"succeeded", "failed", "cancelled"}


def shell(command: str, *args: str, **fields) -> dict:
    return {"type": "shell", "payload": {"command": command, "args": list(args)}, **fields}


def later(**fields) -> dict:
    """A task that will not run during the test."""
    return shell("echo", "later", delay=3600, **fields)


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[httpx.Client]:
    db = tmp_path_factory.mktemp("extra") / "extra.db"
    with inproc.serving(db, env={"LOCALFLOW_RETRY_BASE": "0.05"}) as client:
        yield client


def count(api: httpx.Client, table: str = "tasks") -> int:
    with sqlite3.connect(api.db_path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def submit(api: httpx.Client, body: dict, **kwargs) -> dict:
    r = api.post("/api/tasks", json=body, **kwargs)
    assert r.status_code in (200, 201), r.text
    return r.json()


def assert_problem(r: httpx.Response, status: int, *mentions: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    for text in mentions:
        assert text in body["detail"], body
    assert "Traceback" not in r.text
    return body


# -- retry ---------------------------------------------------------------------------------


def test_retry_a_failed_task_keeps_its_history_and_runs_once_more(api):
    task = submit(api, shell("sh", "-c", "echo attempt; exit 3", max_attempts=1))
    failed = procs.wait_for_status(api, task["id"], FINAL)
    assert (failed["status"], failed["attempts"], failed["max_attempts"]) == ("failed", 1, 1)

    r = api.post(f"/api/tasks/{task['id']}/retry")
    assert r.status_code == 200, r.text
    retried = r.json()
    assert (retried["status"], retried["max_attempts"], retried["finished_at"]) == (
        "queued", 2, None)
    again = procs.wait_for_status(api, task["id"], FINAL)
    assert (again["status"], again["attempts"]) == ("failed", 2)

    attempts = api.get(f"/api/tasks/{task['id']}/attempts").json()
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert all(a["outcome"] == "failed" for a in attempts)
    assert all(a["output"]["exit_code"] == 3 for a in attempts)
    assert attempts[0]["output"]["stdout"] == "attempt\n"
    assert "exited with status 3" in attempts[1]["error"]

    more = api.post(f"/api/tasks/{task['id']}/retry", params={"attempts": 3}).json()
    assert more["max_attempts"] == 2 + 3


def test_retry_a_cancelled_task_runs_it_now(api):
    task = submit(api, later())
    assert api.post(f"/api/tasks/{task['id']}/cancel").json()["status"] == "cancelled"
    retried = api.post(f"/api/tasks/{task['id']}/retry").json()
    assert retried["status"] in ("queued", "running", "succeeded")
    assert retried["run_at"] < task["run_at"]  # now, not in an hour
    done = procs.wait_for_status(api, task["id"], FINAL)
    assert done["status"] == "succeeded" and done["result"]["stdout"] == "later\n"


def test_retry_refuses_what_is_not_failed_or_cancelled(api):
    queued = submit(api, later())
    assert_problem(api.post(f"/api/tasks/{queued['id']}/retry"), 409, "queued",
                   "only failed or cancelled")
    ok = submit(api, shell("true"))
    procs.wait_for_status(api, ok["id"], FINAL)
    assert_problem(api.post(f"/api/tasks/{ok['id']}/retry"), 409, "succeeded")
    assert_problem(api.post("/api/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry"), 404, "no task")
    for bad in ("0", "101", "many"):
        r = api.post(f"/api/tasks/{queued['id']}/retry", params={"attempts": bad})
        assert_problem(r, 400, "attempts")
    assert api.get(f"/api/tasks/{queued['id']}").json()["status"] == "queued"


# -- delete --------------------------------------------------------------------------------


def test_delete_removes_the_task_and_its_attempts(api):
    task = submit(api, shell("echo", "bye"))
    procs.wait_for_status(api, task["id"], FINAL)
    tasks, attempts = count(api), count(api, "task_attempts")
    r = api.delete(f"/api/tasks/{task['id']}")
    assert r.status_code == 204 and r.content == b""
    assert (count(api), count(api, "task_attempts")) == (tasks - 1, attempts - 1)
    assert_problem(api.get(f"/api/tasks/{task['id']}"), 404)
    assert_problem(api.get(f"/api/tasks/{task['id']}/attempts"), 404)
    assert_problem(api.delete(f"/api/tasks/{task['id']}"), 404, "no task")


def test_delete_a_queued_task_means_it_never_runs(api):
    task = submit(api, later())
    assert api.delete(f"/api/tasks/{task['id']}").status_code == 204
    assert_problem(api.get(f"/api/tasks/{task['id']}"), 404)


def test_a_running_task_cannot_be_deleted_until_it_stops(api):
    task = submit(api, shell("sleep", "30"))
    procs.wait_for_status(api, task["id"], {"running"})
    assert_problem(api.delete(f"/api/tasks/{task['id']}"), 409, "running", "cancel it")
    assert api.get(f"/api/tasks/{task['id']}").json()["status"] == "running"
    api.post(f"/api/tasks/{task['id']}/cancel")
    procs.wait_for_status(api, task["id"], {"cancelled"})
    assert api.delete(f"/api/tasks/{task['id']}").status_code == 204


def test_deleting_frees_the_idempotency_key(api):
    first = submit(api, later(idempotency_key="free-me"))
    assert api.delete(f"/api/tasks/{first['id']}").status_code == 204
    r = api.post("/api/tasks", json=shell("echo", "other", delay=3600,
                                          idempotency_key="free-me"))
    assert r.status_code == 201 and r.json()["id"] != first["id"]


# -- batch ---------------------------------------------------------------------------------


def test_batch_queues_all_and_returns_every_id_in_order(api):
    before = count(api)
    bodies = [later(priority=p) for p in (1, 2, 3)]
    r = api.post("/api/tasks/batch", json={"tasks": bodies})
    assert r.status_code == 201, r.text
    result = r.json()
    assert len(result["ids"]) == 3 and result["ids"] == [t["id"] for t in result["tasks"]]
    assert [t["priority"] for t in result["tasks"]] == [1, 2, 3]
    assert count(api) == before + 3
    for task_id in result["ids"]:
        assert api.get(f"/api/tasks/{task_id}").json()["status"] == "queued"


def test_batch_is_atomic_an_invalid_item_queues_nothing(api):
    before = count(api)
    bad = [later(), later(), {"type": "shell", "payload": {"args": ["no command"]}}]
    assert_problem(api.post("/api/tasks/batch", json={"tasks": bad}), 422, "tasks[2]",
                   "command")
    used = submit(api, later(idempotency_key="batch-key"))
    before = count(api)
    clash = [later(), shell("echo", "different", idempotency_key="batch-key")]
    assert_problem(api.post("/api/tasks/batch", json={"tasks": clash}), 409, "batch-key",
                   used["id"])
    assert count(api) == before


def test_batch_reuses_tasks_by_idempotency_key(api):
    first = submit(api, later(idempotency_key="in-batch"))
    r = api.post("/api/tasks/batch", json={"tasks": [later(idempotency_key="in-batch"),
                                                     later()]})
    assert r.status_code == 201
    assert r.json()["ids"][0] == first["id"]


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"tasks": []}, 422, "tasks"),
        ({"tasks": [{"type": "shell", "payload": {"command": "echo"}}] * 1001}, 422, "tasks"),
        ({"task": []}, 422, "unknown field `task`"),
        ([], 422, "object"),
    ],
)
def test_batch_shape_errors(api, body, status, mentions):
    before = count(api)
    assert_problem(api.post("/api/tasks/batch", json=body), status, mentions)
    assert count(api) == before


# -- Idempotency-Key header ------------------------------------------------------------------


def test_idempotency_key_header_means_the_same_as_the_body_field(api):
    body = later()
    first = api.post("/api/tasks", json=body, headers={"Idempotency-Key": "hdr-1"})
    assert first.status_code == 201
    assert first.json()["idempotency_key"] == "hdr-1"
    again = api.post("/api/tasks", json=body, headers={"Idempotency-Key": "hdr-1"})
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    by_body = api.post("/api/tasks", json={**body, "idempotency_key": "hdr-1"})
    assert (by_body.status_code, by_body.json()["id"]) == (200, first.json()["id"])
    both = api.post("/api/tasks", json={**body, "idempotency_key": "hdr-1"},
                    headers={"Idempotency-Key": "hdr-1"})
    assert (both.status_code, both.json()["id"]) == (200, first.json()["id"])
    other = api.post("/api/tasks", json=shell("echo", "else"), headers={"Idempotency-Key": "hdr-1"})
    assert_problem(other, 409, "hdr-1", "different request")


def test_header_and_body_keys_that_differ_are_refused(api):
    before = count(api)
    r = api.post("/api/tasks", json=later(idempotency_key="body-key"),
                 headers={"Idempotency-Key": "header-key"})
    assert_problem(r, 422, "idempotency_key", "Idempotency-Key header")
    assert count(api) == before


def test_idempotency_key_header_is_bounded(api):
    r = api.post("/api/tasks", json=later(), headers={"Idempotency-Key": "k" * 256})
    assert_problem(r, 400, "Idempotency-Key")


# -- one error shape -----------------------------------------------------------------------


def test_unknown_routes_and_wrong_methods_are_problems(api):
    assert_problem(api.get("/api/nope"), 404, "/api/nope")
    assert_problem(api.get("/nope/at/all"), 404, "/nope/at/all")
    r = api.put("/api/tasks")
    body = assert_problem(r, 405, "PUT", "/api/tasks")
    assert "GET" in r.headers["allow"] and "POST" in body["detail"]
    assert_problem(api.patch("/api/tasks/x"), 405, "PATCH")


def test_request_body_limit(api):
    before = count(api)
    huge = b'{"type": "shell", "payload": {"command": "echo", "args": ["' + b"a" * 2_000_000
    r = api.post("/api/tasks", content=huge + b'"]}}',
                 headers={"content-type": "application/json"})
    assert_problem(r, 413)
    assert count(api) == before


def test_errors_never_carry_a_stack_trace(api):
    for r in (
        api.post("/api/tasks", content=b"\xff\xfe{", headers={"content-type": "application/json"}),
        api.get("/api/tasks", params={"limit": "NaN"}),
        api.get("/api/tasks/" + "x" * 65),
    ):
        assert 400 <= r.status_code < 500, r.text
        assert_problem(r, r.status_code)
        assert "File \"" not in r.text
