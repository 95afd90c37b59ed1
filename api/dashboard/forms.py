"""The submit form: from form fields to the same TaskCreate the API takes, and from the API's
validation messages back to the field they are about.

Nothing here decides what is valid: msgspec's TaskCreate and Queue.prepare (called by enqueue) do,
exactly as for POST /api/tasks. This module only reshapes text boxes into that request and finds
the field a message names, so the error can be shown beside it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

import msgspec

from shared import json_input
from shared.queue import Queue, QueueError
from shared.queue_schemas import QUEUE_NAME_RULE
from shared.schedule_schemas import Schedule, ScheduleCreate, ScheduleUpdate
from shared.schemas import Task, TaskCreate

TASK_TYPES = ("shell", "http")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
COMMON_FIELDS = ("queue", "priority", "max_attempts", "timeout", "delay", "idempotency_key")
SHELL_FIELDS = ("command", "args", "env")
HTTP_FIELDS = ("url", "method", "headers", "body", "body_is_json")
FORM_FIELDS = ("type", *COMMON_FIELDS, *SHELL_FIELDS, *HTTP_FIELDS)
SCHEDULE_FIELDS = (
    "name", "cron_expr", "timezone", "task_type", "enabled", "queue", "priority", "max_attempts",
    "timeout", "overlap", "missed", *SHELL_FIELDS, *HTTP_FIELDS,
)
_INTEGERS = ("priority", "max_attempts")

# Words in a message that has no `$.path`, and the field they mean.
_ALIASES = {
    "environment variable": "env", "nul bytes": "command", "body or json": "body",
    "run_at or delay": "delay", "payload is": "command",
}
_MISSING = re.compile(r"missing required field `([a-z_]+)`")
_PATH = re.compile(r" - at `\$\.([a-z_]+)(?:\.([a-z_]+))?[^`]*`")


class FormError(ValueError):
    """A field that could not even be turned into a request (e.g. 'abc' as a number)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class FormInvalid(ValueError):
    """The form has mistakes; each is in form.errors (or form.general)."""


# msgspec and the payload rules stop at the first mistake. To report every one in one round,
# the field named is set aside and the rest checked again, this many times at most.
MAX_ROUNDS = 12
T = TypeVar("T")


