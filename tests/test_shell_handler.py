"""The shell handler on its own, under both event loops it may run on: asyncio's default one and
uvloop (what `localflow` runs). Real programs, no database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from shared.policy import Policy
from shared.schemas import ShellPayload
from shared.settings import Settings
from worker.handlers import orphan_guard
from worker.handlers.base import HandlerContext, TaskFailed
from worker.handlers.output import HeadTail
from worker.handlers.shell import run_shell

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    def on_loop(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(coro)

    return on_loop


def ctx(timeout: float = 30, output_limit: int = 64 * 1024) -> HandlerContext:
    return HandlerContext("t1", 1, timeout, output_limit, Policy.from_settings(Settings()))


def sh(script: str) -> ShellPayload:
    return ShellPayload(command="sh", args=["-c", script])


def test_the_program_gets_stdin_stdout_stderr_and_nothing_else(run):
    # $$ is the shell itself (ls is its child): every descriptor the task program was given.
    result = run(run_shell(sh("ls /proc/$$/fd; readlink /proc/$$/fd/0"), ctx()))
    assert result["stdout"].split() == ["0", "1", "2", "/dev/null"]


def test_a_background_process_with_its_output_elsewhere_does_not_hold_the_task(run, tmp_path):
    pid_file = tmp_path / "pid"
    began = time.monotonic()
    try:
        result = run(run_shell(sh(f"sleep 30 >/dev/null 2>&1 & echo $! > {pid_file}"),
                               ctx(timeout=20)))
    finally:
        _kill(pid_file)
    assert result["exit_code"] == 0
    assert time.monotonic() - began < 10


def test_output_keeps_its_head_and_tail_and_says_what_was_dropped(run):
    script = "echo first; i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; echo last"
    result = run(run_shell(sh(script), ctx(output_limit=1000)))
    out = result["stdout"]
    total = len("first\n") + sum(len(f"line {i}\n") for i in range(3000)) + len("last\n")
    assert out.startswith("first\nline 0\n") and out.endswith("line 2999\nlast\n")
    assert f"[{total - 1000} bytes not kept]" in out
    assert len(out) < 1100


def test_output_within_the_limit_is_kept_whole(run):
    script = "printf 'a%.0s' $(seq 1000); printf 'b' >&2"
    result = run(run_shell(sh(script), ctx(output_limit=1000)))
    assert result["stdout"] == "a" * 1000 and result["stderr"] == "b"


def test_timeout_kills_the_group_and_keeps_what_was_written(run, tmp_path):
    pid_file = tmp_path / "pid"
    began = time.monotonic()
    with pytest.raises(TaskFailed) as failed:
        run(run_shell(sh(f"sleep 60 & echo $! > {pid_file}; echo started; wait"), ctx(timeout=0.5)))
    assert time.monotonic() - began < 10
    assert "timed out after 0.5s" in str(failed.value)
    assert failed.value.result["stdout"] == "started\n"
    # SIGKILL to the group is sent before the answer; the kernel may finish the background
    # sleep's exit a moment later on a busy machine.
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid)


def test_a_program_killed_by_a_signal_is_a_failure_that_says_so(run):
    with pytest.raises(TaskFailed) as failed:
        run(run_shell(sh("kill -TERM $$"), ctx()))
    assert str(failed.value) == "sh killed by signal SIGTERM"
    assert failed.value.result["exit_code"] == -signal.SIGTERM


def test_a_missing_program_fails_permanently(run, tmp_path):
    with pytest.raises(TaskFailed) as failed:
        run(run_shell(ShellPayload(command=str(tmp_path / "nothing-here")), ctx()))
    assert failed.value.permanent


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill(pid_file: Path) -> None:
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_the_exit_is_seen_on_a_kernel_without_pidfd(run, monkeypatch):
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")  # what a kernel before 5.3 answers

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    assert run(run_shell(sh("echo hi; exit 0"), ctx()))["stdout"] == "hi\n"
    with pytest.raises(TaskFailed, match="timed out"):
        run(run_shell(sh("sleep 30"), ctx(timeout=0.3)))


def test_a_dead_orphan_guard_is_started_again_for_the_next_task(run):
    run(run_shell(sh("true"), ctx()))
    first = orphan_guard._guard._proc
    first.kill()
    first.wait()
    result = run(run_shell(sh('echo "$LOCALFLOW_TASK_GUARD"'), ctx()))
    second = orphan_guard._guard._proc
    assert second.pid != first.pid and second.poll() is None
    assert result["stdout"].strip() == orphan_guard._guard.marker


@pytest.mark.parametrize("limit", [0, 1, 7, 64])
def test_head_tail_keeps_the_same_bytes_however_the_output_is_chunked(limit):
    data = bytes(range(256)) * 3
    for size in (1, 5, 64, len(data)):
        kept = HeadTail(limit)
        for i in range(0, len(data), size):
            kept.add(data[i:i + size])
        head, tail = limit - limit // 2, limit // 2
        expect = data[:head] + data[len(data) - tail:] if tail else data[:head]
        assert kept.total == len(data) and kept.dropped == len(data) - limit
        assert bytes(kept._head + kept._tail) == expect, (limit, size)
    whole = HeadTail(len(data))
    whole.add(data)
    assert whole.dropped == 0 and "not kept" not in whole.text()
