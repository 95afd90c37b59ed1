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
        self._changed = threading.Condition()  # notified after each event, comment and the end
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
                        self._notify()
                    elif line == "":
                        if "data" in event:
                            event["data"] = json.loads(event["data"])
                            self.events.append(event)
                            self._notify()
                        event = {}
                    else:
                        field, _, value = line.partition(":")
                        event[field] = value.lstrip(" ")
        except (httpx.HTTPError, RuntimeError):
            if not self._closed:
                raise
        finally:
            self._ready.set()
            self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_until(self, check, timeout: float, what) -> None:
        """Wake at each event or comment the stream reads until check() holds; fail with
        what() after timeout seconds."""
        with self._changed:
            if not self._changed.wait_for(check, timeout):
                raise AssertionError(what())

    def wait_for(self, predicate, timeout: float = 90.0) -> list[dict]:
        self.wait_until(lambda: predicate(self.events), timeout,
                        lambda: f"never happened; events so far: {self.events}")
        return self.events

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
        stream.wait_until(lambda: "heartbeat" in stream.comments, 40,
                          lambda: f"no heartbeat in 40 s: {stream.comments}")
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
async def test_client_events_since_a_time_start_there_and_refuse_a_second_start(
    api: procs.Proc,
) -> None:
    from datetime import UTC, datetime

    from localflow.client import AsyncClient, Client

    with Client(str(api.url), TOKEN) as lf:
        before = lf.submit("shell", {"command": "true"})
        assert lf.wait(before.id, timeout=60).status == "succeeded"
        # Every event of `before` is stamped by now (this machine's one clock); every one of
        # `after` later.
        between = datetime.now(UTC)
        after = lf.submit("shell", {"command": "true"})
        assert lf.wait(after.id, timeout=60).status == "succeeded"
        seen = []
        for event in lf.events(since=between, statuses=["succeeded"]):
            seen.append(event.data["id"])
            break
        assert seen == [after.id]
        with pytest.raises(ValueError, match="not both"):
            next(lf.events(since=between, last_event_id="0-0"))
        with pytest.raises(ValueError, match="timezone"):
            next(lf.events(since=datetime.now()))
    async with AsyncClient(str(api.url), TOKEN) as alf:
        stream = alf.events(since=between.timestamp(), tasks=[before.id, after.id])
        statuses = []
        async with asyncio.timeout(60):
            async for event in stream:
                statuses.append((event.data["id"], event.data["status"]))
                if event.data["status"] == "succeeded":
                    break
        await stream.aclose()
        assert statuses == [(after.id, "queued"), (after.id, "running"),
                            (after.id, "succeeded")]


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


# -- starting from a time (?since=), the caught-up heartbeat, follow() from a task's creation --

CAUGHT_UP_WITHIN = 10.0  # well under the 15 s idle heartbeat: the caught-up one is at once


async def _write_events_at(db: str, at: float, count: int, tag: str) -> list[str]:
    """`count` tasks written (as another process would) by a clock set to `at`: their events
    are stamped then, as if written long ago. Delayed by a day, so the worker leaves them be
    and they add no later events."""
    from shared.clock import FakeClock
    from shared.queue import Queue
    from shared.schemas import TaskCreate
    from shared.settings import Settings
    from shared.store import open_store

    settings = Settings(db=db)
    store = await open_store(settings, migrate_first=False)
    try:
        queue = Queue(store, FakeClock(at), settings)
        ids: list[str] = []
        while len(ids) < count:
            batch = [TaskCreate(type="shell", payload={"command": "true", "args": [tag]},
                                delay=86400) for _ in range(min(500, count - len(ids)))]
            ids += [task.id for task, _ in await queue.enqueue_many(batch)]
        return ids
    finally:
        await store.close()


async def _prune_events(db: str, before: float) -> int:
    from shared.settings import Settings
    from shared.store import open_store

    store = await open_store(Settings(db=db), migrate_first=False)
    try:
        return await store.prune_events(before)
    finally:
        await store.close()


