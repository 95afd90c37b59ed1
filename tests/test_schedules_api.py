"""/api/schedules against `localflow serve`'s app, worker and scheduler in this process
(tests/inproc.py) on its own database file; what needs a real port runs a real process."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests import inproc, procs
from tests.seed import SEED_SCHEDULE

SEED = SEED_SCHEDULE  # the seed README's example


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    db = tmp_path_factory.mktemp("schedules-api") / "serve.db"
    with inproc.serving(db) as client:
        yield client, db


@pytest.fixture
def api(served) -> httpx.Client:
    return served[0]


def count_schedules(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM schedules").fetchone()[0]


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_create_the_seed_example_and_read_it_back(api):
    r = api.post("/api/schedules", json=SEED)
    assert r.status_code == 201, r.text
    s = r.json()
    assert {k: s[k] for k in ("name", "cron_expr", "task_type", "enabled")} == {
        "name": "Health Check", "cron_expr": "*/5 * * * *", "task_type": "http", "enabled": True}
    assert (s["timezone"], s["overlap"], s["missed"], s["priority"]) == ("UTC", "allow",
                                                                         "skip", 0)
    nxt = parse(s["next_fire_at"])
    now = datetime.now(UTC)
    assert now < nxt <= now + timedelta(minutes=5, seconds=1)
    assert nxt.minute % 5 == 0 and nxt.second == 0
    assert s["last_fire_at"] is None and s["last_task_id"] is None
    assert api.get(f"/api/schedules/{s['id']}").json() == s
    assert s["id"] in [x["id"] for x in api.get("/api/schedules").json()]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron_expr": "*/5 * * *"}, "cron_expr"),
        ({"cron_expr": "0 9 * * MON-FUN"}, "cron_expr"),
        ({"cron_expr": "0 0 31 2 *"}, "cron_expr"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"payload": {"url": "localhost/health"}}, "payload"),
        ({"task_type": "shell"}, "payload"),  # an http payload is not a shell payload
        ({"task_type": "ftp"}, "task_type"),
        ({"priority": 1001}, "priority"),
        ({"overlap": "never"}, "overlap"),
        ({"cron": "* * * * *"}, "cron"),  # unknown fields are refused, not ignored
    ],
)
def test_invalid_create_is_422_naming_the_field_and_writes_nothing(api, served, changes, field):
    before = count_schedules(served[1])
    r = api.post("/api/schedules", json={**SEED, **changes})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in r.json()["detail"]
    if field != "cron":  # msgspec names no field for an unknown one, only in the message
        assert [e["field"] for e in r.json()["errors"]] == [field]
    assert count_schedules(served[1]) == before


def test_missing_required_field_and_non_json_body(api):
    r = api.post("/api/schedules", json={k: v for k, v in SEED.items() if k != "cron_expr"})
    assert r.status_code in (400, 422) and "cron_expr" in r.json()["detail"]
    r = api.post("/api/schedules", content=b"{not json",
                 headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_update_pause_resume_and_cron_edit(api):
    s = api.post("/api/schedules", json=SEED).json()
    r = api.put(f"/api/schedules/{s['id']}", json={"enabled": False})
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False and r.json()["next_fire_at"] is None
    r = api.put(f"/api/schedules/{s['id']}", json={"enabled": True, "cron_expr": "0 9 * * *",
                                                   "timezone": "Europe/Berlin"})
    body = r.json()
    nxt = parse(body["next_fire_at"])
    assert nxt.astimezone(ZoneInfo("Europe/Berlin")).hour == 9 and nxt.minute == 0
    assert body["payload"] == s["payload"] and body["name"] == s["name"]
    r = api.put(f"/api/schedules/{s['id']}", json={"cron_expr": "nope"})
    assert r.status_code == 422 and "cron_expr" in r.json()["detail"]
    assert api.get(f"/api/schedules/{s['id']}").json()["cron_expr"] == "0 9 * * *"
    r = api.put(f"/api/schedules/{s['id']}", json={"paused": True})
    assert r.status_code == 422 and "paused" in r.json()["detail"]


def test_next_fire_times(api):
    s = api.post("/api/schedules", json={**SEED, "cron_expr": "0 9 * * MON-FRI",
                                         "timezone": "Europe/Berlin"}).json()
    r = api.get(f"/api/schedules/{s['id']}/next", params={"n": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timezone"] == "Europe/Berlin" and len(body["times"]) == 7
    times = [parse(t) for t in body["times"]]
    assert times == sorted(times)
    assert {t.strftime("%H:%M") for t in times} == {"09:00"}  # local wall time, with offset
    assert {t.strftime("%a") for t in times} <= {"Mon", "Tue", "Wed", "Thu", "Fri"}
    assert times[0] == parse(s["next_fire_at"])
    assert len(api.get(f"/api/schedules/{s['id']}/next").json()["times"]) == 5
    for bad in (0, 101, "x"):
        assert api.get(f"/api/schedules/{s['id']}/next", params={"n": bad}).status_code == 400


@pytest.mark.e2e
def test_run_now_runs_the_task_and_the_schedule_shows_it(tmp_path):
    """The seed's example calls LocalFlow's own /health: a real port, so a real process."""
    with procs.serving(tmp_path / "run-now.db") as api:
        run_now_runs_the_task_and_the_schedule_shows_it(api)


def run_now_runs_the_task_and_the_schedule_shows_it(api):
    payload = {"url": f"{str(api.base_url).rstrip('/')}/health", "method": "GET"}
    r = api.post("/api/schedules", json={**SEED, "payload": payload, "enabled": False})
    assert r.status_code == 201, r.text
    s = r.json()
    r = api.post(f"/api/schedules/{s['id']}/run")
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["schedule_id"] == s["id"] and task["type"] == "http"
    done = procs.wait_for_status(api, task["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    after = api.get(f"/api/schedules/{s['id']}").json()
    assert after["last_task_id"] == task["id"] and after["last_task_status"] == "succeeded"
    assert after["last_fire_at"] is not None and after["next_fire_at"] is None  # still paused


def test_delete_leaves_past_tasks(api):
    s = api.post("/api/schedules", json={**SEED, "enabled": False}).json()
    task = api.post(f"/api/schedules/{s['id']}/run").json()
    r = api.delete(f"/api/schedules/{s['id']}")
    assert r.status_code == 204
    assert api.get(f"/api/schedules/{s['id']}").status_code == 404
    kept = api.get(f"/api/tasks/{task['id']}")
    assert kept.status_code == 200 and kept.json()["schedule_id"] == s["id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/next"), ("POST", "/run")],
)
def test_unknown_schedule_is_404(api, method, path):
    r = api.request(method, f"/api/schedules/01JUNKNOWN0000000000000000{path}",
                    json={"name": "x"} if method == "PUT" else None)
    assert r.status_code == 404, r.text
    assert "no schedule" in r.json()["detail"]


def test_plain_tasks_have_a_null_schedule_id(api):
    r = api.post("/api/tasks", json={"type": "shell", "payload": {"command": "true"}})
    assert r.status_code == 201 and r.json()["schedule_id"] is None
