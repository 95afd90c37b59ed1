"""What every handler shares: its context and the way it reports failure."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.policy import Policy
from worker.handlers.output import HeadTail
from worker.task_identity import TaskUser

# Shows a running program's output buffers (stdout, stderr) to whoever wants its live tail:
# the worker's LiveOutput (worker/live_output.py) reads them once a second while it runs.
WatchOutput = Callable[[HeadTail, HeadTail], None]


class TaskFailed(Exception):
    """A failed attempt. `result` (exit code, output, status...) is kept for the person
    reading why it failed. `permanent`: retrying cannot help (the policy refuses the task, the
    program does not exist), so the task fails now instead of spending its other attempts."""

    outcome = "failed"  # what the attempt is recorded as (docs/state_machine.md)

    def __init__(
        self, message: str, result: dict[str, Any] | None = None, *, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.result = result
        self.permanent = permanent


class TaskTimedOut(TaskFailed):
    """The attempt ran out of its time and was stopped; retried like any failed attempt, but
    recorded as `timeout` so a person (and the metrics) can tell it from a program's failure."""

    outcome = "timeout"


@dataclass(frozen=True)
class HandlerContext:
    task_id: str
    attempt: int
    timeout: float  # seconds this attempt may take in all
    output_limit: int  # bytes kept of each output stream or response body
    policy: Policy | None = None  # what the task may do; None: the default Settings' policy
    run_as: TaskUser | None = None  # task programs run as this user; None: as the worker
    watch_output: WatchOutput | None = None  # None: nobody follows the output live


def policy_of(ctx: HandlerContext) -> Policy:
    return ctx.policy if ctx.policy is not None else _default_policy()


@functools.cache
def _default_policy() -> Policy:
    from shared.settings import Settings

    return Policy.from_settings(Settings())
