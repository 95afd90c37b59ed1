"""The task API against `localflow serve`'s app in this process (a real SQLite file and a real
worker); the one example that needs a real port runs a real process."""

from __future__ import annotations

import concurrent.futures

import pytest

from tests import inproc, procs

ECHO = {"type": "shell", "payload": {"command": "echo", "args": ["Hello, LocalFlow!"]}}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with inproc.serving(tmp_path_factory.mktemp("api") / "api.db") as client:
        yield client


def task_count(api) -> int:
    return procs.task_count(api.db_path)


def test_seed_example_submit_and_status(api):
    r = api.post("/api/tasks", json=ECHO)
    assert r.status_code == 201
    created = r.json()
    assert created["status"] == "queued" and len(created["id"]) == 26
    done = procs.wait_for_status(api, created["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["result"]["stdout"] == "Hello, LocalFlow!\n"
    assert done["attempts"] == 1 and done["finished_at"] is not None


@pytest.mark.e2e
def test_seed_http_example_against_own_health(tmp_path):
    with procs.serving(tmp_path / "own.db") as api:
        seed_http_example_against_own_health(api)


def seed_http_example_against_own_health(api):
    url = f"{str(api.base_url).rstrip('/')}/health"
    body = {"type": "http", "payload": {"url": url, "method": "GET", "timeout": 10}}
    r = api.post("/api/tasks", json=body)
    assert r.status_code == 201
    done = procs.wait_for_status(api, r.json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert done["result"]["status_code"] == 200


def test_options_priority_delay_max_attempts_timeout(api):
    body = {**ECHO, "priority": 7, "delay": 3600, "max_attempts": 5, "timeout": 12.5}
    task = api.post("/api/tasks", json=body).json()
    assert (task["priority"], task["max_attempts"], task["timeout"]) == (7, 5, 12.5)
    assert task["run_at"] > task["created_at"]
    assert api.get(f"/api/tasks/{task['id']}").json()["status"] == "queued"
    assert api.post(f"/api/tasks/{task['id']}/cancel").json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        (b"{not json", 400, "malformed"),
        (b"[]", 422, "object"),
        (b'{"payload": {}}', 422, "type"),
        (b'{"type": "shell", "payload": {"command": "echo"}, "priorty": 1}', 422, "priorty"),
        (b'{"type": "teleport", "payload": {}}', 422, "unknown task type 'teleport'"),
        (b'{"type": "shell", "payload": {"args": ["x"]}}', 422, "missing required field `command`"),
        (b'{"type": "shell", "payload": {"command": 5}}', 422, "$.payload.command"),
        (b'{"type": "http", "payload": {"method": "GET"}}', 422, "url"),
        (b'{"type": "http", "payload": {"url": "file:///etc/passwd"}}', 422, "http://"),
        (b'{"type": "shell", "payload": {"command": "echo"}, "timeout": -1}', 422, "timeout"),
        (b'{"type": "shell", "payload": {"command": "echo"}, "priority": "high"}', 422,
         "priority"),
        (b'{"type": "shell", "payload": {"command": "echo"}, "delay": 1, '
         b'"run_at": "2030-01-01T00:00:00Z"}', 422, "either run_at or delay"),
    ],
)
def test_bad_submissions_are_refused_clearly_and_write_nothing(api, body, status, mentions):
    before = task_count(api)
    r = api.post("/api/tasks", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == status and mentions in problem["detail"], problem
    assert task_count(api) == before


def test_oversize_payload_is_refused(api):
    big = {"type": "shell", "payload": {"command": "echo", "args": ["x" * 60_000] * 5}}
    r = api.post("/api/tasks", json=big)
    assert r.status_code == 422 and "limit" in r.json()["detail"]
    huge = b'{"type": "shell", "payload": {"command": "' + b"x" * 2_000_000 + b'"}}'
    r = api.post("/api/tasks", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_idempotency_over_http(api):
    body = {**ECHO, "idempotency_key": "unique-123"}
    first = api.post("/api/tasks", json=body)
    again = api.post("/api/tasks", json=body)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = api.post("/api/tasks", json={**body, "payload": {"command": "echo", "args": ["x"]}})
    assert other.status_code == 409 and "different request" in other.json()["detail"]


def test_fifty_concurrent_submissions_with_one_key_make_one_task(api):
    body = {**ECHO, "idempotency_key": "concurrent-key"}
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda _: api.post("/api/tasks", json=body), range(50)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert sum(r.status_code == 201 for r in responses) == 1
    assert len({r.json()["id"] for r in responses}) == 1


def test_list_filters_and_cursor(api):
    ids = [api.post("/api/tasks", json={**ECHO, "delay": 3600}).json()["id"] for _ in range(5)]
    page = api.get("/api/tasks", params={"status": "queued", "type": "shell", "limit": 2}).json()
    assert [t["id"] for t in page["items"]] == ids[::-1][:2]
    rest = api.get("/api/tasks", params={"status": "queued", "cursor": page["next_cursor"],
                                         "limit": 3}).json()
    assert [t["id"] for t in rest["items"]] == ids[::-1][2:5]
    assert api.get("/api/tasks", params={"status": "bogus"}).status_code == 400
    assert api.get("/api/tasks", params={"limit": 0}).status_code == 400


def test_unknown_task_and_routes_are_problem_json(api):
    r = api.get("/api/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert r.status_code == 404 and "no task" in r.json()["detail"]
    r = api.get("/api/nothing-here")
    assert r.status_code == 404 and r.json()["status"] == 404
    r = api.delete("/health")
    assert r.status_code == 405 and r.json()["status"] == 405


def test_attempts_view(api):
    body = {"type": "shell", "payload": {"command": "false"}, "max_attempts": 1}
    task = api.post("/api/tasks", json=body).json()
    procs.wait_for_status(api, task["id"], {"failed"})
    attempts = api.get(f"/api/tasks/{task['id']}/attempts").json()
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "failed")]
    assert attempts[0]["error"] == "false exited with status 1"


def test_health(api):
    r = api.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