@dataclass
class SubmitForm:
    """What the person typed, kept as text so the form can be shown again unchanged."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    general: str | None = None  # an error no single field owns

    TYPE_FIELD: ClassVar[str] = "type"
    FIELDS: ClassVar[tuple[str, ...]] = FORM_FIELDS

    @property
    def type(self) -> str:
        t = self.values.get(self.TYPE_FIELD, "shell")
        return t if t in TASK_TYPES else "shell"

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> Self:
        return cls(values={k: str(form[k]) for k in cls.FIELDS if form.get(k) is not None})

    @classmethod
    def from_task(cls, task: Task) -> Self:
        """A copy of an existing task's request, for "clone into the submit form"."""
        values = {"type": task.type, "queue": task.queue, "priority": str(task.priority),
                  "max_attempts": str(task.max_attempts), "timeout": _num(task.timeout)}
        return cls(values={**values, **payload_values(task.type, task.payload)})

    def fail(self, message: str, name: str | None = None) -> None:
        """Put an API validation message beside the field it names (or above the form)."""
        if name not in self.FIELDS or name == "payload":
            name = field_of(message, self.type, self.FIELDS)
        if name == "queue":  # msgspec would show the pattern; say it in words
            self.errors[name] = f"not a queue name: use {QUEUE_NAME_RULE}."
        elif name:
            # "cron_expr: invalid ..." beside the cron_expr box needs no "cron_expr: ".
            self.errors[name] = humane(message.removeprefix(f"{name}: "))
        else:
            self.general = message

    def to_create(self) -> TaskCreate:
        """The API request this form means; raises FormInvalid with every mistake found in
        form.errors (the payload's own rules are Queue.prepare's: see check_payload)."""
        request: dict[str, Any] = {"type": self.type, "payload": self.payload(collect=True)}
        request.update(self._numbers(("priority", "max_attempts", "timeout", "delay")))
        key = self.get("idempotency_key").strip()
        if key:
            request["idempotency_key"] = key
        request.update(self._queue())
        return self._convert(request, TaskCreate)

    def _queue(self) -> dict[str, str]:
        """The queue box: blank leaves the API's default (`default`)."""
        name = self.get("queue").strip()
        return {"queue": name} if name else {}

    def _convert(self, request: dict[str, Any], kind: type[T]) -> T:
        """msgspec.convert, noting each field it refuses and checking the others again."""
        set_aside: set[str] = set()
        for _ in range(MAX_ROUNDS):
            try:
                value = msgspec.convert(request, kind)
            except msgspec.ValidationError as exc:
                match = _PATH.search(str(exc)) or _MISSING.search(str(exc))
                top = match.group(1) if match else None
                if top in set_aside and top not in request:
                    request[top] = "-"  # required: a stand-in while the rest is checked
                    continue
                self.fail(str(exc))
                if top in request and top not in (self.TYPE_FIELD, "payload"):
                    del request[top]  # the default stands in while the rest is checked
                    set_aside.add(top)
                    continue
                raise FormInvalid from None
            if self.errors or self.general:
                raise FormInvalid
            return value
        raise FormInvalid

    def _numbers(self, names: tuple[str, ...]) -> dict[str, int | float]:
        """The number fields that are filled in and readable; blank ones are left to the
        defaults, unreadable ones noted in errors."""
        numbers: dict[str, int | float] = {}
        for name in names:
            text = self.get(name).strip()
            if text:
                try:
                    numbers[name] = (_int if name in _INTEGERS else _float)(name, text)
                except FormError as exc:
                    self.errors[exc.field] = str(exc)
        return numbers

    def _part(self, collect: bool, read: Callable[[], T], empty: T) -> T:
        """One payload field read from text; with collect, a mistake is noted, not raised."""
        try:
            return read()
        except FormError as exc:
            if not collect:
                raise
            self.errors[exc.field] = str(exc)
            return empty

    def payload(self, collect: bool = False) -> dict[str, Any]:
        """The payload the shell or http fields describe, in the API's JSON shape. Raises
        FormError for text that does not read (or notes it in errors, with collect)."""
        if self.type == "shell":
            payload: dict[str, Any] = {"command": self.get("command").strip()}
            args = _lines(self.get("args"))
            if args:
                payload["args"] = args
            env = self._part(collect, lambda: _pairs("env", self.get("env"), "="), {})
            if env:
                payload["env"] = env
            return payload
        payload = {"url": self.get("url").strip(), "method": self.get("method", "GET")}
        headers = self._part(collect, lambda: _pairs("headers", self.get("headers"), ":"), {})
        if headers:
            payload["headers"] = headers
        body = self.get("body")
        if body.strip():
            if self.get("body_is_json"):
                decoded = self._part(collect, lambda: _json_body(body), _NO_BODY)
                if decoded is not _NO_BODY:
                    payload["json"] = decoded
            else:
                payload["body"] = body
        return payload


class ScheduleForm(SubmitForm):
    """The schedule form: the same payload fields, plus when and how the schedule fires."""

    TYPE_FIELD: ClassVar[str] = "task_type"
    FIELDS: ClassVar[tuple[str, ...]] = SCHEDULE_FIELDS

    @classmethod
    def from_schedule(cls, s: Schedule) -> Self:
        values = {
            "name": s.name, "cron_expr": s.cron_expr, "timezone": s.timezone,
            "task_type": s.task_type, "queue": s.queue, "priority": str(s.priority),
            "max_attempts": "" if s.max_attempts is None else str(s.max_attempts),
            "timeout": "" if s.timeout is None else _num(s.timeout),
            "overlap": s.overlap, "missed": s.missed, "enabled": "on" if s.enabled else "",
        }
        return cls(values={**values, **payload_values(s.task_type, s.payload)})

    def to_schedule(self) -> ScheduleCreate:
        """The POST /api/schedules body this form means (the same checks apply); raises
        FormInvalid with every mistake msgspec finds in form.errors."""
        body: dict[str, Any] = {
            "name": self.get("name").strip(), "cron_expr": self.get("cron_expr").strip(),
            "timezone": self.get("timezone").strip() or "UTC", "task_type": self.type,
            "payload": self.payload(collect=True), "enabled": bool(self.get("enabled")),
            "overlap": self.get("overlap", "allow"), "missed": self.get("missed", "skip"),
        }
        body.update(self._numbers(("priority", "max_attempts", "timeout")))
        body.update(self._queue())
        return self._convert(body, ScheduleCreate)

    def to_update(self) -> ScheduleUpdate:
        """Every field, so an edit replaces the schedule as the form shows it."""
        create = self.to_schedule()
        return ScheduleUpdate(**msgspec.structs.asdict(create))


