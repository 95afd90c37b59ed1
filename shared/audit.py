"""The audit trail: who did what to which task, schedule or queue, and through what.

Every operator action goes through one policy method (Queue.cancel/retry/delete,
Schedules.create/update/delete/run_now, Queues.update); each builds its AuditEntry here and
hands it to the store *with the change*, so the record is written in the same transaction as
the change it records: an action is never committed without its record, and a record never
exists for an action that rolled back. (A separate write after the action could be lost to a
crash or a full disk in between; one before it could record something that then failed.)

Who acted comes from the request, not from every caller: the API process sets the current
`Actor` for the duration of each HTTP request (api/audit_context.py), in a context variable
that asyncio tasks started by the request (a dashboard bulk action) inherit. So the REST API,
the dashboard and the CLI (an HTTP client that says so in a header) reach the same policy
methods and are all recorded, without a parameter threaded through every handler. Outside a
request (a script using Queue directly, tests) the channel is "internal".

Never a secret: the actor is a short SHA-256 fingerprint of the API token or of the dashboard
session cookie (enough to tell two sessions apart, useless to log in with), or "no token".
docs/audit.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Literal

import msgspec

from shared.ids import new_id
from shared.schemas import to_datetime

AuditAction = Literal[
    "task.cancel", "task.retry", "task.delete",
    "schedule.create", "schedule.update", "schedule.delete", "schedule.pause",
    "schedule.resume", "schedule.run",
    "queue.pause", "queue.resume", "queue.limit",
]
ACTIONS: tuple[str, ...] = AuditAction.__args__  # type: ignore[attr-defined]
TargetKind = Literal["task", "schedule", "queue"]
Channel = Literal["api", "dashboard", "cli", "internal"]
CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]
# A bulk action keeps at most this many of its ids in `details` (the count is exact).
BULK_IDS_KEPT = 100
# ?target= takes a task or schedule id (a ULID) or a queue name: both fit this.
TARGET_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class AuditEntry(msgspec.Struct, kw_only=True):
    """One recorded action. `target_id` is None for a bulk action; `count` says how many
    targets it acted on (1 for a single one)."""

    id: str  # a ULID: entries sort newest first by id
    at: datetime
    action: AuditAction
    target_kind: TargetKind
    target_id: str | None
    count: int = 1
    channel: Channel
    actor: str  # never a secret: "token 3f9a1c2e", "session 7b2d90aa", "no token", ...
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class AuditPage(msgspec.Struct, kw_only=True):
    items: list[AuditEntry]  # newest first
    next_cursor: str | None  # pass as ?cursor= for the next (older) page; None: no more


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    channel: Channel
    identity: str


INTERNAL = Actor(channel="internal", identity="process")
# The actor, or a function that works it out: the API sets the function for every write
# request (cheap), and only a request that records an action pays for calling it.
_current: contextvars.ContextVar[Actor | Callable[[], Actor]] = contextvars.ContextVar(
    "localflow_actor", default=INTERNAL)
# Inside a bulk action (summarised()), single actions record nothing: the bulk action writes
# one entry with the count when it is done.
_summarised: contextvars.ContextVar[bool] = contextvars.ContextVar("localflow_audit_bulk",
                                                                   default=False)


def current_actor() -> Actor:
    actor = _current.get()
    return actor if isinstance(actor, Actor) else actor()


@contextlib.contextmanager
def acting_as(actor: Actor | Callable[[], Actor]) -> Iterator[None]:
    """Everything done inside (and in asyncio tasks started inside) is done by `actor` (or
    by whoever `actor()` names, asked only when an action is recorded)."""
    reset = _current.set(actor)
    try:
        yield
    finally:
        _current.reset(reset)


def set_actor(actor: Actor | Callable[[], Actor]) -> contextvars.Token:
    """acting_as without a context manager, for a hot path: undo with reset_actor(token)."""
    return _current.set(actor)


def reset_actor(token: contextvars.Token) -> None:
    _current.reset(token)


@contextlib.contextmanager
def summarised() -> Iterator[None]:
    """A bulk action's single steps go unrecorded; the caller records one entry for all."""
    reset = _summarised.set(True)
    try:
        yield
    finally:
        _summarised.reset(reset)


def fingerprint(kind: str, secret: str) -> str:
    """A name for a credential that cannot be turned back into it: 'token 3f9a1c2e'."""
    digest = hashlib.sha256(f"localflow audit {kind}\0{secret}".encode(
        "utf-8", "surrogateescape")).hexdigest()
    return f"{kind} {digest[:8]}"


def entry(
    action: AuditAction, target_kind: TargetKind, target_id: str | None, now: float, *,
    count: int = 1, details: dict[str, Any] | None = None, actor: Actor | None = None,
) -> AuditEntry:
    """The record of an action done now by the current actor."""
    who = actor or current_actor()
    return AuditEntry(
        id=new_id(now), at=to_datetime(now),  # type: ignore[arg-type]  # never None here
        action=action, target_kind=target_kind, target_id=target_id, count=count,
        channel=who.channel, actor=who.identity, details=details or {},
    )


def of(
    action: AuditAction, target_kind: TargetKind, target_id: str, now: float, *,
    details: dict[str, Any] | None = None,
) -> list[AuditEntry]:
    """What a single action hands its store to write: its entry, or none inside a bulk
    action (summarised())."""
    if _summarised.get():
        return []
    return [entry(action, target_kind, target_id, now, details=details)]


def in_order(entries: list[AuditEntry]) -> list[AuditEntry]:
    """Entries of one action made in the same millisecond, with ids that sort in list order
    (a ULID's random part would order them by chance)."""
    ids = sorted(e.id for e in entries)
    return [msgspec.structs.replace(e, id=i) for e, i in zip(entries, ids, strict=True)]


def entry_row(e: AuditEntry) -> dict[str, Any]:
    """An entry as the stores write it (the same columns on both engines)."""
    return {
        "id": e.id, "at": e.at.timestamp(), "action": e.action, "target_kind": e.target_kind,
        "target_id": e.target_id, "count": e.count, "channel": e.channel, "actor": e.actor,
        "details": msgspec.json.encode(e.details).decode(),
    }


def entry_of_row(row: Any) -> AuditEntry:
    """An entry from a stored row (a mapping with entry_row's keys)."""
    return AuditEntry(
        id=row["id"], at=to_datetime(row["at"]),  # type: ignore[arg-type]
        action=row["action"], target_kind=row["target_kind"], target_id=row["target_id"],
        count=row["count"], channel=row["channel"], actor=row["actor"],
        details=msgspec.json.decode(row["details"]) if row["details"] else {},
    )
