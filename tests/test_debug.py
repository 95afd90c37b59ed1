"""Debug mode (--debug): /debug/... profiles the live process, dumps its tasks and threads, and
shows top allocations; without debug mode none of it exists."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests import procs

TOKEN = "debug-test-token-0123456789"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def debug_server(tmp_path_factory) -> Iterator[procs.Proc]:
    db = tmp_path_factory.mktemp("debug") / "lf.db"
    proc = procs.start("serve", db, "--debug", env={"LOCALFLOW_API_TOKEN": TOKEN})
    yield proc
    proc.stop()


@pytest.fixture
def debug(debug_server: procs.Proc) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=debug_server.url, headers=headers, timeout=30) as c:
        yield c


def test_without_debug_mode_the_routes_do_not_exist(client: httpx.Client):
    for path in ("/debug/", "/debug/pprof/", "/debug/profile?seconds=1", "/debug/tasks",
                 "/debug/memory"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/problem+json")
    assert "/debug" not in client.get("/schema/openapi.json").text


def test_debug_routes_need_the_token(debug_server: procs.Proc):
    for path in ("/debug/", "/debug/pprof/", "/debug/tasks", "/debug/memory",
                 "/debug/profile?seconds=0.1"):
        assert httpx.get(debug_server.url + path).status_code == 401, path


def test_index_links_every_tool(debug: httpx.Client):
    r = debug.get("/debug/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for link in ("/debug/profile", "/debug/tasks", "/debug/memory"):
        assert link in r.text


def test_pprof_index_is_where_the_seed_readme_says(debug: httpx.Client):
    # The seed's instructions: run with --debug, then visit /debug/pprof/.
    for path in ("/debug/pprof/", "/debug/pprof"):
        r = debug.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        for link in ("/debug/profile", "/debug/tasks", "/debug/memory"):
            assert link in r.text


def test_tasks_dump_shows_asyncio_tasks_and_threads_with_stacks(debug: httpx.Client):
    r = debug.get("/debug/tasks")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "asyncio tasks" in text and "threads" in text
    assert "worker/pool.py" in text and "in run" in text  # the worker loop, waiting
    assert "dump_tasks_and_threads" in text  # the request itself, caught in the act
    assert "--- thread MainThread" in text
    assert "aiosqlite" in text or "Thread-" in text  # the database connection threads


def test_memory_shows_top_allocations(debug: httpx.Client):
    r = debug.get("/debug/memory", params={"limit": 5})
    assert r.status_code == 200
    head, _, body = r.text.partition("\n\n")
    assert head.startswith("traced memory:") and "top 5 of" in head
    lines = body.strip().splitlines()
    assert len(lines) == 5 and all(" KiB " in line for line in lines)
    by_trace = debug.get("/debug/memory", params={"limit": 2, "group_by": "traceback"})
    assert by_trace.status_code == 200 and 'File "' in by_trace.text
    assert debug.get("/debug/memory", params={"limit": 0}).status_code == 400
    assert debug.get("/debug/memory", params={"group_by": "nope"}).status_code == 400


def test_profile_as_html_and_speedscope(debug: httpx.Client):
    html = debug.get("/debug/profile", params={"seconds": 0.3})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "pyinstrument" in html.text

    # Work for the profile to see: a task submitted while it samples.
    done = threading.Event()
    submitted: list[int] = []

    def submit_some() -> None:
        while not done.is_set():
            r = debug.post("/api/tasks", json={"type": "shell", "payload": {"command": "true"}})
            submitted.append(r.status_code)

    submitter = threading.Thread(target=submit_some)
    submitter.start()
    try:
        # Submitting before the profile starts, so the loop has work throughout its window.
        deadline = time.monotonic() + 30
        while not submitted and time.monotonic() < deadline:
            time.sleep(0.01)
        r = debug.get("/debug/profile", params={"seconds": 1, "format": "speedscope"})
    finally:
        done.set()
        submitter.join()
    assert r.status_code == 200
    assert submitted and set(submitted) == {201}, submitted
    assert "attachment" in r.headers["content-disposition"]
    profile = json.loads(r.text)
    assert profile["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    files = {frame.get("file") or "" for frame in profile["shared"]["frames"]}  # None: no file
    # It sampled the whole event loop (the API and the worker at work), not just the
    # request that asked for it.
    ours = ("api/tasks.py", "shared/queue.py", "worker/pool.py", "worker/handlers/shell.py")
    assert any(f.endswith(ours) for f in files), sorted(files)


def test_profile_seconds_are_bounded(debug: httpx.Client):
    for seconds in ("0", "61", "-1", "soon"):
        r = debug.get("/debug/profile", params={"seconds": seconds})
        assert r.status_code == 400, seconds
        assert "seconds" in r.json()["detail"]
    assert debug.get("/debug/profile", params={"format": "pprof"}).status_code == 400


def test_one_profile_at_a_time(debug: httpx.Client, debug_server: procs.Proc):
    results: list[int] = []
    first = threading.Thread(
        # Long enough that a busy machine cannot end it before the second request is in.
        target=lambda: results.append(debug.get("/debug/profile?seconds=10").status_code)
    )
    first.start()
    try:
        # The tasks dump shows when the first profile is under way.
        deadline = time.monotonic() + 60
        while "in profile" not in debug.get("/debug/tasks").text:
            assert time.monotonic() < deadline, "the first profile never started"
            time.sleep(0.02)
        second = debug.get("/debug/profile?seconds=0.1")
        assert second.status_code == 409
        assert "already" in second.json()["detail"]
    finally:
        first.join()
    assert results == [200]
