"""Bulk actions on tasks, run in the background so the page can show how far they got.

Cancelling 5,000 tasks is 5,000 small transactions (each task keeps its own rules: a running
one is asked to stop, a finished one is skipped with the reason): seconds of work. The request
that starts the action returns at once with a progress line; the page polls it until the action
is done, and the buttons stay disabled meanwhile. Jobs live in the process's memory, a bounded
handful, so nothing here outlives a restart (neither does the page asking about it).

The audit trail gets one entry per bulk action (action, count done, the selection's filter
and the first ids), written when the job ends, instead of one per task (docs/audit.md).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request

from shared import audit
from shared.queue import Queue, QueueError

ACTIONS = ("retry", "cancel", "delete")
VERBS = {"retry": "Retrying", "cancel": "Cancelling", "delete": "Deleting"}
JOBS_KEPT = 20
PROBLEMS_SHOWN = 5


@dataclass
class BulkJob:
    id: str
    action: str
    ids: list[str]
    back: str  # the list to return to when done
    cap: int  # the most one action takes on; a larger selection needs another run
    selection: dict[str, Any] = field(default_factory=dict)  # scope and filter, for the audit
    done_ids: list[str] = field(default_factory=list)
    done: int = 0
    tried: int = 0
    problems: list[str] = field(default_factory=list)
    finished: bool = False
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task | None = None

    @property
    def total(self) -> int:
        return len(self.ids)

    @property
    def verb(self) -> str:
        return VERBS[self.action]

    def notice(self) -> str:
        text = f"{self.action.title()}: {self.done} of {self.total} task(s) done."
        if self.total >= self.cap:
            text += f" (at most {self.cap} at a time: run it again for the rest)"
        if self.problems:
            shown = "; ".join(self.problems[:PROBLEMS_SHOWN])
            text += " Skipped: " + shown + ("…" if len(self.problems) > PROBLEMS_SHOWN else "")
        return text


def _jobs(request: Request) -> dict[str, BulkJob]:
    state = request.app.state
    if "dashboard_bulk_jobs" not in state:
        state["dashboard_bulk_jobs"] = {}
    return state["dashboard_bulk_jobs"]


def find(request: Request, job_id: str) -> BulkJob | None:
    return _jobs(request).get(job_id)


def start(
    request: Request, queue: Queue, action: str, ids: list[str], back: str, cap: int,
    selection: dict[str, Any] | None = None,
) -> BulkJob:
    """Begin the action on every id, each on its own; returns the job to poll."""
    jobs = _jobs(request)
    for old in [j for j in jobs.values() if j.finished][: max(0, len(jobs) - JOBS_KEPT + 1)]:
        del jobs[old.id]
    job = BulkJob(id=secrets.token_urlsafe(9), action=action, ids=ids, back=back, cap=cap,
                  selection=selection or {})
    # The task inherits this request's context: the audit entry names the dashboard session.
    job.task = asyncio.create_task(_run(job, _operation(queue, action), queue))
    jobs[job.id] = job
    return job


def _operation(queue: Queue, action: str) -> Callable[[str], Awaitable[object]]:
    return {"retry": queue.retry, "cancel": queue.cancel, "delete": queue.delete}[action]


async def _run(job: BulkJob, run: Callable[[str], Awaitable[object]], queue: Queue) -> None:
    try:
        with audit.summarised():
            for task_id in job.ids:
                try:
                    await run(task_id)
                    job.done += 1
                    job.done_ids.append(task_id)
                except QueueError as exc:
                    job.problems.append(str(exc))
                job.tried += 1
    finally:
        try:
            if job.done:
                await queue.store.record_audit([_summary(job, queue.clock.now())])
        finally:
            job.finished = True


def _summary(job: BulkJob, now: float) -> audit.AuditEntry:
    return audit.entry(
        f"task.{job.action}", "task", None, now, count=job.done,  # type: ignore[arg-type]
        details={"bulk": True, **job.selection, "selected": job.total,
                 "skipped": job.tried - job.done, "ids": job.done_ids[:audit.BULK_IDS_KEPT]},
    )
