"""/api/audit: the audit trail of operator actions, newest first (docs/audit.md)."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Controller, Request, get
from litestar.exceptions import ValidationException
from litestar.params import Parameter, QueryParameter

from api.auth import BEARER_SECURITY
from api.deps import QueueDep
from api.errors import problem_responses
from api.request_rules import before_api_request
from shared.audit import ACTIONS, TARGET_PATTERN, AuditAction, AuditPage
from shared.ids import is_valid_id

MAX_LIMIT = 500
CURSOR_PATTERN = r"^[0-9A-HJKMNP-TV-Z]{26}$"  # a ULID (shared/ids.py), as next_cursor gives


def _bad(field: str, message: str) -> ValidationException:
    return ValidationException(
        detail=f"invalid request: {field}: {message}",
        extra=[{"key": field, "source": "query", "message": message}],
    )


def check_query(action: str | None, target: str | None, cursor: str | None) -> None:
    """The rules Litestar's own checks leave to us, with messages naming the field. Shared
    with the dashboard page, which must refuse the same things."""
    if action is not None and action not in ACTIONS:
        raise _bad("action", f"{action[:60]!r} is not one of {', '.join(ACTIONS)}")
    if target is not None and not re.fullmatch(TARGET_PATTERN, target):
        raise _bad("target", "a task or schedule id, or a queue name (letters, digits, "
                   "'-', '_', '.'; up to 64)")
    if cursor is not None and not is_valid_id(cursor):
        raise _bad("cursor", "not a next_cursor this API handed out")


class AuditController(Controller):
    path = "/api/audit"
    tags = ["audit"]
    security = BEARER_SECURITY
    before_request = before_api_request

    @get(
        "/",
        summary="The audit trail, newest first",
        description="Every operator action: task cancel, retry, delete (a dashboard bulk "
        "action is one entry with its `count`, its filter and up to 100 ids in `details`); "
        "schedule create, update, delete, pause, resume, run; queue pause, resume, limit. "
        "Each says when, what, on which target, through what `channel` (api, dashboard, cli; "
        "internal: a program using the library) and a non-secret `actor` (a fingerprint of "
        "the token or dashboard session). Keyset-paged: pass `next_cursor` as `cursor`. "
        "Entries older than --retain-audit (default 90 days) are pruned.",
        responses=problem_responses(400),
    )
    async def list_audit(
        self,
        request: Request,
        queue: QueueDep,
        action: Annotated[AuditAction | None, QueryParameter(
            description="only this action")] = None,
        target: Annotated[str | None, QueryParameter(
            max_length=64, pattern=TARGET_PATTERN,
            description="only entries about this task id, schedule id or queue name "
            "(a bulk action has no single target)")] = None,
        cursor: Annotated[str | None, Parameter(
            min_length=26, max_length=26, pattern=CURSOR_PATTERN,
            description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 50,
    ) -> AuditPage:
        # Litestar reads "?action=null" as no filter at all: check what was sent.
        raw = request.query_params
        check_query(raw.get("action"), raw.get("target"), raw.get("cursor"))
        return await queue.store.list_audit(action=action, target=target, cursor=cursor,
                                            limit=limit)