def _until_caught_up(stream: Stream, within: float = CAUGHT_UP_WITHIN) -> list[dict]:
    """The events the stream sent before its first heartbeat, which must come within
    `within` seconds of now (the stream was just opened)."""
    stream.wait_until(lambda: "heartbeat" in stream.comments, within,
                      lambda: f"no heartbeat within {within} s; events so far: "
                              f"{len(stream.events)}")
    return list(stream.events)


def _rfc3339(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def test_since_starts_with_the_first_event_at_or_after_a_time_and_says_when_caught_up(
    api: procs.Proc, db: str,
) -> None:
    """Events five minutes apart: a stream `since` a time between them gets only the later
    ones (Unix seconds or RFC 3339), then at once the heartbeat that says its replay is done;
    so does a stream resuming from a cursor."""
    now = time.time()
    old = asyncio.run(_write_events_at(db, now - 600, 3, "old"))
    recent = asyncio.run(_write_events_at(db, now - 300, 2, "recent"))
    url = str(api.url)
    for params, expected in [
        ({"since": f"{now - 400:.3f}"}, recent),
        ({"since": _rfc3339(now - 400)}, recent),
        ({"since": repr(now - 300)}, recent),  # exactly at their stamp: included
        ({"since": f"{now - 700:.0f}"}, old + recent),
        ({"since": f"{now + 60:.0f}"}, []),  # later than every event: from now on
    ]:
        stream = Stream(url, params=params)
        try:
            events = _until_caught_up(stream)
            assert [e["event"] for e in events] == ["task"] * len(expected), params
            assert [e["data"]["id"] for e in events] == expected, params
        finally:
            stream.close()
    # From a cursor (the log's start): the whole log, then the caught-up heartbeat at once.
    stream = Stream(url, headers={"Last-Event-ID": "0-0"})
    try:
        assert [e["data"]["id"] for e in _until_caught_up(stream)] == old + recent
        # And it goes on live after it.
        task_id = _submit(url, "true")
        assert stream.wait_for(lambda ev: "succeeded" in _statuses(ev, task_id))
    finally:
        stream.close()


def test_since_before_the_kept_window_starts_at_the_oldest_kept_after_event_lost(
    api: procs.Proc, db: str,
) -> None:
    now = time.time()
    asyncio.run(_write_events_at(db, now - 7200, 2, "pruned"))  # outside the hour's window
    kept = asyncio.run(_write_events_at(db, now - 1800, 1, "kept"))
    asyncio.run(_prune_events(db, now - 3600))  # what the worker does after the window
    url = str(api.url)
    stream = Stream(url, params={"since": f"{now - 7300:.0f}"})
    try:
        events = _until_caught_up(stream)
        assert [e["event"] for e in events] == ["lost", "task"]
        assert events[0]["id"] and "pruned" in events[0]["data"]["detail"]
        assert events[1]["data"]["id"] == kept[0]
    finally:
        stream.close()
    # Inside the window nothing can have been pruned, though older than every kept event.
    stream = Stream(url, params={"since": f"{now - 2000:.0f}"})
    try:
        assert [(e["event"], e["data"]["id"]) for e in _until_caught_up(stream)] == [
            ("task", kept[0])]
    finally:
        stream.close()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_since_refusals(api: procs.Proc) -> None:
    url = str(api.url)
    both = httpx.get(f"{url}/api/events", params={"since": "1767258000"},
                     headers={**AUTH, "Last-Event-ID": "0-5"})
    assert both.status_code == 400, both.text
    assert both.json()["errors"][0]["field"] == "since" and "Last-Event-ID" in both.text
    for bad in ["yesterday", "2026-01-01T09:00:00", "1e9", "-5", "0001-01-01T00:00:00+05:00",
                "", "9" * 65]:
        answer = httpx.get(f"{url}/api/events", params={"since": bad}, headers=AUTH)
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "since" in answer.json()["detail"], (bad, answer.text)
    spec = httpx.get(f"{url}/schema/openapi.json").json()
    operation = spec["paths"]["/api/events"]["get"]
    assert "since" in {p["name"] for p in operation["parameters"]}
    assert "since" in operation["description"] and "400" in operation["responses"]


def test_client_follow_reads_from_the_tasks_creation_not_the_whole_log(
    api: procs.Proc, db: str,
) -> None:
    """A task created after many others' events, ten minutes older: follow() asks the
    server to start a few seconds before the task's creation (not "0-0"), and a stream
    started there holds none of the older events; follow still tells the whole story."""
    from localflow.client import Client

    others = set(asyncio.run(_write_events_at(db, time.time() - 600, 1200, "busy")))
    requests: list[httpx.Request] = []
    with Client(str(api.url), TOKEN) as lf:
        lf._http.event_hooks["request"].append(requests.append)
        task = lf.submit("shell", {"command": "true"})
        seen = [(e.event, e.data["id"], e.data["status"]) for e in lf.follow(task.id)]
        assert seen == [("task", task.id, "queued"), ("task", task.id, "running"),
                        ("task", task.id, "succeeded")]
    (opened,) = [r for r in requests if r.url.path == "/api/events"]
    assert "last-event-id" not in opened.headers
    since = float(opened.url.params["since"])
    created = task.created_at.timestamp()
    assert created - 10 < since < created
    # What the server reads from there: none of the 1,200 older tasks' events.
    stream = Stream(str(api.url), params={"since": opened.url.params["since"]})
    try:
        events = _until_caught_up(stream)
        assert not others & {e["data"]["id"] for e in events}
        assert _statuses(events, task.id) == ["queued", "running", "succeeded"]
    finally:
        stream.close()


async def test_client_follow_of_a_pruned_task_ends_at_once(api: procs.Proc, db: str) -> None:
    """Both clients: a finished task whose events were pruned ends with "pruned" as soon as
    the stream has read the log (its caught-up heartbeat), not after the 15 s idle one."""
    from localflow.client import AsyncClient, Client

    async with AsyncClient(str(api.url), TOKEN) as lf:
        task = await lf.submit("shell", {"command": "true"})
        assert (await lf.wait(task.id, timeout=60)).status == "succeeded"
        assert await _prune_events(db, time.time() + 60) >= 3
        began = time.monotonic()
        async with asyncio.timeout(60):
            seen = [e async for e in lf.follow(task.id)]
        assert time.monotonic() - began < CAUGHT_UP_WITHIN
        assert [(e.event, e.data["id"], e.data["status"], e.data["attempts"])
                for e in seen] == [("pruned", task.id, "succeeded", 1)]

    def sync_follow() -> tuple[float, list]:
        with Client(str(api.url), TOKEN) as client:
            start = time.monotonic()
            events = [(e.event, e.data["id"]) for e in client.follow(task.id)]
            return time.monotonic() - start, events

    took, events = await asyncio.to_thread(sync_follow)
    assert events == [("pruned", task.id)] and took < CAUGHT_UP_WITHIN


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_replay_held_back_by_an_open_transaction_is_not_called_done(
    api: procs.Proc, db: str,
) -> None:
    """PostgreSQL hands out events only below the oldest open transaction. A replay whose
    last events are held back by one gets no "heartbeat" (which follow() takes for "the log
    is read"), only a keep-alive after 15 s; the heartbeat comes once they are read."""
    import psycopg

    url = str(api.url)
    early = _submit(url, "true", delay=3600)
    with psycopg.connect(db) as slow:
        slow.execute("UPDATE tasks SET status = 'cancelled' WHERE id = %s", (early,))
        late = _submit(url, "true", delay=3600)  # committed, above the open transaction
        stream = Stream(url, params=[("task", late)], headers={"Last-Event-ID": "0-0"})
        try:
            stream.wait_until(lambda: "replaying" in stream.comments, 40,
                              lambda: f"no 'replaying' in 40 s: {stream.comments}")
            assert "heartbeat" not in stream.comments and stream.events == []
            slow.commit()
            events = _until_caught_up(stream, within=30)  # the fallback re-read at most
            assert _statuses(events, late) == ["queued"]
        finally:
            stream.close()
