"""/api/queues and ?queue= over HTTP, against `localflow serve`'s app in this process
(tests/inproc.py): shapes, validation (problem+json naming the field, nothing changed), the
queue on tasks and schedules, and the CLI's --queue."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests import inproc


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[httpx.Client]:
    db = tmp_path_factory.mktemp("queues") / "lf.db"
    with inproc.serving(db, worker=False) as client:
        yield client


def problem(r: httpx.Response, status: int, *mentions: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    for word in mentions:
        assert word in r.text, (word, body)
    return body


def shell(**fields) -> dict:
    return {"type": "shell", "payload": {"command": "echo"}, **fields}


def test_tasks_carry_a_queue_and_list_by_it(api: httpx.Client):
    default = api.post("/api/tasks", json=shell()).json()
    mail = api.post("/api/tasks", json=shell(queue="mail")).json()
    assert default["queue"] == "default" and mail["queue"] == "mail"
    listed = api.get("/api/tasks", params={"queue": "mail"}).json()["items"]
    assert [t["id"] for t in listed] == [mail["id"]]
    for bad in ("has space", "x" * 65, ""):
        problem(api.post("/api/tasks", json=shell(queue=bad)), 422, "queue")
    problem(api.get("/api/tasks", params={"queue": "no/slash"}), 400, "queue")


def test_get_and_put_a_queue(api: httpx.Client):
    before = api.get("/api/queues/reports").json()
    assert before == {"name": "reports", "counts": before["counts"], "concurrency": None,
                      "paused": False}
    r = api.put("/api/queues/reports", json={"concurrency": 2})
    assert r.status_code == 200 and r.json()["concurrency"] == 2
    r = api.put("/api/queues/reports", json={"paused": True})
    assert (r.json()["concurrency"], r.json()["paused"]) == (2, True)
    r = api.put("/api/queues/reports", json={"concurrency": None, "paused": False})
    assert (r.json()["concurrency"], r.json()["paused"]) == (None, False)
    names = [q["name"] for q in api.get("/api/queues").json()]
    assert "reports" in names and names == sorted(names)


@pytest.mark.parametrize(("body", "field"), [
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": -1}, "concurrency"),
    ({"concurrency": 100001}, "concurrency"),
    ({"concurrency": "2"}, "concurrency"),
    ({"paused": "yes"}, "paused"),
    ({"paused": None}, "paused"),
    ({"limit": 3}, "limit"),
])
def test_bad_settings_are_refused_and_change_nothing(api: httpx.Client, body, field):
    api.put("/api/queues/strict", json={"concurrency": 5})
    problem(api.put("/api/queues/strict", json=body), 422, field)
    after = api.get("/api/queues/strict").json()
    assert (after["concurrency"], after["paused"]) == (5, False)


def test_bad_queue_names_in_the_path(api: httpx.Client):
    for bad in ("has%20space", "x" * 65, "a%2Fb"):
        r = api.put(f"/api/queues/{bad}", json={"paused": True})
        assert r.status_code in (400, 404), r.text
    assert all(" " not in q["name"] for q in api.get("/api/queues").json())


def test_schedule_queue(api: httpx.Client):
    r = api.post("/api/schedules", json={
        "name": "nightly", "cron_expr": "0 3 * * *", "task_type": "shell",
        "payload": {"command": "echo"}, "queue": "reports",
    })
    assert r.status_code == 201 and r.json()["queue"] == "reports", r.text
    task = api.post(f"/api/schedules/{r.json()['id']}/run").json()
    assert task["queue"] == "reports"
    problem(api.post("/api/schedules", json={
        "name": "bad", "cron_expr": "0 3 * * *", "task_type": "shell",
        "payload": {"command": "echo"}, "queue": "bad queue",
    }), 422, "queue")


def test_worker_queues_setting():
    from shared.settings import settings_from
    assert settings_from({"LOCALFLOW_QUEUES": "a, b.c,a"}).queues == ("a", "b.c")
    assert settings_from({}).queues == ()
    with pytest.raises(ValueError, match=r"LOCALFLOW_QUEUES.*not a queue name"):
        settings_from({"LOCALFLOW_QUEUES": "ok,bad name"})
