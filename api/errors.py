"""One error shape for every 4xx/5xx: RFC 9457 problem details, with a message to act on."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY, HTTP_500_INTERNAL_SERVER_ERROR

from shared.db import DatabaseBusy
from shared.queue import QueueError

log = structlog.get_logger("localflow.api")
PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int, detail: str, errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation(request: Request, exc: ValidationException) -> Response[dict[str, Any]]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [
        {"field": _field(e.get("key")), "message": e.get("message", "")}
        for e in extra
        if isinstance(e, dict)
    ]
    if not errors:  # the body is not JSON at all
        return problem(400, exc.detail)
    where = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"]
                      for e in errors)
    status = HTTP_422_UNPROCESSABLE_ENTITY if _from_body(extra) else 400
    return problem(status, f"invalid request: {where}", errors)


def _from_body(extra: list[Any]) -> bool:
    return any(isinstance(e, dict) and e.get("source") == "body" for e in extra)


def _field(key: Any) -> str | None:
    # Litestar names the whole body "data"; a person thinks of it as the request body.
    return None if key in (None, "data") else str(key)


def _http(request: Request, exc: HTTPException) -> Response[dict[str, Any]]:
    return problem(exc.status_code, exc.detail, headers=exc.headers)


def _queue(request: Request, exc: QueueError) -> Response[dict[str, Any]]:
    return problem(exc.status_code, str(exc))


def _busy(request: Request, exc: DatabaseBusy) -> Response[dict[str, Any]]:
    return problem(503, str(exc), headers={"Retry-After": "1"})


def _unexpected(request: Request, exc: Exception) -> Response[dict[str, Any]]:
    # The trace goes to our log, never to the client.
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal error; see the server log")


EXCEPTION_HANDLERS = {
    ValidationException: _validation,
    HTTPException: _http,
    QueueError: _queue,
    DatabaseBusy: _busy,
    Exception: _unexpected,
}


