"""One error shape for every 4xx/5xx: RFC 9457 problem details, with a message to act on."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)
from litestar.params import HeaderParameter
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY, HTTP_500_INTERNAL_SERVER_ERROR

from shared.errors import (
    Conflict,
    InvalidSchedule,
    InvalidTask,
    NotFound,
    QueueError,
    StorageError,
    StorageFull,
)

log = structlog.get_logger("localflow.api")
PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable", 507: "Insufficient Storage",
}


class ProblemField(msgspec.Struct, kw_only=True):
    field: str | None = msgspec.field(default=None)
    message: str


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details: the body of every 4xx/5xx answer (application/problem+json)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | msgspec.UnsetType = msgspec.UNSET


_WHEN = {
    400: "Malformed request: a query, path or header parameter, or the JSON itself",
    401: "No credentials, or a wrong token (see WWW-Authenticate); only with LOCALFLOW_API_TOKEN",
    403: "Authenticated, but this credential may not do this",
    404: "No such resource",
    409: "Conflicts with the resource's current state",
    413: "Request body larger than the limit",
    415: "The body is not JSON (send Content-Type: application/json)",
    422: "Well-formed, but a value is not valid; `detail` and `errors[].field` name it",
    429: "Too many wrong tokens from this address; retry after Retry-After seconds",
    500: "Unexpected error; the details are in the server log only",
    503: "The database stayed locked or cannot be reached; retry after Retry-After seconds",
    507: "The disk holding the database is full; nothing was written. Free space and retry",
}


def problem_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for error answers particular to an operation (409, say); the ones any
    operation of its shape can give are added by document_errors."""
    return {
        code: ResponseSpec(
            data_container=Problem, description=_WHEN[code], media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for code in sorted(codes)
    }


def document_errors(
    openapi: OpenAPI, open_operations: set[tuple[str, str]], security_scheme: str
) -> None:
    """Give every operation of the OpenAPI document the problem answers it can give.

    Derived from the operation's shape so nobody has to remember them: 400 with parameters or
    a body, and for every operation under /api (a query parameter it does not take,
    api/request_rules.py), 413 and 422 with a body, 404 with a path parameter, 401, 403 and
    429 (and the bearer security requirement) unless open, 503 under /api (database busy),
    500 everywhere. A
    handler declares the rest (409 and the like) with `responses=problem_responses(...)`.
    Litestar's own 400 entry (application/json, another shape) is replaced: ours is the one sent.
    """
    schemas = openapi.components.schemas if openapi.components else None
    if schemas is None:
        openapi.components = openapi.components or Components()
        openapi.components.schemas = schemas = {}
    schemas.setdefault("Problem", _PROBLEM_SCHEMA)
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch", "head", "options"):
            op: Operation | None = getattr(item, method, None)
            if op is None:
                continue
            codes = {500}
            if op.parameters or op.request_body:
                codes.add(400)
            if op.request_body:
                codes.update((413, 415, 422))
            if "{" in path:
                codes.add(404)
            if path.startswith("/api/"):
                codes.update((400, 503))
                if method in ("post", "put", "patch", "delete"):
                    codes.add(507)
            if (path, method.upper()) not in open_operations:
                codes.update((401, 403, 429))  # 429: wrong tokens, throttled
                op.security = op.security or [{security_scheme: []}]
            responses = op.responses if op.responses is not None else {}
            op.responses = responses
            for code in sorted(codes):
                existing = responses.get(str(code))
                content = getattr(existing, "content", None) or {}
                if existing is None or PROBLEM_JSON not in content:
                    responses[str(code)] = OpenAPIResponse(
                        description=_WHEN[code],
                        content={PROBLEM_JSON: OpenAPIMediaType(
                            schema=Reference(ref="#/components/schemas/Problem")
                        )},
                    )


_PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "errors": Schema(type=OpenAPIType.ARRAY, items=Schema(
            type=OpenAPIType.OBJECT, required=["message"],
            properties={
                "field": Schema(one_of=[Schema(type=OpenAPIType.STRING),
                                        Schema(type=OpenAPIType.NULL)]),
                "message": Schema(type=OpenAPIType.STRING),
            },
        )),
    },
    description="RFC 9457 problem details",
)


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
    if _body_missing(request, extra):
        return problem(400, "the request body is empty: send a JSON object")
    errors = [
        {"field": _field(e.get("key"), e.get("source"), request), "message": e.get("message", "")}
        for e in extra
        if isinstance(e, dict)
    ]
    if not errors:  # the body is not JSON at all
        return problem(400, exc.detail)
    where = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"]
                      for e in errors)
    status = HTTP_422_UNPROCESSABLE_ENTITY if _from_body(extra) else 400
    return problem(status, f"invalid request: {where}", errors)


