"""Webhooks end to end (docs/webhooks.md): a `localflow api` and a `localflow worker` as
separate processes on one database, and a real HTTP receiver on 127.0.0.1 that checks every
signature. One receiver path answers 200, one fails twice and then answers, one never answers
(each try times out, is retried, and the delivery is finally given up). Every try is visible
in GET /api/tasks/{id}/deliveries. Retry waits and timeouts are made short by settings;
the test waits on the receiver's own events, with deadlines, never on a fixed sleep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs
from tests.webhook_receiver import SECRET, Receiver

pytestmark = pytest.mark.e2e

MAX_TRIES = 3
TRY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """`localflow api` and, apart, `localflow worker` on one database file."""
    db = tmp_path_factory.mktemp("webhooks") / "lf.db"
    env = {"LOCALFLOW_WEBHOOK_SECRET": SECRET}
    api_proc = procs.start("api", db, env=env)
    worker = procs.start("worker", db, "--workers", "2", "--metrics-addr", "off", env={
        **env, "LOCALFLOW_WEBHOOK_MAX_TRIES": str(MAX_TRIES),
        "LOCALFLOW_WEBHOOK_RETRY_BASE": "0.2s", "LOCALFLOW_WEBHOOK_TIMEOUT": f"{TRY_TIMEOUT}s",
    })
    try:
        with httpx.Client(base_url=api_proc.url, timeout=30) as client:
            client.worker = worker  # type: ignore[attr-defined]
            yield client
    finally:
        worker.stop()
        api_proc.stop()


def submit(api: httpx.Client, callback_url: str, **fields: object) -> dict:
    r = api.post("/api/tasks", json={"type": "shell", "payload": {"command": "true"},
                                     "callback_url": callback_url, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def wait_for(check: Callable[[], dict | None], timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while (found := check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return found


def settled_delivery(api: httpx.Client, task_id: str, timeout: float = 60.0) -> dict:
    """The task's one delivery once it is delivered or given up."""
    def check() -> dict | None:
        r = api.get(f"/api/tasks/{task_id}/deliveries")
        assert r.status_code == 200, r.text
        deliveries = r.json()
        if deliveries and deliveries[0]["state"] != "pending":
            return deliveries[0]
        return None

    return wait_for(check, timeout, f"task {task_id}'s delivery to settle")


def test_a_finished_task_is_posted_signed_with_its_json(api, receiver: Receiver):
    task = submit(api, f"{receiver.url}/ok/1")
    got = receiver.next("/ok/1")
    assert got.signed_ok, got.headers
    timestamp = int(got.headers["X-LocalFlow-Timestamp"])
    assert abs(time.time() - timestamp) < 120
    assert got.headers["X-LocalFlow-Signature"].startswith("sha256=")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-LocalFlow-Event"] == "task.succeeded"
    body = json.loads(got.body)
    assert body["id"] == task["id"] and body["status"] == "succeeded"
    assert body["callback_url"] == f"{receiver.url}/ok/1"
    # The same shape GET /api/tasks/{id} returns.
    assert body == api.get(f"/api/tasks/{task['id']}").json()

    delivery = settled_delivery(api, task["id"])
    assert delivery["id"] == got.headers["X-LocalFlow-Delivery"]
    assert delivery["state"] == "delivered" and delivery["tries"] == 1
    assert delivery["task_status"] == "succeeded" and delivery["next_try_at"] is None
    [attempt] = delivery["history"]
    assert attempt["status_code"] == 200 and attempt["error"] is None
    assert 0 <= attempt["duration"] < 30


def test_a_failing_receiver_is_retried_until_it_answers(api, receiver: Receiver):
    task = submit(api, f"{receiver.url}/flaky/1")
    posts = [receiver.next("/flaky/1") for _ in range(3)]
    assert all(p.signed_ok for p in posts)
    # One delivery, tried three times: the receiver dedupes on its id.
    assert len({p.headers["X-LocalFlow-Delivery"] for p in posts}) == 1
    assert posts[0].at <= posts[1].at <= posts[2].at
    delivery = settled_delivery(api, task["id"])
    assert delivery["state"] == "delivered" and delivery["tries"] == 3
    assert [h["status_code"] for h in delivery["history"]] == [500, 500, 200]
    assert delivery["history"][0]["error"] == "answered 500 Internal Server Error"


def test_a_receiver_that_never_answers_is_given_up_after_the_last_try(api, receiver: Receiver):
    task = submit(api, f"{receiver.url}/hang/1")
    posts = [receiver.next("/hang/1") for _ in range(MAX_TRIES)]
    assert len({p.headers["X-LocalFlow-Delivery"] for p in posts}) == 1
    delivery = settled_delivery(api, task["id"])
    assert delivery["state"] == "failed" and delivery["tries"] == MAX_TRIES
    assert delivery["finished_at"] is not None and delivery["next_try_at"] is None
    for attempt in delivery["history"]:
        assert attempt["status_code"] is None
        assert attempt["error"] == f"timed out after {TRY_TIMEOUT:g}s"
        assert TRY_TIMEOUT * 0.9 <= attempt["duration"] < TRY_TIMEOUT + 5


