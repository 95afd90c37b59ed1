"""ETags and conditional requests on tasks and schedules (RFC 9110 section 13).

- GET /api/tasks/{id} and /api/schedules/{id} carry an `ETag`; `If-None-Match` with it -> 304.
- Changes to one of them (task DELETE, cancel, retry; schedule PUT, DELETE) honour `If-Match`:
  when the resource's current ETag is not among those listed, nothing changes and the answer
  is 412 Precondition Failed. Two people editing one schedule: the second save gets 412 instead
  of silently undoing the first.
- Every other /api operation refuses `If-Match`, and every /api change refuses
  `If-Unmodified-Since` and `If-None-Match` (400): a condition the server would ignore must not
  read as honoured.

A task's ETag covers its whole representation (any change, a heartbeat included, is a new
version). A schedule's covers its definition, what PUT edits (id, fields, updated_at), not the
fire bookkeeping the scheduler writes (next/last fire): a fire between GET and PUT is no
conflict, and the document says so.

The check and the write run under one lock per API process, so two conditional requests
cannot both pass against the same version. (A write by another process, or by the dashboard,
between the check and the write is not seen: the comparison belongs in the store's UPDATE
once it has a version column.)
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, HTTPException

from shared.schedule_schemas import Schedule
from shared.schemas import Task

# Handler opts: the operation honours If-Match; the GET carries an ETag (and If-None-Match).
IF_MATCH_OPT = "honours_if_match"
ETAG_OPT = "has_etag"
MAX_CONDITION_LENGTH = 1024  # an If-Match or If-None-Match longer than this is a 400
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class PreconditionFailed(HTTPException):
    status_code = 412


def _tag(value: Any) -> str:
    digest = hashlib.sha256(msgspec.json.encode(value, order="sorted")).hexdigest()
    return f'"{digest[:24]}"'


def task_etag(task: Task) -> str:
    return _tag(task)


def schedule_etag(schedule: Schedule) -> str:
    definition = msgspec.structs.asdict(schedule)
    for bookkeeping in ("next_fire_at", "last_fire_at", "last_task_id", "last_task_status",
                        "last_skip_at", "last_skip_reason"):
        definition.pop(bookkeeping, None)
    return _tag(definition)


def _tags(name: str, header: str) -> list[str]:
    """The entity tags of a list header. A tag that is not well formed ("nope", unquoted) can
    never equal an ETag we made, so it simply matches nothing; an empty header is a 400."""
    if len(header) > MAX_CONDITION_LENGTH:
        raise ClientException(
            detail=f"{name} is longer than {MAX_CONDITION_LENGTH} characters; send the ETag(s) "
            "from a GET"
        )
    if not header.strip():
        raise ClientException(
            detail=f'{name} is empty: send * or the ETag from a GET, like "3f2a..." (quotes '
            "included)"
        )
    return [t.strip() for t in header.split(",") if t.strip()]


def none_match(request: Request, etag: str) -> bool:
    """True when If-None-Match lists the current ETag (weak comparison): answer 304."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = _tags("If-None-Match", header)
    return "*" in tags or etag in {t.removeprefix("W/") for t in tags}


def check_if_match(request: Request, etag: str) -> None:
    """412 unless If-Match is absent, `*`, or lists the current ETag (strong comparison)."""
    header = request.headers.get("if-match")
    if header is None:
        return
    tags = _tags("If-Match", header)
    if "*" in tags or etag in tags:
        return
    raise PreconditionFailed(
        detail=f"If-Match {header.strip()} is not the current version ({etag}): it was changed "
        "since you read it; GET it again, reapply your change and send the new ETag"
    )


_CONDITIONAL = (b"if-match", b"if-none-match", b"if-unmodified-since")


def refuse_unhonoured(request: Request) -> None:
    """before_request for the /api controllers: 400 for a condition this operation ignores."""
    # Most requests carry no conditional header: one pass over the raw (lower-case) names
    # instead of building Litestar's header mapping for every request.
    if not any(name in _CONDITIONAL for name, _ in request.scope["headers"]):
        return
    method = request.method
    honours = bool(request.route_handler.opt.get(IF_MATCH_OPT))
    refused = []
    if "if-match" in request.headers and not honours:
        refused.append("If-Match")
    if method in _UNSAFE:
        refused += [h for h in ("If-None-Match", "If-Unmodified-Since") if h in request.headers]
    if refused:
        raise ClientException(
            detail=f"{', '.join(refused)} is not supported on {method} {request.url.path}; "
            "If-Match works on a task's DELETE, cancel and retry and on a schedule's PUT and "
            "DELETE (send the ETag from GET)"
        )


def write_lock(request: Request) -> asyncio.Lock:
    """One per app: conditional check-then-write runs under it (see the module doc)."""
    state = request.app.state
    lock = state.get("conditional_write_lock")
    if lock is None:
        lock = state["conditional_write_lock"] = asyncio.Lock()
    return lock
