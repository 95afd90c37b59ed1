"""The shapes that cross a boundary: API bodies, stored payloads, task records."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared.json_input import describe

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# How a person asks about queued tasks: due now (ready), waiting for a later run_at with no
# attempt yet (scheduled), or in the backoff after a failed attempt (retrying). Derived from
# status, run_at and attempts; never stored (the stored states stay the five above).
QueuedView = Literal["ready", "scheduled", "retrying"]
QUEUED_VIEWS: tuple[QueuedView, ...] = ("ready", "scheduled", "retrying")

Seconds = Annotated[float, Meta(gt=0, le=7 * 86400, description="seconds, > 0")]
ShortText = Annotated[str, Meta(min_length=1, max_length=4096)]

# How far ahead a task may be put: `delay` at most, and `run_at` at most this far from now.
MAX_DELAY = 366 * 86400
# How far back `run_at` may lie (a past run_at means "due now"). A year-1 run_at would sort
# ahead of every task of its priority for ever; a month covers a client replaying its backlog.
MAX_RUN_AT_PAST = 30 * 86400

# Named queues (docs/queues.md): letters, digits, '-', '_', '.'; up to 64 characters.
DEFAULT_QUEUE = "default"
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
QueueName = Annotated[str, Meta(
    pattern=QUEUE_NAME_PATTERN, min_length=1, max_length=64,
    description="queue name: letters, digits, '-', '_', '.'; up to 64 characters",
)]
# Webhooks (docs/webhooks.md): where LocalFlow POSTs a task once it is finished. The host
# policy of http tasks applies (shared/policy.py), checked at submit and again at connect time.
CallbackUrl = Annotated[str, Meta(
    min_length=1, max_length=2048,
    description="https:// (or http://) URL that receives the finished task, signed with "
                "LOCALFLOW_WEBHOOK_SECRET (docs/webhooks.md); the http host policy applies",
)]


class TaskCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /api/tasks. Only `type` and `payload` are required."""

    type: Annotated[str, Meta(min_length=1, max_length=64, description="shell or http")]
    payload: dict[str, Any]
    priority: Annotated[int, Meta(ge=-1000, le=1000, description="higher runs first")] = 0
    max_attempts: Annotated[int, Meta(ge=1, le=100)] | None = None
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=255)] | None = None
    run_at: Annotated[datetime, Meta(
        description="when it may run, with a timezone; from 30 days ago to 366 days ahead"
    )] | None = None
    delay: Annotated[float, Meta(ge=0, le=MAX_DELAY, description="seconds")] | None = None
    timeout: Seconds | None = None
    queue: QueueName = DEFAULT_QUEUE
    callback_url: CallbackUrl | None = None

    def __post_init__(self) -> None:
        # Each message starts with the field it is about: the error names that field.
        if self.run_at is not None and self.delay is not None:
            raise ValueError("run_at: give either run_at or delay, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("run_at: needs a timezone, e.g. 2026-01-01T09:00:00Z")


class ShellPayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Runs `command` with `args` directly (no shell): metacharacters are plain text."""

    command: ShortText
    args: Annotated[list[Annotated[str, Meta(max_length=65536)]], Meta(max_length=1000)] = (
        msgspec.field(default_factory=list)
    )
    env: Annotated[dict[str, str], Meta(max_length=100)] = msgspec.field(default_factory=dict)
    timeout: Seconds | None = None

    def __post_init__(self) -> None:
        # A C string ends at NUL: execve would silently run a shorter command or argument.
        if "\x00" in self.command:
            raise ValueError("command: must not contain a NUL byte")
        for i, arg in enumerate(self.args):
            if "\x00" in arg:
                raise ValueError(f"args[{i}]: must not contain a NUL byte")
        for name, value in self.env.items():
            if not name or "=" in name or "\x00" in name:
                raise ValueError(f"env: invalid environment variable name {name!r}")
            if "\x00" in value:
                raise ValueError(f"env: the value of {name} must not contain a NUL byte")


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
        try:
            parts = urlsplit(self.url)
        except ValueError as exc:  # a bracketed host that is no IPv6 address, say
            raise ValueError(f"url: not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url: must be an http:// or https:// URL with a host: {self.url!r}"
            )
        for name, value in self.headers.items():
            problem = header_problem(name, value)
            if problem:
                raise ValueError(f"headers: {problem}")
        if self.body is not None and self.json is not UNSET:
            raise ValueError("body: give either body or json, not both")


# RFC 9110 5.1 and 5.5: a name is a token; a value is visible ASCII with inner spaces or tabs.
# Exactly what the worker's HTTP library sends, so nothing accepted here fails there.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"([\x21-\x7e]([ \t\x21-\x7e]*[\x21-\x7e])?)?")
# Framing is the worker's: it sets these from the body it sends.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


def header_problem(name: str, value: str) -> str | None:
    """Why `name: value` cannot be sent as an HTTP header, or None."""
    if not _TOKEN.fullmatch(name):
        return (f"{name!r} is not a valid header name (ASCII letters, digits and "
                "!#$%&'*+-.^_`|~ only)")
    if name.lower() in _FRAMING_HEADERS:
        return f"{name} is set by the worker from the body; leave it out"
    if not _FIELD_VALUE.fullmatch(value):
        return (f"the value of {name} must be printable ASCII without leading or trailing "
                "spaces (no line breaks, NUL or non-ASCII characters)")
    return None


PAYLOAD_TYPES: dict[str, type[msgspec.Struct]] = {"shell": ShellPayload, "http": HttpPayload}


class PayloadError(ValueError):
    """A payload that does not fit its task type; `field` names the culprit ("payload.env")."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def validate_payload(task_type: str, payload: Any) -> msgspec.Struct:
    schema = PAYLOAD_TYPES.get(task_type)
    if schema is None:
        known = ", ".join(sorted(PAYLOAD_TYPES))
        raise PayloadError(f"unknown task type {task_type!r}: expected one of {known}", "type")
    if isinstance(payload, dict) and schema is HttpPayload and isinstance(
        payload.get("method"), str
    ):
        payload = {**payload, "method": payload["method"].upper()}
    try:
        return msgspec.convert(payload, schema, strict=True)
    except msgspec.ValidationError as exc:
        field, message = describe(exc, "payload")
        field = field or "payload"
        raise PayloadError(f"invalid {task_type} payload: {message} - at `$.{field}`",
                           field) from None


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
    queue: str = DEFAULT_QUEUE
    # POSTed to when finished (docs/webhooks.md); deliveries: GET /api/tasks/{id}/deliveries
    callback_url: Annotated[str, Meta(
        description="where the finished task is POSTed, signed (docs/webhooks.md)")] | None = None


class Attempt(msgspec.Struct, kw_only=True):
    attempt: int
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None
    output: Any | None


class TaskOutput(msgspec.Struct, kw_only=True):
    """GET /api/tasks/{id}/output: what a task's program has printed (docs/live_output.md)."""

    id: str
    status: Status
    # True while the task runs: the running attempt's recent output, as its worker last
    # stored it (at most a second old). False once it is not running: the last attempt's
    # final output, from the task's result.
    live: bool
    attempt: int  # the attempt it comes from (0: none yet)
    stdout: str  # live: the last bytes (8 KiB at most); final: the kept head and tail
    stderr: str
    stdout_bytes: int | None = None  # live: everything the attempt wrote so far, in bytes
    stderr_bytes: int | None = None
    updated_at: datetime | None = None  # live: when the worker stored it (None: not yet)


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
