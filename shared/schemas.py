"""The shapes that cross a boundary: API bodies, stored payloads, task records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import UNSET, Meta, UnsetType

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

Seconds = Annotated[float, Meta(gt=0, le=7 * 86400, description="seconds, > 0")]
ShortText = Annotated[str, Meta(min_length=1, max_length=4096)]


class TaskCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /api/tasks. Only `type` and `payload` are required."""

    type: Annotated[str, Meta(min_length=1, max_length=64, description="shell or http")]
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: Annotated[int, Meta(ge=-1000, le=1000, description="higher runs first")] = 0
    max_attempts: Annotated[int, Meta(ge=1, le=100)] | None = None
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=255)] | None = None
    run_at: datetime | None = None
    delay: Annotated[float, Meta(ge=0, le=366 * 86400, description="seconds")] | None = None
    timeout: Seconds | None = None

    def __post_init__(self) -> None:
        if self.run_at is not None and self.delay is not None:
            raise ValueError("give either run_at or delay, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("run_at needs a timezone, e.g. 2026-01-01T09:00:00Z")


class ShellPayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Runs `command` with `args` directly (no shell): metacharacters are plain text."""

    command: ShortText
    args: Annotated[list[Annotated[str, Meta(max_length=65536)]], Meta(max_length=1000)] = (
        msgspec.field(default_factory=list)
    )
    env: Annotated[dict[str, str], Meta(max_length=100)] = msgspec.field(default_factory=dict)
    timeout: Seconds | None = None

    def __post_init__(self) -> None:
        if "\x00" in self.command or any("\x00" in a for a in self.args):
            raise ValueError("command and args must not contain NUL bytes")
        for name in self.env:
            if not name or "=" in name or "\x00" in name:
                raise ValueError(f"invalid environment variable name {name!r}")


HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpPayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Calls `url`; a non-2xx answer is a failed attempt."""

    url: Annotated[str, Meta(min_length=1, max_length=8192)]
    method: HttpMethod = "GET"
    headers: Annotated[dict[str, str], Meta(max_length=100)] = msgspec.field(
        default_factory=dict
    )
    body: str | None = None
    json: Any | UnsetType = UNSET
    timeout: Seconds = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http:// or https:// URL with a host: {self.url!r}")
        if self.body is not None and self.json is not UNSET:
            raise ValueError("give either body or json, not both")


PAYLOAD_TYPES: dict[str, type[msgspec.Struct]] = {"shell": ShellPayload, "http": HttpPayload}


class PayloadError(ValueError):
    """A payload that does not fit its task type; the message names the field."""


def validate_payload(task_type: str, payload: Any) -> msgspec.Struct:
    schema = PAYLOAD_TYPES.get(task_type)
    if schema is None:
        known = ", ".join(sorted(PAYLOAD_TYPES))
        raise PayloadError(f"unknown task type {task_type!r}: expected one of {known}")
    if isinstance(payload, dict) and schema is HttpPayload and isinstance(
        payload.get("method"), str
    ):
        payload = {**payload, "method": payload["method"].upper()}
    try:
        return msgspec.convert(payload, schema)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"invalid {task_type} payload: {_at(exc, '$.payload')}") from None


def _at(exc: msgspec.ValidationError, prefix: str) -> str:
    # msgspec says "... - at `$.args[0]`"; name the field as the user wrote it.
    return str(exc).replace("`$", f"`{prefix}")


class Task(msgspec.Struct, kw_only=True):
    id: str
    type: str
    payload: Any
    status: Status
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    timeout: float
    idempotency_key: str | None
    result: Any | None
    last_error: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    schedule_id: str | None = None  # the schedule that made it (kept if that is deleted)


class Attempt(msgspec.Struct, kw_only=True):
    attempt: int
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None
    output: Any | None


class TaskPage(msgspec.Struct, kw_only=True):
    items: list[Task]
    next_cursor: str | None


MAX_BATCH = 1000


class TaskBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /api/tasks/batch: all are queued in one transaction, or none is."""

    tasks: Annotated[list[TaskCreate], Meta(min_length=1, max_length=MAX_BATCH)]


class TaskBatchResult(msgspec.Struct, kw_only=True):
    ids: list[str]  # in the order submitted
    tasks: list[Task]


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
