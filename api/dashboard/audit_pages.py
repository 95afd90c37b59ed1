"""The audit trail page: who cancelled, retried, deleted, paused or changed what, newest first,
keyset-paged, filtered by action and target (docs/audit.md). It only reads: no form on it
changes anything, so CSRF has nothing to guard here."""

from __future__ import annotations

from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.exceptions import ValidationException
from litestar.response import Response

from api.audit import check_query
from api.dashboard.common import render
from api.deps import QueueDep
from shared.audit import ACTIONS, AuditPage

PAGE_SIZES = (25, 50, 100)


def _query(**params: str | int | None) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


class AuditPages(Controller):
    path = "/dashboard"
    include_in_schema = False

    @get("/audit", name="dashboard-audit")
    async def audit(self, request: Request, queue: QueueDep) -> Response:
        raw = request.query_params
        action = raw.get("action") or None
        target = (raw.get("target") or "").strip() or None
        cursor = raw.get("cursor") or None
        limit_text = raw.get("limit") or "50"
        limit = int(limit_text) if limit_text.isdigit() and int(limit_text) in PAGE_SIZES else 50
        error = None
        try:
            check_query(action, target, cursor)
        except ValidationException as exc:
            error = str(exc.detail).removeprefix("invalid request: ")
        page = AuditPage(items=[], next_cursor=None)
        if error is None:
            page = await queue.store.list_audit(action=action, target=target, cursor=cursor,
                                                limit=limit)
        filters = {"action": action, "target": target,
                   "limit": limit if limit != 50 else None}
        return render(
            "audit.html", section="audit", title="Audit trail",
            status_code=400 if error else 200, error=error, page=page, actions=ACTIONS,
            action=action, target=target, cursor=cursor, limit=limit, page_sizes=PAGE_SIZES,
            now=queue.clock.now(), filter_query=_query(**filters),
            next_query=_query(**filters, cursor=page.next_cursor) if page.next_cursor else None,
        )