def test_a_cancelled_task_is_delivered_too(api, receiver: Receiver):
    task = submit(api, f"{receiver.url}/ok/cancelled", delay=3600)
    r = api.post(f"/api/tasks/{task['id']}/cancel")
    assert r.status_code == 200, r.text
    got = receiver.next("/ok/cancelled")
    assert got.signed_ok and got.headers["X-LocalFlow-Event"] == "task.cancelled"
    assert json.loads(got.body)["status"] == "cancelled"


def test_a_schedules_task_carries_its_callback(api, receiver: Receiver):
    r = api.post("/api/schedules", json={
        "name": "hooked", "cron_expr": "0 0 1 1 *", "task_type": "shell",
        "payload": {"command": "true"}, "callback_url": f"{receiver.url}/ok/schedule"})
    assert r.status_code == 201, r.text
    schedule = r.json()
    assert schedule["callback_url"] == f"{receiver.url}/ok/schedule"
    r = api.post(f"/api/schedules/{schedule['id']}/run")
    assert r.status_code in (200, 201), r.text
    task = r.json()
    assert task["callback_url"] == f"{receiver.url}/ok/schedule"
    got = receiver.next("/ok/schedule")
    assert got.signed_ok and json.loads(got.body)["id"] == task["id"]


@pytest.mark.parametrize("url, mentions", [
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("ftp://example.com/hook", "only http:// and https://"),
    ("file:///etc/passwd", "only http:// and https://"),
    ("https://user:pw@example.com/hook", "credentials"),
    ("http://0177.0.0.1/hook", "unambiguous"),
])
def test_bad_callback_urls_are_refused_at_submit(api, url: str, mentions: str):
    before = api.get("/api/tasks", params={"limit": 200}).json()["items"]
    r = api.post("/api/tasks", json={"type": "shell", "payload": {"command": "true"},
                                     "callback_url": url})
    assert r.status_code in (400, 422), r.text
    problem = r.json()
    assert "callback_url" in json.dumps(problem) and mentions in json.dumps(problem), problem
    assert api.get("/api/tasks", params={"limit": 200}).json()["items"] == before
    r = api.post("/api/schedules", json={
        "name": "bad hook", "cron_expr": "0 0 1 1 *", "task_type": "shell",
        "payload": {"command": "true"}, "callback_url": url})
    assert r.status_code in (400, 422) and "callback_url" in r.text, r.text


def test_without_a_secret_callback_url_is_refused(tmp_path: Path):
    proc = procs.start("api", tmp_path / "lf.db")
    try:
        r = httpx.post(f"{proc.url}/api/tasks", json={
            "type": "shell", "payload": {"command": "true"},
            "callback_url": "https://example.com/hook"}, timeout=30)
        assert r.status_code in (400, 422), r.text
        assert "callback_url" in r.text and "LOCALFLOW_WEBHOOK_SECRET" in r.text
        assert procs.task_count(tmp_path / "lf.db") == 0
    finally:
        proc.stop()


def _readme_receiver() -> str:
    """The Python receiver of the README's Webhooks section, verbatim."""
    text = (procs.REPO / "README.md").read_text()
    section = text.split("### Webhooks", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_receiver_accepts_a_real_delivery_and_refuses_a_forged_one(api):
    code = _readme_receiver()
    port = procs.free_port()
    assert '("127.0.0.1", 9000)' in code
    code = code.replace('("127.0.0.1", 9000)', f'("127.0.0.1", {port})')
    env = {**os.environ, "LOCALFLOW_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    receiver = subprocess.Popen([sys.executable, "-c", code], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/hook"
        # A forged delivery (wrong signature) is refused with 401.
        forged = wait_for(lambda: _post_or_none(url), 30, "the README receiver to listen")
        assert forged["status"] == 401
        task = submit(api, url)
        delivery = settled_delivery(api, task["id"])
        assert delivery["state"] == "delivered"
        assert [h["status_code"] for h in delivery["history"]] == [204]
    finally:
        receiver.terminate()
        out, err = receiver.communicate(timeout=30)
    assert f"{task['id']} succeeded" in out, (out, err)


def _post_or_none(url: str) -> dict | None:
    try:
        r = httpx.post(url, content=b"{}", headers={
            "X-LocalFlow-Timestamp": str(int(time.time())),
            "X-LocalFlow-Signature": "sha256=" + "0" * 64,
            "X-LocalFlow-Delivery": "forged"}, timeout=5)
    except httpx.HTTPError:
        return None
    return {"status": r.status_code}
