"""The database on a full disk (issue 11, items 1 and 2), on a real small filesystem.

A tmpfs of a few MiB is mounted for each test (root only: mounting needs CAP_SYS_ADMIN), the
database lives there, and a ballast file fills every byte left. Then:

- the API refuses a submission with 507 and a detail a person can act on, writes nothing, and
  takes submissions again as soon as the ballast is gone (no restart);
- tasks that finish while the disk is full keep their outcome until the database takes writes
  again, and each ends `succeeded` after exactly one attempt: a finished command never runs
  twice.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e  # real processes


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write zeros until the filesystem refuses another byte; returns the ballast file."""
    ballast = directory / "ballast"
    chunk = b"\0" * 65536
    with open(ballast, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(chunk[:size])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return ballast


def _submit(client: httpx.Client, n: int, command: list[str]) -> httpx.Response:
    payload = {"command": command[0], "args": command[1:]}
    return client.post("/api/tasks", json={"type": "shell", "payload": payload,
                                           "idempotency_key": f"k-{n}"})


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_submit_on_full_disk_answers_507_and_recovers_when_space_is_freed(small_fs: Path):
    db = small_fs / "lf.db"
    proc = procs.start("api", db, log_dir=small_fs.parent)
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            assert _submit(client, 0, ["true"]).status_code == 201
            ballast = fill(small_fs)
            # The write-ahead log may still have room for a few small transactions; the
            # disk refuses the first one that needs a new page of it.
            accepted, refused = 1, None
            for n in range(1, 400):
                answer = _submit(client, n, ["echo", "x" * 2000])
                if answer.status_code != 201:
                    refused = answer
                    break
                accepted += 1
            assert refused is not None, "every submission was accepted on a full disk"
            assert refused.status_code == 507, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            body = refused.json()
            assert body["title"] == "Insufficient Storage"
            assert "full" in body["detail"] and str(db) in body["detail"]
            assert "nothing was written" in body["detail"]
            assert "Retry-After" in refused.headers

            ballast.unlink()
            # Carries on by itself: the same process takes writes again.
            again = _submit(client, 1000, ["true"])
            assert again.status_code == 201, again.text
            listed = client.get("/api/tasks", params={"limit": 200}).json()["items"]
            # Nothing of the refused submission was written.
            assert len(listed) == accepted + 1
        assert "Traceback" not in proc.log()
    finally:
        assert proc.stop() == 0


def test_tasks_finishing_on_a_full_disk_succeed_once_space_is_freed(small_fs: Path):
    db = small_fs / "lf.db"
    gate = small_fs.parent / "gate"  # outside the small filesystem: it must stay writable
    runs = small_fs.parent / "runs"
    runs.mkdir()
    proc = procs.start("serve", db, "--workers", "4", "--lease", "3s",
                       log_dir=small_fs.parent)
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            ids = []
            for n in range(4):
                # Each run leaves a file behind, so a second run of one task shows.
                script = (f"touch {runs}/{n}-$$; while [ ! -e {gate} ]; do sleep 0.05; done; "
                          f"echo done {n}")
                answer = _submit(client, n, ["sh", "-c", script])
                assert answer.status_code == 201, answer.text
                ids.append(answer.json()["id"])
            _wait(lambda: all(client.get(f"/api/tasks/{i}").json()["status"] == "running"
                              for i in ids), what="all four running")
            ballast = fill(small_fs)
            gate.touch()  # every task finishes now, while nothing can be written
            _wait(lambda: len(list(runs.iterdir())) >= 4, what="four runs")
            # Hold the disk full past two leases (3 s each): the outcomes wait, the leases
            # must stay ours meanwhile, or a rescue would run the commands again.
            _wait(lambda: _longest_outcome_wait(proc) >= 6.0, timeout=90,
                  what="the worker to hold its outcomes for two leases")
            ballast.unlink()
            for task_id in ids:
                task = procs.wait_for_status(client, task_id, {"succeeded", "failed",
                                                               "cancelled"})
                assert task["status"] == "succeeded", task
                assert task["attempts"] == 1, task
                attempts = client.get(f"/api/tasks/{task_id}/attempts").json()
                assert [a["outcome"] for a in attempts] == ["succeeded"], attempts
        assert len(list(runs.iterdir())) == 4, sorted(p.name for p in runs.iterdir())
        log = proc.log()
        assert "Task exception was never retrieved" not in log
        assert "Traceback" not in log
    finally:
        with contextlib.suppress(FileNotFoundError):
            (small_fs / "ballast").unlink()
        assert proc.stop() == 0


def _longest_outcome_wait(proc: procs.Proc) -> float:
    """The longest time the worker has reported holding an unwritten outcome (JSON log)."""
    longest = 0.0
    for line in proc.log().splitlines():
        if "outcome not written yet" in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                longest = max(longest, float(json.loads(line)["waited"]))
    return longest
