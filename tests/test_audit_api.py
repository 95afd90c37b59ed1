"""The audit trail over HTTP: every operator action through the REST API, the dashboard (its
forms, CSRF and a logged-in session) and the `localflow` command is recorded with its channel
and a non-secret actor; GET /api/audit pages, filters and refuses bad input naming the field;
the dashboard page shows and filters it (docs/audit.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from api.dashboard.security import SESSION_COOKIE
from shared.audit import fingerprint
from tests import inproc, procs

TOKEN = "audit-test-token-0123456789"
ENV = {"LOCALFLOW_API_TOKEN": TOKEN, "LOCALFLOW_METRICS_ADDR": "off"}
TOKEN_ACTOR = fingerprint("token", TOKEN)


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[httpx.Client]:
    db = tmp_path_factory.mktemp("audit") / "lf.db"
    with inproc.serving(db, env=ENV, worker=False, token=TOKEN) as client:
        yield client


def shell(**fields) -> dict:
    return {"type": "shell", "payload": {"command": "echo"}, **fields}


def trail(client: httpx.Client, **params) -> list[dict]:
    r = client.get("/api/audit", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    assert TOKEN not in r.text
    return r.json()["items"]


def problem(r: httpx.Response, status: int, *mentions: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    for word in mentions:
        assert word in r.text, (word, r.text)


def schedule_body(name: str = "nightly") -> dict:
    return {"name": name, "cron_expr": "0 3 * * *", "task_type": "shell",
            "payload": {"command": "echo"}}


# -- the REST API -------------------------------------------------------------------------------


def test_every_api_action_is_recorded_with_the_token_fingerprint(api: httpx.Client):
    t = api.post("/api/tasks", json=shell()).json()
    assert api.post(f"/api/tasks/{t['id']}/cancel").status_code == 200
    assert api.post(f"/api/tasks/{t['id']}/retry").status_code == 200
    assert api.post(f"/api/tasks/{t['id']}/cancel").status_code == 200
    assert api.delete(f"/api/tasks/{t['id']}").status_code == 204
    assert [e["action"] for e in trail(api, target=t["id"])] == [
        "task.delete", "task.cancel", "task.retry", "task.cancel"]

    s = api.post("/api/schedules", json=schedule_body()).json()
    assert api.put(f"/api/schedules/{s['id']}", json={"enabled": False}).status_code == 200
    assert api.put(f"/api/schedules/{s['id']}", json={"enabled": True}).status_code == 200
    assert api.put(f"/api/schedules/{s['id']}", json={"priority": 4}).status_code == 200
    run = api.post(f"/api/schedules/{s['id']}/run")
    assert run.status_code == 201
    assert api.delete(f"/api/schedules/{s['id']}").status_code == 204
    entries = trail(api, target=s["id"])
    assert [e["action"] for e in entries] == [
        "schedule.delete", "schedule.run", "schedule.update", "schedule.resume",
        "schedule.pause", "schedule.create"]
    assert entries[1]["details"] == {"task_id": run.json()["id"]}
    assert entries[2]["details"] == {"fields": ["priority"]}

    assert api.put("/api/queues/audited", json={"concurrency": 3}).status_code == 200
    assert api.put("/api/queues/audited", json={"paused": True}).status_code == 200
    assert api.put("/api/queues/audited", json={"paused": False}).status_code == 200
    entries = trail(api, target="audited")
    assert [(e["action"], e["details"]) for e in entries] == [
        ("queue.resume", {}), ("queue.pause", {}), ("queue.limit", {"concurrency": 3})]

    for e in trail(api):
        assert (e["channel"], e["actor"]) == ("api", TOKEN_ACTOR), e
        assert set(e) == {"id", "at", "action", "target_kind", "target_id", "count", "channel",
                          "actor", "details"}


def test_refused_actions_record_nothing(api: httpx.Client):
    before = len(trail(api))
    t = api.post("/api/tasks", json=shell()).json()
    assert api.post(f"/api/tasks/{t['id']}/retry").status_code == 409  # queued: not retryable
    assert api.post("/api/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel").status_code == 404
    assert api.put("/api/queues/audited", json={"concurrency": 0}).status_code == 422
    assert api.put("/api/schedules/01ARZ3NDEKTSV4RRFFQ69G5FAV",
                   json={"enabled": False}).status_code == 404
    assert len(trail(api)) == before


def test_the_cli_header_names_the_channel(api: httpx.Client):
    t = api.post("/api/tasks", json=shell()).json()
    r = api.post(f"/api/tasks/{t['id']}/cancel", headers={"LocalFlow-Client": "cli"})
    assert r.status_code == 200
    [entry] = trail(api, target=t["id"])
    assert (entry["channel"], entry["actor"]) == ("cli", TOKEN_ACTOR)


def test_list_is_keyset_paged_and_filtered(api: httpx.Client):
    ids = [api.post("/api/tasks", json=shell()).json()["id"] for _ in range(5)]
    for task_id in ids:
        assert api.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    everything = [e["id"] for e in trail(api, action="task.cancel")]
    assert everything == sorted(everything, reverse=True)
    seen, cursor = [], None
    while True:
        r = api.get("/api/audit", params={"action": "task.cancel", "limit": 2,
                                          **({"cursor": cursor} if cursor else {})})
        body = r.json()
        assert len(body["items"]) <= 2
        seen += [e["id"] for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert {e["action"] for e in trail(api, action="task.cancel")} == {"task.cancel"}
    assert trail(api, target="nothing-here") == []


@pytest.mark.parametrize(("params", "field"), [
    ({"action": "task.explode"}, "action"),
    ({"action": "null"}, "action"),
    ({"target": "has space"}, "target"),
    ({"target": "x" * 65}, "target"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "0" * 27}, "cursor"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "many"}, "limit"),
])
def test_bad_queries_are_400_naming_the_field(api: httpx.Client, params, field):
    problem(api.get("/api/audit", params=params), 400, field)


def test_the_openapi_document_describes_it(api: httpx.Client):
    doc = api.get("/schema/openapi.json").json()
    op = doc["paths"]["/api/audit"]["get"]
    names = {p["name"] for p in op["parameters"]}
    assert {"action", "target", "cursor", "limit"} <= names
    assert "400" in op["responses"] and "401" in op["responses"]
    action = next(p for p in op["parameters"] if p["name"] == "action")
    assert "task.cancel" in str(action["schema"])


def test_the_token_is_needed(api: httpx.Client):
    r = httpx.Client(transport=api._transport, base_url=str(api.base_url)).get("/api/audit")
    assert r.status_code == 401


# -- the dashboard ------------------------------------------------------------------------------


def _dashboard(api: httpx.Client) -> tuple[httpx.Client, str, dict[str, str]]:
    """A browser-like client: logged in through the form, CSRF header ready."""
    web = httpx.Client(transport=api._transport, base_url=str(api.base_url),
                       follow_redirects=False)
    page = web.get("/dashboard/login")
    csrf = re.search(r'name="_csrf_token" value="(\w+)"', page.text).group(1)
    r = web.post("/dashboard/login", data={"token": TOKEN, "_csrf_token": csrf})
    assert r.status_code == 303, r.text
    session = web.cookies[SESSION_COOKIE]
    web.get("/dashboard")
    token = next(v for k, v in web.cookies.items() if k.startswith("localflow_csrf"))
    return web, session, {"x-csrftoken": token, "hx-request": "true"}


def test_dashboard_actions_are_recorded_with_the_session_fingerprint(api: httpx.Client):
    web, session, csrf = _dashboard(api)
    who = fingerprint("session", session)
    t = api.post("/api/tasks", json=shell()).json()
    for action in ("cancel", "retry", "cancel", "delete"):
        r = web.post(f"/dashboard/tasks/{t['id']}/{action}", headers=csrf)
        assert r.status_code == 200, (action, r.text)
    s = api.post("/api/schedules", json=schedule_body("dash")).json()
    for action in ("pause", "resume", "run", "delete"):
        r = web.post(f"/dashboard/schedules/{s['id']}/{action}", headers=csrf)
        assert r.status_code == 200, (action, r.text)
    assert [e["action"] for e in trail(api, target=t["id"])] == [
        "task.delete", "task.cancel", "task.retry", "task.cancel"]
    schedule_entries = trail(api, target=s["id"])
    assert [e["action"] for e in schedule_entries] == [
        "schedule.delete", "schedule.run", "schedule.resume", "schedule.pause",
        "schedule.create"]
    for e in trail(api, target=t["id"]) + schedule_entries[:-1]:
        assert (e["channel"], e["actor"]) == ("dashboard", who), e
    assert schedule_entries[-1]["channel"] == "api"  # created through the API above
    # Without CSRF nothing happens and nothing is recorded.
    other = api.post("/api/tasks", json=shell()).json()
    assert web.post(f"/dashboard/tasks/{other['id']}/cancel",
                    headers={"hx-request": "true"}).status_code == 403
    assert trail(api, target=other["id"]) == []
    listed = api.get("/api/audit").text
    assert session not in listed and TOKEN not in listed


def test_a_dashboard_bulk_action_is_one_entry_with_its_count(api: httpx.Client):
    web, session, csrf = _dashboard(api)
    ids = [api.post("/api/tasks", json=shell()).json()["id"] for _ in range(4)]
    for task_id in ids:
        assert api.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    queued = api.post("/api/tasks", json=shell()).json()  # not retryable: skipped
    before = {e["id"] for e in trail(api)}
    r = web.post("/dashboard/tasks/bulk", headers=csrf,
                 data={"action": "retry", "ids": [*ids, queued["id"]], "status": "cancelled"})
    assert r.status_code == 200, r.text
    job = re.search(r"/dashboard/tasks/bulk/([\w-]+)", r.text).group(1)
    deadline = time.monotonic() + 60
    while "HX-Redirect" not in web.get(f"/dashboard/tasks/bulk/{job}", headers=csrf).headers:
        assert time.monotonic() < deadline, "the bulk job never finished"
    new = [e for e in trail(api) if e["id"] not in before]
    assert len(new) == 1, new  # one entry for the whole action, none per task
    [bulk] = new
    assert (bulk["action"], bulk["target_kind"], bulk["target_id"], bulk["count"]) == (
        "task.retry", "task", None, 4)
    assert bulk["channel"] == "dashboard" and bulk["actor"] == fingerprint("session", session)
    assert bulk["details"]["bulk"] is True and bulk["details"]["selected"] == 5
    assert bulk["details"]["skipped"] == 1 and sorted(bulk["details"]["ids"]) == sorted(ids)
    assert bulk["details"]["scope"] == "ticked"
    assert bulk["details"]["filter"] == {"status": "cancelled"}
    assert all(api.get(f"/api/tasks/{i}").json()["status"] == "queued" for i in ids)


def test_the_dashboard_page_lists_filters_and_refuses_bad_filters(api: httpx.Client):
    web, _, _ = _dashboard(api)
    t = api.post("/api/tasks", json=shell()).json()
    api.post(f"/api/tasks/{t['id']}/cancel")
    assert api.put("/api/queues/paged", json={"concurrency": 1}).status_code == 200
    for _ in range(25):  # enough for a second page, whatever ran before
        other = api.post("/api/tasks", json=shell()).json()
        api.post(f"/api/tasks/{other['id']}/cancel")
    page = web.get("/dashboard/audit", params={"limit": 100})
    assert page.status_code == 200
    assert 'href="/dashboard/audit" aria-current="page"' in page.text
    assert t["id"] in page.text and "task.cancel" in page.text
    only = web.get("/dashboard/audit", params={"action": "queue.limit"})
    assert t["id"] not in only.text and "paged" in only.text
    mine = web.get("/dashboard/audit", params={"target": t["id"]})
    assert mine.text.count('data-audit-id="') == 1
    paged = web.get("/dashboard/audit", params={"limit": 25})
    assert paged.text.count('data-audit-id="') == 25 and "Older →" in paged.text
    bad = web.get("/dashboard/audit", params={"action": "nope", "target": "a b"})
    assert bad.status_code == 400 and "action:" in bad.text
    assert TOKEN not in page.text


# -- the CLI (a real server process) --------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[procs.Proc]:
    db = tmp_path_factory.mktemp("audit-cli") / "lf.db"
    proc = procs.start("serve", db, env=ENV)
    yield proc
    proc.stop()


def localflow(server: procs.Proc, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    env.update({"LOCALFLOW_URL": str(server.url), "LOCALFLOW_API_TOKEN": TOKEN})
    done = subprocess.run([sys.executable, "-m", "localflow.cli", *args], cwd=procs.REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.e2e
def test_cli_actions_are_recorded_as_cli(server: procs.Proc):
    with httpx.Client(base_url=str(server.url), timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        t = api.post("/api/tasks", json=shell(delay=3600)).json()
        localflow(server, "tasks", "cancel", t["id"])
        localflow(server, "tasks", "retry", t["id"])
        created = localflow(server, "schedules", "create", "-o", "json", "--name", "cli",
                            "--cron", "0 3 * * *", "shell", "--", "echo", "hi")
        schedule_id = json.loads(created.stdout)["id"]
        for action in ("pause", "resume", "delete"):
            localflow(server, "schedules", action, schedule_id)
        task_entries = trail(api, target=t["id"])
        schedule_entries = trail(api, target=schedule_id)
    assert [e["action"] for e in task_entries] == ["task.retry", "task.cancel"]
    assert [e["action"] for e in schedule_entries] == [
        "schedule.delete", "schedule.resume", "schedule.pause", "schedule.create"]
    for e in task_entries + schedule_entries:
        assert (e["channel"], e["actor"]) == ("cli", TOKEN_ACTOR), e
    # And the command reads the trail (a read: it records nothing itself).
    shown = localflow(server, "audit", "--target", schedule_id).stdout
    assert shown.splitlines()[0].split() == ["WHEN", "ACTION", "TARGET", "THROUGH", "WHO"]
    assert [line.split()[1] for line in shown.splitlines()[1:]] == [
        "schedule.delete", "schedule.resume", "schedule.pause", "schedule.create"]
    assert all(TOKEN_ACTOR in line and " cli " in line for line in shown.splitlines()[1:])
    paged = json.loads(localflow(server, "audit", "-o", "json", "--action", "task.cancel",
                                 "--limit", "1").stdout)
    assert [e["target_id"] for e in paged["items"]] == [t["id"]] and paged["next_cursor"] is None


def test_dashboard_schedule_forms_record_create_and_only_the_changed_fields(api: httpx.Client):
    web, session, csrf = _dashboard(api)
    form = {"name": "Formed", "cron_expr": "0 9 * * *", "timezone": "UTC",
            "task_type": "shell", "command": "echo", "enabled": "on", "overlap": "allow",
            "missed": "skip", "priority": "0"}
    r = web.post("/dashboard/schedules", data=form, headers=csrf)
    assert r.status_code == 200, r.text
    [created] = [s for s in api.get("/api/schedules").json() if s["name"] == "Formed"]
    url = f"/dashboard/schedules/{created['id']}"
    # The edit form sends every field: the entry names only those that changed.
    assert web.post(url, data={**form, "priority": "5"}, headers=csrf).status_code == 200
    edited = {k: v for k, v in form.items() if k != "enabled"}  # unticked: paused
    assert web.post(url, data={**edited, "priority": "5"}, headers=csrf).status_code == 200
    entries = trail(api, target=created["id"])
    assert [(e["action"], e["details"]) for e in entries] == [
        ("schedule.pause", {}),
        ("schedule.update", {"fields": ["priority"]}),
        ("schedule.create", {"name": "Formed", "cron_expr": "0 9 * * *", "queue": "default",
                             "enabled": True}),
    ]
    assert {(e["channel"], e["actor"]) for e in entries} == {
        ("dashboard", fingerprint("session", session))}


@pytest.mark.e2e
def test_the_workers_pruner_drops_old_entries_and_metrics_show_it(tmp_path):
    """A real `serve` with --retain-audit 2s: its worker prunes the entries once they age."""
    env = {**ENV, "LOCALFLOW_RETAIN_AUDIT": "2s", "LOCALFLOW_PRUNE_INTERVAL": "500ms"}
    proc = procs.start("serve", tmp_path / "prune.db", env=env)
    try:
        with httpx.Client(base_url=str(proc.url), timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            t = api.post("/api/tasks", json=shell(delay=3600)).json()
            assert api.post(f"/api/tasks/{t['id']}/cancel").status_code == 200
            assert [e["action"] for e in trail(api)] == ["task.cancel"]
            deadline = time.monotonic() + 60
            while trail(api):
                assert time.monotonic() < deadline, "the entry was never pruned"
                time.sleep(0.2)
            metrics = api.get("/metrics").text
    finally:
        proc.stop()
    assert "localflow_audit_retention_seconds 2.0" in metrics
    assert "localflow_audit_pruned_total 1.0" in metrics
