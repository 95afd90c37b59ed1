"""The `shell` handler: runs argv directly (never through a shell) in its own process group.

Metacharacters (`;`, `|`, `$(...)`, backticks) are plain bytes of an argument: there is no shell
to read them. The program is the absolute path the policy resolved (shared/policy.py), checked
against LOCALFLOW_SHELL_ALLOW again here, run in the fixed working directory with a clean
environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from shared.policy import PolicyError
from shared.schemas import ShellPayload
from worker import task_identity
from worker.handlers.base import HandlerContext, TaskFailed, clip, policy_of


async def run_shell(payload: ShellPayload, ctx: HandlerContext) -> dict[str, Any]:
    timeout = min(payload.timeout or ctx.timeout, ctx.timeout)
    policy = policy_of(ctx).shell
    try:
        program = policy.check(payload.command, payload.env)
    except PolicyError as exc:
        raise TaskFailed(f"refused by policy: {exc}", permanent=True) from None
    if program is None:
        raise TaskFailed(f"cannot start {payload.command!r}: no such program on PATH "
                         f"({policy.path}) or in {policy.workdir}", permanent=True)
    if not os.path.isdir(policy.workdir):  # noqa: ASYNC240 - one stat(), like the PATH lookup
        raise TaskFailed(f"the shell working directory {policy.workdir} does not exist "
                         "(LOCALFLOW_SHELL_WORKDIR)")
    # A clean environment: the worker's own secrets (the API token, say) are not passed on.
    env = {"PATH": policy.path, "LANG": "C.UTF-8", **payload.env}
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            *payload.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=policy.workdir,
            start_new_session=True,  # its own process group, so we can kill all it started
            preexec_fn=task_identity.preexec(ctx.run_as),  # as LOCALFLOW_TASK_USER, if set
        )
    except OSError as exc:
        raise TaskFailed(f"cannot start {payload.command!r}: {exc.strerror or exc}") from None
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        await _kill_group(proc)
        raise TaskFailed(
            f"timed out after {timeout:g}s; killed process group {proc.pid}",
            {"exit_code": None, "duration_ms": _ms(started)},
        ) from None
    except asyncio.CancelledError:
        await _kill_group(proc)  # cancelled by a person, or the worker is stopping
        raise
    result = {
        "exit_code": proc.returncode,
        "stdout": clip(stdout, ctx.output_limit),
        "stderr": clip(stderr, ctx.output_limit),
        "duration_ms": _ms(started),
    }
    if proc.returncode != 0:
        if proc.returncode < 0:
            reason = f"killed by signal {signal.Signals(-proc.returncode).name}"
        else:
            reason = f"exited with status {proc.returncode}"
        raise TaskFailed(f"{payload.command} {reason}", result)
    return result


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        # Reap the child; pipes close once every process of the group is dead.
        await asyncio.wait_for(proc.communicate(), 5)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
