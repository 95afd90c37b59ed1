"""What a shell task's processes get and what becomes of them, seen from outside a real
`localflow serve` (uvloop, as in production): only stdin/stdout/stderr, bounded memory for any
amount of output, and no survivors when the worker is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[procs.Proc, httpx.Client]]:
    proc = procs.start("serve", tmp_path / "lf.db")
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            yield proc, client
    finally:
        proc.stop()


def submit(client: httpx.Client, command: str, *args: str, **fields: object) -> str:
    body = {"type": "shell", "payload": {"command": command, "args": list(args)}, **fields}
    r = client.post("/api/tasks", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for whoever adopted it to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.add(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


def pids_in(path: Path, count: int) -> list[int]:
    procs.wait_until(lambda: path.exists() and len(path.read_text().split()) >= count, 60,
               f"{count} pids in {path}")
    return [int(p) for p in path.read_text().split()]


def vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory figure, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def test_sigkilled_worker_takes_its_task_processes_with_it(served, tmp_path):
    proc, client = served
    pid_file = tmp_path / "pids"
    # The task's own process, a child in its group, and a grandchild that left the group with
    # setsid: none may outlive the worker, or the rescued retry runs beside them.
    script = (f"sleep 300 & echo $! >> {pid_file}; setsid sleep 300 & echo $! >> {pid_file}; "
              f"echo $$ >> {pid_file}; wait")
    task = submit(client, "sh", "-c", script, timeout=600)
    pids = pids_in(pid_file, 3)
    procs.wait_until(lambda: all(alive(p) for p in pids), 30, "the task's processes to start")
    helpers = children_of(proc.popen.pid)  # the task, and whatever watches over it
    assert pids[2] in helpers
    proc.popen.kill()
    proc.popen.wait()
    try:
        procs.wait_until(lambda: not any(alive(p) for p in pids + sorted(helpers)), 15,
                   "the task's processes to die with their worker")
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    procs.wait_until(lambda: '"logger": "localflow.task_guard"' in proc.log(), 15,
               "the guard to say what it did")
    line = next(x for x in proc.log().splitlines() if "localflow.task_guard" in x)
    assert json.loads(line)["killed"] == 3, line
    assert task


def test_task_program_gets_stdio_and_no_other_descriptor(served, tmp_path):
    _, client = served
    pid_file = tmp_path / "pid"
    task = submit(client, "sh", "-c", f"echo $$ > {pid_file}; exec sleep 60", timeout=120)
    pid = pids_in(pid_file, 1)[0]
    procs.wait_until(lambda: Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"), 30,
               "the task to exec sleep")
    links = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}")
             for fd in os.listdir(f"/proc/{pid}/fd")}
    assert client.post(f"/api/tasks/{task}/cancel").status_code == 200
    procs.wait_for_status(client, task, {"cancelled"})
    assert sorted(links) == [0, 1, 2], links
    assert links[0] == "/dev/null"


def test_background_process_with_its_output_redirected_does_not_hold_the_task(served, tmp_path):
    _, client = served
    pid_file = tmp_path / "pid"
    began = time.monotonic()
    task = submit(client, "sh", "-c", f"sleep 30 >/dev/null 2>&1 & echo $! > {pid_file}",
                  timeout=25, max_attempts=1)
    try:
        done = procs.wait_for_status(client, task, {"succeeded", "failed"}, timeout=60)
        took = time.monotonic() - began
    finally:
        os.kill(pids_in(pid_file, 1)[0], signal.SIGKILL)
    assert done["status"] == "succeeded", done
    assert took < 15, f"the task took {took:.1f}s: something still held its output open"


def test_runaway_output_keeps_the_worker_memory_bounded(served):
    proc, client = served
    warm = submit(client, "echo", "warm up")  # the handler's code paths are loaded and used
    procs.wait_for_status(client, warm, {"succeeded"})
    baseline = vm(proc.popen.pid, "VmHWM")
    task = submit(client, "sh", "-c", "echo BEGIN; head -c 400000000 /dev/zero; echo; echo END",
                  timeout=600)
    done = procs.wait_for_status(client, task, {"succeeded", "failed"}, timeout=300)
    grew = vm(proc.popen.pid, "VmHWM") - baseline
    assert done["status"] == "succeeded", done["last_error"]
    assert grew < 50 * 2**20, f"peak RSS grew by {grew / 2**20:.0f} MB for one task's output"
    stdout = done["result"]["stdout"]
    assert stdout.startswith("BEGIN\n\0") and stdout.endswith("\0\nEND\n")
    kept = 64 * 1024
    dropped = 400_000_000 + len("BEGIN\n\nEND\n") - kept
    assert f"[{dropped} bytes not kept]" in stdout
    assert len(stdout.encode()) < kept + 200


def test_a_stopped_worker_leaves_no_process_behind(tmp_path):
    proc = procs.start("serve", tmp_path / "lf.db")
    pid_file = tmp_path / "pid"
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            # Succeeds at once, leaving a process behind that no longer belongs to any task.
            task = submit(client, "sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pid_file}")
            procs.wait_for_status(client, task, {"succeeded"})
        left = pids_in(pid_file, 1)
        helpers = children_of(proc.popen.pid)
        assert helpers, "the orphan guard runs beside the worker"
    finally:
        assert proc.stop() == 0
    try:
        procs.wait_until(lambda: not any(alive(p) for p in left + sorted(helpers)), 15,
                   "the guard, and what the task left running, to go with the worker")
    finally:
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
