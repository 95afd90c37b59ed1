"""Named queues seen from outside real processes: one `localflow api` and several
`localflow worker` processes on one database file. A queue's concurrency limit holds across
all of them (each task records when its program started and ended), pausing stops the
queue's tasks being taken (also across a worker restart) and resuming starts them at once,
and `localflow worker --queues` takes only its queues."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e

# The task's program: append "start <t>" and, 0.4 s later, "end <t>" to its own file.
RECORD = (
    "import sys, time\n"
    "path = sys.argv[1]\n"
    "open(path, 'a').write(f'start {time.time()}\\n')\n"
    "time.sleep(0.4)\n"
    "open(path, 'a').write(f'end {time.time()}\\n')\n"
)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[httpx.Client]:
    proc = procs.start("api", tmp_path / "lf.db")
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            yield client
    finally:
        proc.stop()


def start_workers(db: Path, n: int, *args: str) -> list[procs.Proc]:
    return [procs.start("worker", db, "--workers", "4", "--metrics-addr", "off",
                        "--poll", "0.25s", *args) for _ in range(n)]


def submit(client: httpx.Client, queue: str, *args: str) -> str:
    r = client.post("/api/tasks", json={
        "type": "shell", "queue": queue,
        "payload": {"command": sys.executable, "args": list(args)},
    })
    assert r.status_code == 201, r.text
    return r.json()["id"]


def status(client: httpx.Client, task_id: str) -> str:
    return client.get(f"/api/tasks/{task_id}").json()["status"]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.parametrize("limit", [1, 3])
def test_limit_holds_across_worker_processes(api: httpx.Client, tmp_path: Path, limit: int):
    db = tmp_path / "lf.db"
    r = api.put("/api/queues/heavy", json={"concurrency": limit})
    assert r.status_code == 200 and r.json()["concurrency"] == limit, r.text
    workers = start_workers(db, 3)
    try:
        files = [tmp_path / f"task-{i}.txt" for i in range(4 * limit + 2)]
        ids = [submit(api, "heavy", "-c", RECORD, str(f)) for f in files]
        # An unlimited queue alongside is not held back by the limited one.
        free = [submit(api, "default", "-c", RECORD, str(tmp_path / f"free-{i}.txt"))
                for i in range(4)]
        for task_id in ids + free:
            procs.wait_until(lambda t=task_id: status(api, t) == "succeeded", 120,
                             f"{task_id} done")
        intervals = []
        for f in files:
            lines = dict(line.split() for line in f.read_text().splitlines())
            intervals.append((float(lines["start"]), float(lines["end"])))
        assert max_overlap(intervals) == limit, intervals
        info = api.get("/api/queues/heavy").json()
        assert info["counts"]["succeeded"] == len(files) and info["concurrency"] == limit
    finally:
        for w in workers:
            w.stop()


def test_pause_survives_restart_and_resume_starts_at_once(api: httpx.Client, tmp_path: Path):
    db = tmp_path / "lf.db"
    assert api.put("/api/queues/mail", json={"paused": True}).json()["paused"] is True
    workers = start_workers(db, 2)
    try:
        held = submit(api, "mail", "-c", "pass")
        # A task submitted after it, in another queue, runs: the workers were taking work and
        # passed the paused queue's task by.
        marker = submit(api, "default", "-c", "pass")
        procs.wait_until(lambda: status(api, marker) == "succeeded", 60, "the marker task")
        assert status(api, held) == "queued"
        for w in workers:
            w.stop()
        workers = start_workers(db, 1)  # a restarted worker still honours the pause
        marker = submit(api, "default", "-c", "pass")
        procs.wait_until(lambda: status(api, marker) == "succeeded", 60, "the second marker")
        assert status(api, held) == "queued"
        listed = {q["name"]: q for q in api.get("/api/queues").json()}
        assert listed["mail"]["paused"] is True and listed["mail"]["counts"]["queued"] == 1

        resumed_at = time.monotonic()
        assert api.put("/api/queues/mail", json={"paused": False}).json()["paused"] is False
        procs.wait_until(lambda: status(api, held) == "succeeded", 30, "the resumed task")
        # Within the usual pickup time (the poll interval; the resume also wakes workers).
        assert time.monotonic() - resumed_at < 5.0
    finally:
        for w in workers:
            w.stop()


def test_worker_takes_only_its_queues(api: httpx.Client, tmp_path: Path):
    db = tmp_path / "lf.db"
    workers = start_workers(db, 1, "--queues", "a,b")
    try:
        other = submit(api, "c", "-c", "pass")
        mine = [submit(api, q, "-c", "pass") for q in ("a", "b")]
        for task_id in mine:
            procs.wait_until(lambda t=task_id: status(api, t) == "succeeded", 60, f"{task_id}")
        assert status(api, other) == "queued"
        assert [t["id"] for t in api.get("/api/tasks", params={"queue": "c"}).json()["items"]] \
            == [other]
    finally:
        for w in workers:
            w.stop()
