"""The shapes of schedules as they cross a boundary: API bodies and the stored record.

Field-level checks (types, ranges, unknown fields) live here; checks that need more than one
field or the cron library (expression, timezone, payload for the task type) live in
shared/schedules.py, so the dashboard and the API get the same errors from one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared.cron import MAX_EXPR_LENGTH
from shared.schemas import DEFAULT_QUEUE, CallbackUrl, QueueName, Seconds, Status

Overlap = Literal["allow", "skip"]
Missed = Literal["skip", "run_once"]

Name = Annotated[str, Meta(min_length=1, max_length=200)]
CronExpr = Annotated[
    str,
    Meta(min_length=1, max_length=MAX_EXPR_LENGTH,
         description="5-field cron, e.g. '*/5 * * * *' or '0 9 * * MON-FRI'"),
]
TimezoneName = Annotated[
    str, Meta(min_length=1, max_length=64, description="IANA name, e.g. Europe/Berlin")
]
TaskType = Annotated[str, Meta(min_length=1, max_length=64, description="shell or http")]
Priority = Annotated[int, Meta(ge=-1000, le=1000, description="higher runs first")]
MaxAttempts = Annotated[int, Meta(ge=1, le=100)]


class ScheduleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /api/schedules. The seed's body (name, cron_expr, task_type, payload, enabled)
    plus optional fields; omitted ones take the defaults shown."""

    name: Name
    cron_expr: CronExpr
    task_type: TaskType
    payload: dict[str, Any]  # required: every task type needs one (shell: command; http: url)
    enabled: bool = True
    timezone: TimezoneName = "UTC"
    priority: Priority = 0
    max_attempts: MaxAttempts | None = None  # None: the server default when it fires
    timeout: Seconds | None = None  # None: the payload's timeout, else the server default
    # allow: fire even if the previous task of this schedule is still queued or running.
    # skip: skip that fire instead.
    overlap: Overlap = "allow"
    # After downtime: skip the fires that were missed, or run_once: one task for the latest.
    missed: Missed = "skip"
    queue: QueueName = DEFAULT_QUEUE  # the queue of the tasks it makes
    callback_url: CallbackUrl | None = None  # the callback_url of the tasks it makes


class ScheduleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT /api/schedules/{id}: any subset of the fields; those given replace the stored ones.

    `{"enabled": false}` pauses a schedule, `{"enabled": true}` resumes it. max_attempts and
    timeout may be set to null to go back to the defaults.
    """

    name: Name | UnsetType = UNSET
    cron_expr: CronExpr | UnsetType = UNSET
    task_type: TaskType | UnsetType = UNSET
    payload: dict[str, Any] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    timezone: TimezoneName | UnsetType = UNSET
    priority: Priority | UnsetType = UNSET
    max_attempts: MaxAttempts | UnsetType | None = UNSET
    timeout: Seconds | UnsetType | None = UNSET
    overlap: Overlap | UnsetType = UNSET
    missed: Missed | UnsetType = UNSET
    queue: QueueName | UnsetType = UNSET
    callback_url: CallbackUrl | UnsetType | None = UNSET  # null: no callback


class Schedule(msgspec.Struct, kw_only=True):
    id: str
    name: str
    cron_expr: str
    timezone: str
    task_type: str
    payload: Any
    enabled: bool
    priority: int
    max_attempts: int | None
    timeout: float | None
    overlap: Overlap
    missed: Missed
    next_fire_at: datetime | None  # None while paused
    last_fire_at: datetime | None  # the fire time of the newest task it created
    last_task_id: str | None
    last_task_status: Status | None  # None if never fired (or the task was purged)
    last_skip_at: datetime | None  # the newest fire time that created no task ...
    last_skip_reason: str | None  # ... and why ("overlap", "missed", "already fired")
    created_at: datetime
    updated_at: datetime
    queue: str = DEFAULT_QUEUE
    callback_url: str | None = None


class FireTimes(msgspec.Struct, kw_only=True):
    """GET /api/schedules/{id}/next: upcoming fire times, in the schedule's timezone."""

    schedule_id: str
    cron_expr: str
    timezone: str
    times: list[datetime]
