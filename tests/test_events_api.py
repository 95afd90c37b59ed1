"""GET /api/events (Server-Sent Events) against real processes: `localflow api` and `localflow
worker` apart, on a SQLite file and on PostgreSQL, the API with a token. The API's fallback
re-read is a minute, so events arrive in time only through the worker's commits' wake-ups."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e

TOKEN = "events-token-7d2e51a0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def api(db: str, tmp_path: Path) -> Iterator[procs.Proc]:
    env = {"LOCALFLOW_API_TOKEN": TOKEN, "LOCALFLOW_WAIT_POLL": "60s"}
    worker = procs.start("worker", db, env={**env, "LOCALFLOW_METRICS_ADDR": "off"},  # type: ignore[arg-type]
                         log_dir=tmp_path)
    api = procs.start("api", db, env=env, log_dir=tmp_path)  # type: ignore[arg-type]
    yield api
    api.stop()
    worker.stop()
    # Captured: pytest shows it only if the test failed.
    print("--- api log ---", api.log()[-4000:], "--- worker log ---", worker.log()[-4000:],
          sep="\n")


class Stream:
    """An open /api/events stream read on a thread: its events, comments and status."""

    def __init__(self, url: str, params: object = None, headers: dict | None = None) -> None:
        self.events: list[dict] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.content_type = ""
        self._client = httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=60))
        self._ready = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(params, headers), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the stream never answered"

    def _read(self, params: object, headers: dict | None) -> None:
        try:
            with self._client.stream("GET", "/api/events", params=params,
                                     headers={**AUTH, **(headers or {})}) as response:
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self._ready.set()
                event: dict = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line[1:].strip())
                    elif line == "":
                        if "data" in event:
                            event["data"] = json.loads(event["data"])
                            self.events.append(event)
                        event = {}
                    else:
                        field, _, value = line.partition(":")
                        event[field] = value.lstrip(" ")
        except (httpx.HTTPError, RuntimeError):
            if not self._closed:
                raise
        finally:
            self._ready.set()

    def wait_for(self, predicate, timeout: float = 90.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.events):
                return self.events
            time.sleep(0.01)
        raise AssertionError(f"never happened; events so far: {self.events}")

    def close(self) -> None:
        self._closed = True
        self._client.close()


def _submit(url: str, *argv: str, **fields: object) -> str:
    r = httpx.post(f"{url}/api/tasks", headers=AUTH, json={
        "type": "shell", "payload": {"command": argv[0], "args": list(argv[1:])}, **fields})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _statuses(events: list[dict], task_id: str) -> list[str]:
    return [e["data"]["status"] for e in events
            if e.get("event") == "task" and e["data"]["id"] == task_id]


def test_each_state_change_of_a_task_run_by_another_process_is_an_event(
    api: procs.Proc,
) -> None:
    stream = Stream(str(api.url))
    try:
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        task_id = _submit(str(api.url), "echo", "hi")
        events = stream.wait_for(lambda ev: "succeeded" in _statuses(ev, task_id))
        assert _statuses(events, task_id) == ["queued", "running", "succeeded"]
        last = [e for e in events if e["data"]["id"] == task_id][-1]
        assert last["event"] == "task" and last["id"]
        assert set(last["data"]) >= {"id", "status", "attempts", "type", "time", "queue"}
        assert last["data"]["attempts"] == 1 and last["data"]["type"] == "shell"
        assert last["data"]["queue"] == "default"
    finally:
        stream.close()


def test_reconnecting_with_last_event_id_misses_nothing(api: procs.Proc) -> None:
    url = str(api.url)
    first = Stream(url)
    try:
        a = _submit(url, "true")
        first.wait_for(lambda ev: "succeeded" in _statuses(ev, a))
        resume_from = first.events[-1]["id"]
    finally:
        first.close()
    # While nobody listens: more tasks run to the end.
    missed = [_submit(url, "true") for _ in range(3)]
    for task_id in missed:
        done = httpx.get(f"{url}/api/tasks/{task_id}", params={"wait": 60}, headers=AUTH)
        assert done.json()["status"] == "succeeded"
    again = Stream(url, headers={"Last-Event-ID": resume_from})
    try:
        events = again.wait_for(
            lambda ev: all("succeeded" in _statuses(ev, t) for t in missed))
        for task_id in missed:
            assert _statuses(events, task_id) == ["queued", "running", "succeeded"]
        assert _statuses(events, a) == []  # nothing from before the cursor
        cursors = [e["id"] for e in events]
        assert len(cursors) == len(set(cursors))
    finally:
        again.close()


def test_filters_by_task_and_status(api: procs.Proc) -> None:
    url = str(api.url)
    watched_stream_params = [("status", "succeeded"), ("status", "failed")]
    everything = Stream(url, params=watched_stream_params)  # open before the submits
    watched, other = _submit(url, "sleep", "0.2"), _submit(url, "true")
    only_final = Stream(url, params=[("task", watched), *watched_stream_params],
                        headers={"Last-Event-ID": "0-0"})  # from the log's start
    try:
        seen = everything.wait_for(lambda ev: "succeeded" in _statuses(ev, other)
                                   and "succeeded" in _statuses(ev, watched))
        assert {e["data"]["status"] for e in seen} == {"succeeded"}
        events = only_final.wait_for(lambda ev: "succeeded" in _statuses(ev, watched))
        assert {e["data"]["id"] for e in events} == {watched}
        assert {e["data"]["status"] for e in events} == {"succeeded"}
        assert _statuses(events, other) == []
    finally:
        only_final.close()
        everything.close()


def test_refusals_auth_and_the_openapi_entry(api: procs.Proc) -> None:
    url = str(api.url)
    assert httpx.get(f"{url}/api/events").status_code == 401
    bad = httpx.get(f"{url}/api/events", params={"status": "done"}, headers=AUTH)
    assert bad.status_code in (400, 422) and "status" in bad.text
    bad = httpx.get(f"{url}/api/events", headers={**AUTH, "Last-Event-ID": "yesterday"})
    assert bad.status_code in (400, 422) and "Last-Event-ID" in bad.text
    too_many = httpx.get(f"{url}/api/events", params=[("task", str(i)) for i in range(101)],
                         headers=AUTH)
    assert too_many.status_code in (400, 422) and "task" in too_many.text
    # The documented bound is the real one: 100 ids open the stream.
    with httpx.stream("GET", f"{url}/api/events", headers=AUTH, timeout=30,
                      params=[("task", str(i)) for i in range(100)]) as hundred:
        assert hundred.status_code == 200, hundred.read()
    spec = httpx.get(f"{url}/schema/openapi.json").json()
    operation = spec["paths"]["/api/events"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"task", "status", "Last-Event-ID"}
    assert "text/event-stream" in operation["responses"]["200"]["content"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_an_idle_stream_gets_a_heartbeat_comment_every_15_seconds(api: procs.Proc) -> None:
    stream = Stream(str(api.url))
    try:
        deadline = time.monotonic() + 40
        while "heartbeat" not in stream.comments and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "heartbeat" in stream.comments
    finally:
        stream.close()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_python_client_events_follow_a_task_and_resume_after_a_cursor(api: procs.Proc) -> None:
    from localflow.client import Client

    url = str(api.url)
    with Client(url, TOKEN) as lf:
        task = lf.submit("shell", {"command": "true"})
        seen = []
        # From the start of the log ("0-0"): the task's whole run, whenever it happened. (A
        # stream from "now" found nothing when the task had already finished before it
        # connected, and waited for ever: seen in the whole suite on a busy machine.)
        for event in lf.events(tasks=[task.id], last_event_id="0-0"):
            assert event.event == "task" and event.data["id"] == task.id
            seen.append(event)
            if event.data["status"] == "succeeded":
                break
        assert [e.data["status"] for e in seen] == ["queued", "running", "succeeded"]
        later = lf.submit("shell", {"command": "true"})
        assert lf.wait(later.id, timeout=60).status == "succeeded"
        resumed = []
        for event in lf.events(last_event_id=seen[-1].id, statuses=["succeeded"]):
            resumed.append(event)
            break
        assert [(e.data["id"], e.data["status"]) for e in resumed] == [(later.id, "succeeded")]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_async_client_events(api: procs.Proc) -> None:
    from localflow.client import AsyncClient

    async with AsyncClient(str(api.url), TOKEN) as lf:
        task = await lf.submit("shell", {"command": "true"})
        # From the start of the log ("0-0"): the task's whole run, whenever it happened.
        stream = lf.events(tasks=[task.id], last_event_id="0-0")
        statuses = []
        async with asyncio.timeout(60):
            async for event in stream:
                statuses.append(event.data["status"])
                if event.data["status"] == "succeeded":
                    break
        await stream.aclose()
        assert statuses == ["queued", "running", "succeeded"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_client_follow_tells_the_whole_story_of_a_task_that_already_ended(
    api: procs.Proc,
) -> None:
    """follow() of a task that finished before it was called: its events from its creation
    (replayed from the log), ending after the last one; of a failed task retried and then
    succeeded: the whole story, not ending at the first failure."""
    from localflow.client import Client

    with Client(str(api.url), TOKEN) as lf:
        task = lf.submit("shell", {"command": "true"})
        assert lf.wait(task.id, timeout=60).status == "succeeded"
        seen = list(lf.follow(task.id))
        assert [e.event for e in seen] == ["task"] * 3
        assert [(e.data["id"], e.data["status"]) for e in seen] == [
            (task.id, "queued"), (task.id, "running"), (task.id, "succeeded")]

        flaky = lf.submit("shell", {"command": "false"}, max_attempts=1)
        assert lf.wait(flaky.id, timeout=60).status == "failed"
        assert lf.retry(flaky.id).status == "queued"
        assert lf.wait(flaky.id, timeout=60).status == "failed"
        story = [(e.data["status"], e.data["attempts"]) for e in lf.follow(flaky.id)]
        assert story == [("queued", 0), ("running", 1), ("failed", 1), ("queued", 1),
                         ("running", 2), ("failed", 2)]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_client_follow_of_a_running_task_ends_when_it_ends(
    api: procs.Proc, tmp_path: Path,
) -> None:
    from localflow.client import Client

    release = tmp_path / "release"
    with Client(str(api.url), TOKEN) as lf:
        task = lf.submit("shell", {"command": "sh", "args": [
            "-c", f'while [ ! -e "{release}" ]; do sleep 0.05; done']})
        statuses = []
        for event in lf.follow(task.id):
            statuses.append(event.data["status"])
            if event.data["status"] == "running":
                release.touch()  # only now may it end: follow() was already following
        assert statuses == ["queued", "running", "succeeded"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_async_client_follow(api: procs.Proc, tmp_path: Path) -> None:
    from localflow.client import AsyncClient, ClientError

    async with AsyncClient(str(api.url), TOKEN) as lf:
        task = await lf.submit("shell", {"command": "true"})
        assert (await lf.wait(task.id, timeout=60)).status == "succeeded"
        async with asyncio.timeout(60):
            statuses = [e.data["status"] async for e in lf.follow(task.id)]
        assert statuses == ["queued", "running", "succeeded"]
        with pytest.raises(ClientError) as unknown:
            async for _ in lf.follow("01ZZZZZZZZZZZZZZZZZZZZZZZZ"):
                pass
        assert unknown.value.status == 404


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_client_follow_ends_when_the_log_no_longer_holds_the_tasks_end(
    api: procs.Proc, db: str,
) -> None:
    """The task's events pruned (by the store's own pruning, as the worker does after the
    events window): follow() does not wait for ever but, once the stream has read the log up
    to now (the server's heartbeat), reads the task and ends with a "pruned" event."""
    from localflow.client import AsyncClient
    from shared.store.sqlite import SQLiteStore

    async with AsyncClient(str(api.url), TOKEN) as lf:
        task = await lf.submit("shell", {"command": "true"})
        assert (await lf.wait(task.id, timeout=60)).status == "succeeded"
        store = await SQLiteStore.open(db)
        try:
            assert await store.prune_events(time.time() + 60) >= 3
        finally:
            await store.close()
        async with asyncio.timeout(60):
            seen = [e async for e in lf.follow(task.id)]
        assert [e.event for e in seen] == ["pruned"]
        assert seen[0].data["id"] == task.id and seen[0].data["status"] == "succeeded"
        assert seen[0].data["attempts"] == 1


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_filtered_stream_gets_heartbeats_while_other_tasks_change(api: procs.Proc) -> None:
    """Other tasks' events wake every stream; one filtered to a quiet task still gets its
    heartbeat every 15 s (proxies, and the client's read timeout, would drop it else)."""
    url = str(api.url)
    stream = Stream(url, params={"task": "01ZZZZZZZZZZZZZZZZZZZZZZZZ"})
    try:
        deadline = time.monotonic() + 40
        while "heartbeat" not in stream.comments and time.monotonic() < deadline:
            # A task's three events, paced by its run (the next once it has ended).
            task_id = _submit(url, "true")
            httpx.get(f"{url}/api/tasks/{task_id}", params={"wait": 60}, headers=AUTH)
        assert "heartbeat" in stream.comments
        assert stream.events == []
    finally:
        stream.close()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_sigterm_ends_open_streams_at_once(api: procs.Proc) -> None:
    import signal

    stream = Stream(str(api.url))  # returns once the answer's head arrived: it is open
    began = time.monotonic()
    api.signal(signal.SIGTERM)
    assert api.popen.wait(timeout=30) == 0
    # Well inside uvicorn's 10 s graceful limit: the open stream did not hold it up.
    assert time.monotonic() - began < 8
    stream.close()