def _body_missing(request: Request, extra: list[Any]) -> bool:
    """Litestar's way of saying a handler's `data` got no body at all: a KeyError on "data"."""
    return (
        any(isinstance(e, dict) and e.get("key") == "data" and e.get("message") == "'data'"
            for e in extra)
        and request.headers.get("content-length", "0").strip() == "0"
        and "transfer-encoding" not in request.headers
    )


def _from_body(extra: list[Any]) -> bool:
    return any(isinstance(e, dict) and e.get("source") == "body" for e in extra)


def _field(key: Any, source: Any = None, request: Request | None = None) -> str | None:
    # Litestar names the whole body "data"; a person thinks of it as the request body.
    if key in (None, "data"):
        return None
    if source == "header" and request is not None:
        return _header_name(request, str(key))
    return str(key)


def _header_name(request: Request, key: str) -> str:
    """A header parameter is known by its Python name; name it as the client sent it."""
    try:
        kwarg = request.route_handler.parsed_fn_signature.parameters[key].kwarg_definition
        header = getattr(kwarg, "header", None) or (
            kwarg.name if isinstance(kwarg, HeaderParameter) else None
        )
    except (AttributeError, KeyError):
        header = None
    return f"{header} header" if header else key


def _http(request: Request, exc: HTTPException) -> Response[dict[str, Any]]:
    detail = exc.detail
    # Litestar's own routing errors say only "Not Found"; say what was not found.
    if isinstance(exc, NotFoundException) and detail == "Not Found":
        detail = f"no route {request.url.path}; the API is described at /schema"
    elif exc.status_code == 413:
        limit = getattr(request.app, "request_max_body_size", None)
        detail = (f"the request body is larger than the limit of {limit} bytes"
                  if limit else "the request body is larger than the limit")
    elif isinstance(exc, MethodNotAllowedException):
        allowed = (exc.headers or {}).get("allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    return problem(exc.status_code, detail, headers=exc.headers)


# Domain errors carry no HTTP status: this is where they get one (most specific class first).
_STATUS_OF: tuple[tuple[type[QueueError], int], ...] = (
    (NotFound, 404), (Conflict, 409), (InvalidTask, 422), (InvalidSchedule, 422),
)


def status_of(exc: QueueError) -> int:
    return next((status for cls, status in _STATUS_OF if isinstance(exc, cls)), 400)


def _queue(request: Request, exc: QueueError) -> Response[dict[str, Any]]:
    # A refusal that is about one field names it in errors[], like a body that failed the
    # schema's checks, so a client (or a form) can put the message beside that field.
    field = getattr(exc, "field", None)
    errors = [{"field": field, "message": str(exc)}] if field else None
    return problem(status_of(exc), str(exc), errors)


def _storage(request: Request, exc: StorageError) -> Response[dict[str, Any]]:
    # Busy, full, unreachable or not migrated: nothing was changed; the client may retry.
    log.warning("storage error", path=request.url.path, error=str(exc))
    if isinstance(exc, StorageFull):
        # 507 Insufficient Storage: not a passing hiccup but something a person must free;
        # the same request succeeds, with no restart, once there is room.
        return problem(507, str(exc), headers={"Retry-After": "10"})
    return problem(503, str(exc), headers={"Retry-After": "1"})


def _unexpected(request: Request, exc: Exception) -> Response[dict[str, Any]]:
    # The trace goes to our log, never to the client.
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal error; see the server log")


EXCEPTION_HANDLERS = {
    ValidationException: _validation,
    HTTPException: _http,
    QueueError: _queue,
    StorageError: _storage,
    Exception: _unexpected,
}


