"""The dashboard's queues page and the queue on the task pages, without a browser: every change
goes through the API's own rules (a refused one changes nothing), CSRF guards them, the task
list filters by queue (counts and "every task matching" included).

tests/browser/test_dashboard_queues.py drives the same pages in Chromium."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest

from api.dashboard.snapshots import Snapshots
from shared.ids import new_id
from shared.queue_schemas import QueueUpdate
from shared.queues import Queues
from shared.schemas import TaskCreate
from tests import inproc
from tests.test_dashboard import _bulk_result

ENV = {"LOCALFLOW_METRICS_ADDR": "off"}


def _csrf(client: httpx.Client) -> dict[str, str]:
    client.get("/dashboard")
    token = next(v for k, v in client.cookies.items() if k.startswith("localflow_csrf"))
    return {"x-csrftoken": token, "hx-request": "true"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    # No worker: queued tasks stay queued, so counts are exact.
    with inproc.serving(tmp_path_factory.mktemp("dq") / "q.db", env=ENV, worker=False) as c:
        yield c


@pytest.fixture
def web(served):
    served.cookies.clear()
    return served


def _task(web: httpx.Client, queue: str | None = None, **fields) -> dict:
    body = {"type": "shell", "payload": {"command": "echo"}, **fields}
    if queue:
        body["queue"] = queue
    r = web.post("/api/tasks", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _queue(web: httpx.Client, name: str) -> dict:
    r = web.get(f"/api/queues/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def test_queues_page_lists_every_queue_with_counts_limit_and_state(web):
    for _ in range(3):
        _task(web, "page-reports")
    _task(web, "page-mail")
    assert web.put("/api/queues/page-mail", json={"concurrency": 4, "paused": True}).is_success
    page = web.get("/dashboard/queues")
    assert page.status_code == 200 and "<h1>Queues</h1>" in page.text
    assert 'href="/dashboard/queues" aria-current="page"' in page.text  # in the nav
    assert 'data-queue="page-reports" data-paused="false" data-limit=""' in page.text
    assert 'data-queue="page-mail" data-paused="true" data-limit="4"' in page.text
    assert 'aria-label="3 queued in page-reports"' in page.text
    fragment = web.get("/dashboard/queues", headers={"hx-request": "true",
                                                     "hx-target": "queues-live"})
    assert 'id="queues-live"' in fragment.text and "<html" not in fragment.text


def test_pause_resume_and_limit_change_the_queue_as_the_api_would(web):
    _task(web, "acts")
    headers = _csrf(web)
    r = web.post("/dashboard/queues/acts/pause", headers=headers)
    assert r.status_code == 200 and "Paused acts" in r.text
    assert _queue(web, "acts")["paused"] is True
    r = web.post("/dashboard/queues/acts/resume", headers=headers)
    assert r.status_code == 200 and "Resumed acts" in r.text
    assert _queue(web, "acts")["paused"] is False
    r = web.post("/dashboard/queues/acts/limit", data={"concurrency": " 3 "}, headers=headers)
    assert r.status_code == 200 and "at most 3 running at once" in r.text
    assert _queue(web, "acts")["concurrency"] == 3
    r = web.post("/dashboard/queues/acts/limit", data={"concurrency": ""}, headers=headers)
    assert r.status_code == 200 and "no concurrency limit" in r.text
    assert _queue(web, "acts")["concurrency"] is None
    # A queue with no task yet can be set up too, as with PUT /api/queues/{name}.
    r = web.post("/dashboard/queues/not-yet-used/pause", headers=headers)
    assert r.status_code == 200 and _queue(web, "not-yet-used")["paused"] is True


@pytest.mark.parametrize("typed", ["0", "-2", "100001", "abc", "2.5", "1e3"])
def test_a_bad_limit_is_an_inline_error_naming_the_field_and_changes_nothing(web, typed):
    _task(web, "strict")
    headers = _csrf(web)
    assert web.put("/api/queues/strict", json={"concurrency": 2}).is_success
    r = web.post("/dashboard/queues/strict/limit", data={"concurrency": typed}, headers=headers)
    assert r.status_code == 422, r.text
    assert 'id="limit-strict-error"' in r.text and "Concurrency limit:" in r.text
    assert 'aria-invalid="true"' in r.text and f'value="{typed}"' in r.text  # kept as typed
    assert _queue(web, "strict")["concurrency"] == 2


def test_a_bad_queue_name_is_refused_and_changes_nothing(web):
    headers = _csrf(web)
    r = web.post("/dashboard/queues/bad name!/pause", headers=headers)
    assert r.status_code in (404, 422), r.text
    names = [q["name"] for q in web.get("/api/queues").json()]
    assert "bad name!" not in names


def test_queue_actions_need_the_csrf_token(web):
    _task(web, "guarded")
    web.get("/dashboard")
    for url, form in (("/dashboard/queues/guarded/pause", {}),
                      ("/dashboard/queues/guarded/limit", {"concurrency": "1"})):
        r = web.post(url, data=form)
        assert r.status_code == 403, url
    assert web.get("/dashboard/queues/guarded/pause").status_code in (404, 405)
    q = _queue(web, "guarded")
    assert q["paused"] is False and q["concurrency"] is None


def test_task_list_filters_by_queue_with_its_counts(web):
    mine = [_task(web, "list-q")["id"] for _ in range(2)]
    other = _task(web, "list-other")["id"]
    r = web.get("/dashboard/tasks", params={"queue": "list-q"})
    assert r.status_code == 200
    assert all(i in r.text for i in mine) and other not in r.text
    assert 'id="f-queue" name="queue" list="queue-names" value="list-q"' in r.text
    # The status chips count this queue only, and keep the queue in their links.
    assert "queue=list-q" in r.text
    live = web.get("/dashboard/tasks", params={"queue": "list-q"},
                   headers={"hx-request": "true", "hx-target": "tasks-live"}).text
    assert 'name="queue" value="list-q"' in live  # bulk "every task matching" keeps it
    assert 'all <span class="n">2</span>' in live
    ready = web.get("/dashboard/tasks", params={"queue": "list-q", "status": "ready"}).text
    assert all(i in ready for i in mine) and other not in ready
    # The column: each row says its queue.
    assert 'href="/dashboard/tasks?queue=list-other"' in web.get("/dashboard/tasks").text
    bad = web.get("/dashboard/tasks", params={"queue": "no spaces"})
    assert bad.status_code == 200 and "is not a queue name" in bad.text


def test_bulk_every_task_matching_honours_the_queue(tmp_path: Path):
    with inproc.serving(tmp_path / "bulkq.db", env=ENV, worker=False) as web:
        doomed = [_task(web, "bulk-a", delay=3600)["id"] for _ in range(3)]
        kept = [_task(web, "bulk-b", delay=3600)["id"] for _ in range(2)]
        r = web.post("/dashboard/tasks/bulk", headers=_csrf(web), data={
            "action": "cancel", "scope": "matching", "status": "queued", "queue": "bulk-a"})
        assert r.status_code == 200, r.text
        done = _bulk_result(web, r, timeout=60)
        assert "Cancel: 3 of 3 task(s) done." in unquote_plus(done)
        assert "queue=bulk-a" in done  # back to the same filtered list
        for i in doomed:
            assert web.get(f"/api/tasks/{i}").json()["status"] == "cancelled"
        for i in kept:
            assert web.get(f"/api/tasks/{i}").json()["status"] == "queued"



def test_submit_form_takes_a_queue_and_names_it_when_wrong(web):
    headers = _csrf(web)
    r = web.post("/dashboard/submit", headers=headers,
                 data={"type": "shell", "command": "echo", "queue": "from-form"})
    assert r.status_code == 201, r.text
    task_id = re.search(r'data-task-id="([0-9A-Z]{26})"', r.text) or re.search(
        r"/dashboard/tasks/([0-9A-Z]{26})", r.text)
    assert task_id, r.text
    task = web.get(f"/api/tasks/{task_id.group(1)}").json()
    assert task["queue"] == "from-form"
    page = web.get(f"/dashboard/tasks/{task['id']}").text
    assert 'data-queue="from-form"' in page  # the task page says its queue
    clone = web.get(f"/dashboard/submit?clone={task['id']}").text
    assert 'name="queue" type="text" value="from-form"' in clone
    # Suggested from the queues that exist: that list is a copy redone in the background when
    # the data changed, so the new queue shows up on a later request, not necessarily this one.
    deadline = time.monotonic() + 30
    while '<option value="from-form">' not in clone and time.monotonic() < deadline:
        time.sleep(0.05)
        clone = web.get(f"/dashboard/submit?clone={task['id']}").text
    assert '<option value="from-form">' in clone

    before = len(web.get("/api/tasks", params={"limit": 200}).json()["items"])
    bad = web.post("/dashboard/submit", headers=headers,
                   data={"type": "shell", "command": "echo", "queue": "no spaces"})
    assert bad.status_code == 422, bad.text
    assert 'id="f-queue-error"' in bad.text and 'id="f-queue" name="queue"' in bad.text
    assert len(web.get("/api/tasks", params={"limit": 200}).json()["items"]) == before


def test_schedule_form_and_list_carry_the_queue(web):
    headers = _csrf(web)
    form = {"name": "Queued nightly", "cron_expr": "0 3 * * *", "timezone": "UTC",
            "task_type": "shell", "command": "echo", "enabled": "on", "overlap": "allow",
            "missed": "skip", "queue": "nightly-q"}
    bad = web.post("/dashboard/schedules", headers=headers, data={**form, "queue": "a/b"})
    assert bad.status_code == 422 and 'id="f-queue-error"' in bad.text
    assert "Queued nightly" not in [s["name"] for s in web.get("/api/schedules").json()]
    ok = web.post("/dashboard/schedules", headers=headers, data=form)
    assert ok.status_code == 200 and "hx-redirect" in ok.headers, ok.text
    (made,) = [s for s in web.get("/api/schedules").json() if s["name"] == "Queued nightly"]
    assert made["queue"] == "nightly-q"
    edit = web.get(f"/dashboard/schedules/{made['id']}").text
    assert 'name="queue" type="text" value="nightly-q"' in edit
    listed = web.get("/dashboard/schedules").text
    assert 'data-queue="nightly-q"' in listed
    saved = web.post(f"/dashboard/schedules/{made['id']}", headers=headers,
                     data={**form, "queue": "other-q"})
    assert saved.status_code == 200, saved.text
    assert web.get(f"/api/schedules/{made['id']}").json()["queue"] == "other-q"


def test_system_page_shows_retention_pruned_rows_and_database_size(tmp_path: Path):
    env = {**ENV, "LOCALFLOW_RETAIN_SUCCEEDED": "36h", "LOCALFLOW_RETAIN_FAILED": "forever",
           "LOCALFLOW_PRUNE_INTERVAL": "50ms"}
    with inproc.serving(tmp_path / "sys.db", env=env) as web:
        page = web.get("/dashboard/system").text
        section = page[page.index('id="retention"'):page.index("<h2>Configuration</h2>")]
        assert re.search(r"<code>--retain-succeeded</code></td><td[^>]*>(1 d 12 h|36 h)</td>",
                         section), section
        assert re.search(r"<code[^>]*>LOCALFLOW_RETAIN_SUCCEEDED</code>", section), section
        assert "forever (never pruned)" in section  # failed
        assert "prune succeeded tasks finished longer ago" in section  # the meaning
        assert 'id="database-size"' in section and "database file" in section
        # `serve` in this process: its pruner's count is shown, from 0 to what it pruned.
        assert "0 since this process started" in section
        _old_succeeded(web.db_path, 5, days=2)
        deadline = time.monotonic() + 60
        while "5 since this process started" not in web.get("/dashboard/system").text:
            assert time.monotonic() < deadline, "the pruner did not prune the 5 old tasks"
            time.sleep(0.05)
        assert "(5 succeeded, 0 failed, 0 cancelled)" in web.get("/dashboard/system").text
    with inproc.serving(tmp_path / "sys.db", env=env, worker=False) as api_only:
        page = api_only.get("/dashboard/system").text
        assert "pruned by the worker processes" in page


def _old_succeeded(db: Path, n: int, days: float) -> None:
    """n succeeded tasks that finished `days` ago, written straight into the file (the API
    cannot backdate)."""
    finished = time.time() - days * 86400
    rows = [(new_id(finished - i), finished - 1, finished) for i in range(n)]
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO tasks (id, type, payload, status, priority, run_at, attempts,"
            " max_attempts, timeout, created_at, updated_at, started_at, finished_at)"
            " VALUES (?1, 'shell', '{\"command\":\"true\",\"args\":[],\"env\":{}}',"
            " 'succeeded', 0, ?2, 1, 1, 300, ?2, ?3, ?2, ?3)", rows)


async def test_the_queue_list_is_kept_not_recounted_on_every_poll(queue, monkeypatch):
    """Counting every queue reads the whole table: polls share the last copy, which is redone
    (in the background) only once it is old enough and the database changed."""
    calls = []
    real = queue.store.queues

    async def counted():
        calls.append(1)
        return await real()

    monkeypatch.setattr(queue.store, "queues", counted)
    snap, queues = Snapshots(), Queues(queue)
    await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}, queue="kept-a"))
    first = await snap.queues(queues, wait=True)
    assert [q.name for q in first] == ["kept-a"] and len(calls) == 1
    for _ in range(5):  # polls within the second: the copy, no read
        assert [q.name for q in await snap.queues(queues)] == ["kept-a"]
    assert len(calls) == 1
    copy = snap.queue_list.made[None]
    copy.cost = 0  # (else a list slowed by a busy machine is due only later: ten times its cost)
    copy.at -= 2  # a copy two seconds old, nothing changed: still good
    copy.checked -= 2
    await snap.queues(queues)
    if (looking := snap.queue_list.making.get(None)) is not None:
        await looking  # the check (in the background): nothing changed, no read
    assert len(calls) == 1
    await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}, queue="kept-b"))
    copy.checked -= 2
    stale = await snap.queues(queues)  # this poll gets the old copy; a recount starts
    assert [q.name for q in stale] == ["kept-a"] and None in snap.queue_list.making
    await snap.queue_list.making[None]
    assert [q.name for q in await snap.queues(queues)] == ["kept-a", "kept-b"]
    assert len(calls) == 2
    # A change made on the page shows at once, without a recount.
    snap.changed(await Queues(queue).update("kept-b", QueueUpdate(paused=True)))
    assert [q.paused for q in await snap.queues(queues)] == [False, True] and len(calls) == 2
