"""Unknown query parameters on /api (api/request_rules.py): a typo is a 400 naming it and the
parameters the operation knows, and changes nothing. Against `localflow serve`'s app in this
process without a worker (tests/inproc.py), on a real SQLite file; the open event stream and
the server's own HTTP parsing against a real `localflow api` process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import inproc, procs

ECHO = {"type": "shell", "payload": {"command": "echo", "args": ["hi"]}}
PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Any]:
    with inproc.serving(tmp_path_factory.mktemp("strictq") / "q.db", worker=False) as client:
        yield client


def _refused(r: httpx.Response, name: str, operation: str, known: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    message = f"not a query parameter of {operation}; known: {known}"
    assert r.json()["detail"] == f"invalid request: {name}: {message}"
    assert r.json()["errors"] == [{"field": name, "message": message}]


def test_a_typo_of_wait_on_submit_is_400_and_queues_nothing(api):
    before = procs.task_count(api.db_path)
    r = api.post("/api/tasks?wiat=30", json=ECHO)
    _refused(r, "wiat", "POST /api/tasks", "none")
    # With an Idempotency-Key too (Litestar's path either way): still nothing queued.
    r = api.post("/api/tasks", params={"wiat": "30"}, json=ECHO,
                 headers={"Idempotency-Key": "strictq-typo"})
    _refused(r, "wiat", "POST /api/tasks", "none")
    assert procs.task_count(api.db_path) == before
    # The same request without the typo is queued: the refusal was the parameter alone.
    assert api.post("/api/tasks", json=ECHO).status_code == 201
    assert procs.task_count(api.db_path) == before + 1


def test_a_typo_on_a_batch_is_400_and_queues_none_of_it(api):
    before = procs.task_count(api.db_path)
    r = api.post("/api/tasks/batch", params={"atomic": "1"}, json={"tasks": [ECHO, ECHO]})
    _refused(r, "atomic", "POST /api/tasks/batch", "none")
    assert procs.task_count(api.db_path) == before


def test_a_typo_on_the_task_list_names_the_filters_it_has(api):
    api.post("/api/tasks", json=ECHO)
    r = api.get("/api/tasks", params={"stauts": "failed"})  # would list every task
    _refused(r, "stauts", "GET /api/tasks", "cursor, limit, queue, status, type")
    ok = api.get("/api/tasks", params={"status": "queued", "limit": 1, "type": "shell"})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 1


def test_a_typo_of_wait_on_get_task_is_400_and_wait_still_works(api):
    task = api.post("/api/tasks", json=ECHO).json()
    _refused(api.get(f"/api/tasks/{task['id']}", params={"wiat": "5"}),
             "wiat", "GET /api/tasks/{task_id}", "wait")
    # A known one still works: no worker, so the wait ends with the task still queued.
    r = api.get(f"/api/tasks/{task['id']}", params={"wait": "0.05"})
    assert r.status_code == 200 and r.headers["LocalFlow-Wait"] == "timeout"


def test_a_typo_on_the_event_stream_is_400_before_it_opens(api):
    _refused(api.get("/api/events", params={"tasks": "T1"}),
             "tasks", "GET /api/events", "output, since, status, task")


def test_the_event_stream_refuses_if_match_as_every_other_api_read_does(api):
    # It now has the /api controllers' before_request (api/conditional.py's rule too).
    r = api.get("/api/events", headers={"If-Match": "*"})
    assert r.status_code == 400 and "If-Match is not supported on GET /api/events" in r.text


def test_the_known_names_are_derived_once_per_app_not_per_request(api):
    api.get("/api/queues", params={"x": "1"})
    rules = api.app.state["query_rules"]
    api.get("/api/tasks", params={"limit": 1})
    api.get("/api/schedules", params={"y": "2"})
    assert api.app.state["query_rules"] is rules


def test_event_filters_declared_as_lists_may_repeat(api):
    # A wrong status among repeated filters is refused for what it is, not for repeating
    # (a well-formed stream never ends; tests below open one over real HTTP).
    r = api.get("/api/events", params=[("task", "A"), ("task", "B"), ("status", "queued"),
                                       ("status", "done")])
    assert r.status_code in (400, 422), r.text
    assert r.json()["errors"][0]["field"] == "status"
    assert "unknown status 'done'" in r.json()["detail"]


def test_a_parameter_given_twice_is_still_400_where_it_is_no_list(api):
    r = api.get("/api/tasks", params=[("limit", "5"), ("limit", "6")])
    assert r.status_code == 400
    assert r.json()["errors"] == [{"field": "limit", "message": "given more than once"}]


def test_every_unknown_name_is_named_and_nothing_is_deleted(api):
    task = api.post("/api/tasks", json=ECHO).json()
    r = api.delete(f"/api/tasks/{task['id']}", params={"force": "1", "hard": "yes"})
    assert r.status_code == 400
    assert [e["field"] for e in r.json()["errors"]] == ["force", "hard"]
    assert api.get(f"/api/tasks/{task['id']}").status_code == 200
    nameless = api.get("/api/queues?=x")
    assert nameless.status_code == 400
    assert nameless.json()["errors"][0]["message"].startswith("a parameter without a name")


def _operations(document: dict) -> list[tuple[str, str, list[str], set[str]]]:
    """(METHOD, path template, its documented query parameters, its documented answers) of
    every /api operation."""
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/") and method in ("get", "post", "put", "delete", "patch"):
                names = sorted(p["name"] for p in operation.get("parameters", ())
                               if p["in"] == "query")
                found.append((method.upper(), path, names, set(operation["responses"])))
    return found


def test_every_api_operation_refuses_an_unknown_parameter_naming_what_it_documents(api):
    operations = _operations(api.get("/schema/openapi.json").json())
    assert len(operations) >= 20  # tasks, batch, schedules, queues, events, audit
    before = procs.task_count(api.db_path)
    for method, template, documented, answers in operations:
        path = re.sub(r"\{[^}]+\}", "01NOSUCHID0000000000000000", template)
        r = api.request(method, path, params={"zz_unknown": "1"})
        # The known names are the ones the OpenAPI document lists for the operation, and the
        # document says it can answer 400.
        _refused(r, "zz_unknown", f"{method} {template}", ", ".join(documented) or "none")
        assert "400" in answers, (method, template, sorted(answers))
    assert procs.task_count(api.db_path) == before


def test_head_is_refused_like_get_and_options_health_metrics_are_left_alone(api):
    head = api.head("/api/tasks", params={"stauts": "failed"})
    assert head.status_code == 400 and head.content == b""
    assert api.options("/api/tasks", params={"wait": "30"}).status_code == 204
    # Probes and scrapers may add parameters of their own; those paths are not /api.
    assert api.get("/health", params={"probe": "1"}).status_code == 200
    assert api.get("/metrics", params={"scrape": "1"}).status_code == 200


@pytest.mark.e2e
def test_over_real_http_a_typo_is_400_and_known_filters_open_the_stream(tmp_path):
    db = tmp_path / "http.db"
    proc = procs.start("api", db)
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            _refused(client.post("/api/tasks?wiat=30", json=ECHO),
                     "wiat", "POST /api/tasks", "none")
            assert procs.task_count(db) == 0
            _refused(client.get("/api/events?stauts=failed"),
                     "stauts", "GET /api/events", "output, since, status, task")
            with client.stream("GET", "/api/events", params=[
                ("task", "A"), ("task", "B"), ("status", "failed"), ("status", "succeeded"),
            ]) as stream:
                assert stream.status_code == 200
                assert next(stream.iter_lines()) == "retry: 2000"
    finally:
        proc.stop()
