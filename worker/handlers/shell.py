"""The `shell` handler: runs argv directly (never through a shell) in its own process group.

Metacharacters (`;`, `|`, `$(...)`, backticks) are plain bytes of an argument: there is no shell
to read them. The program is the absolute path the policy resolved (shared/policy.py), checked
against LOCALFLOW_SHELL_ALLOW again here, run in the fixed working directory with a clean
environment, with stdin from /dev/null, stdout and stderr (kept bounded: head and tail) and no
other descriptor (worker/handlers/process.py). Its processes die with the worker
(worker/handlers/orphan_guard.py).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from shared.policy import PolicyError
from shared.schemas import ShellPayload
from worker import task_identity
from worker.handlers import orphan_guard
from worker.handlers.base import HandlerContext, TaskFailed, TaskTimedOut, policy_of
from worker.handlers.process import run_program


async def run_shell(payload: ShellPayload, ctx: HandlerContext) -> dict[str, Any]:
    timeout = min(payload.timeout or ctx.timeout, ctx.timeout)
    policy = policy_of(ctx).shell
    try:
        program = policy.check(payload.command, payload.env)
    except PolicyError as exc:
        raise TaskFailed(f"refused by policy: {exc}", permanent=True) from None
    if program is None:
        # The server's PATH is not told (it says what is installed where): only what to do.
        raise TaskFailed(f"cannot start {payload.command!r}: no such program on the worker's "
                         "PATH (give an absolute path, or install it on the worker)",
                         permanent=True)
    if not os.path.isdir(policy.workdir):  # noqa: ASYNC240 - one stat(), like the PATH lookup
        raise TaskFailed(f"the shell working directory {policy.workdir} does not exist "
                         "(LOCALFLOW_SHELL_WORKDIR)")
    started = time.monotonic()
    try:
        # A clean environment: the worker's own secrets (the API token, say) are not passed
        # on. The guard's marker comes last, so the task's own env cannot take it away; no
        # guard, no task (one that outlived its worker could run twice at once).
        env = {"PATH": policy.path, "LANG": "C.UTF-8", **payload.env, **orphan_guard.task_env()}
        done = await run_program(
            [program, *payload.args], env=env, cwd=policy.workdir, seconds=timeout,
            keep=ctx.output_limit,
            preexec=task_identity.preexec(ctx.run_as),  # as LOCALFLOW_TASK_USER, if set
            watch=ctx.watch_output,  # its tail, live (worker/live_output.py)
        )
    except OSError as exc:
        raise TaskFailed(f"cannot start {payload.command!r}: {exc.strerror or exc}") from None
    result = {
        "exit_code": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    if done.timed_out:
        raise TaskTimedOut(f"timed out after {timeout:g}s; killed process group {done.pid}",
                           {**result, "exit_code": None})
    if done.returncode != 0:
        if done.returncode is None:
            reason = "did not exit after it was killed"
        elif done.returncode < 0:
            reason = f"killed by signal {_signal_name(-done.returncode)}"
        else:
            reason = f"exited with status {done.returncode}"
        raise TaskFailed(f"{payload.command} {reason}", result)
    return result


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return str(number)