def payload_values(task_type: str, payload: Any) -> dict[str, str]:
    """Form text for a stored payload (the inverse of SubmitForm.payload)."""
    p = payload if isinstance(payload, dict) else {}
    if task_type == "shell":
        return {
            "command": str(p.get("command", "")),
            "args": "\n".join(str(a) for a in p.get("args", [])),
            "env": "\n".join(f"{k}={v}" for k, v in p.get("env", {}).items()),
        }
    values = {
        "url": str(p.get("url", "")), "method": str(p.get("method", "GET")),
        "headers": "\n".join(f"{k}: {v}" for k, v in p.get("headers", {}).items()),
    }
    if p.get("json") is not None:
        values["body"] = msgspec.json.encode(p["json"]).decode()
        values["body_is_json"] = "on"
    elif p.get("body") is not None:
        values["body"] = str(p["body"])
    return values


_NO_BODY = object()


def _json_body(text: str) -> Any:
    try:
        # The API's own reader: the same limits (nesting, repeated keys) apply.
        return json_input.decode(text.encode("utf-8", "surrogatepass"))
    except json_input.BodyError as exc:
        reason = str(exc).removeprefix("the body is not valid JSON: ")
        raise FormError("body", f"not valid JSON: {reason}") from None


def check_payload(queue: Queue, form: SubmitForm) -> None:
    """The queue's payload rules (Queue.prepare, as for POST /api/tasks), noting every payload
    field they refuse: each refused field is set aside and the rest checked again."""
    payload = form.payload(collect=True)
    for _ in range(MAX_ROUNDS):
        try:
            queue.prepare(TaskCreate(type=form.type, payload=payload))
            return
        except QueueError as exc:
            name = field_of(str(exc), form.type, form.FIELDS)
            if name in form.errors:
                return  # already said (a parse error, or the same field again)
            form.fail(str(exc))
            if name not in payload:
                return
            del payload[name]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FormError(name, f"must be a whole number, not {text!r}") from None


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FormError(name, f"must be a number of seconds, not {text!r}") from None


def _lines(text: str) -> list[str]:
    # One argument per line, kept exactly (spaces included); blank lines are dropped.
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _pairs(name: str, text: str, sep: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for n, line in enumerate(_lines(text), 1):
        key, found, value = line.partition(sep)
        if not found or not key.strip():
            example = "NAME=value" if sep == "=" else "Name: value"
            raise FormError(name, f"line {n}: expected {example}, got {line!r}")
        pairs[key.strip()] = value.strip() if sep == ":" else value
    return pairs


def field_of(
    message: str, task_type: str, form_fields: tuple[str, ...] = FORM_FIELDS
) -> str | None:
    """The form field an API validation message is about, if it names one."""
    other = HTTP_FIELDS if task_type == "shell" else SHELL_FIELDS
    fields = set(form_fields) - set(other) - {"type", "task_type", "body_is_json"}
    match = _PATH.search(message)
    if match:
        top, sub = match.groups()
        if top == "payload" and sub in fields:
            return sub
        if top in fields:
            return top
        if top == "payload":
            return None
    lowered = message.lower()
    if "idempotency key" in lowered:
        return "idempotency_key"
    detail = lowered.split("payload: ", 1)[-1]
    for words, name in _ALIASES.items():
        if words in detail and name in fields:
            return name
    first = re.match(r"[a-z_]+", detail)
    if first and first.group(0) in fields:
        return first.group(0)
    for name in sorted(fields, key=len, reverse=True):
        if re.search(rf"\b{name}\b", detail):
            return name
    return None


def humane(message: str) -> str:
    """The message without what the field's position already says."""
    text = _PATH.sub("", message)
    text = re.sub(r"^(payload: )?invalid (shell|http) payload: ", "", text)
    text = re.sub(r"^Expected `str` of length >= 1$", "is required", text)
    text = re.sub(r"^Expected `(int|float)` ", "must be ", text)
    return text
