"""The OpenAPI document at /schema/openapi.json, shaped for the generators users point at it.

Litestar builds the document from the handlers; this module finishes it once, at start-up:

- **Bodies described by msgspec**, the library that validates them: every constraint where it
  applies (`timeout` > 0 as exclusiveMinimum, bounds inside the non-null branch of a nullable
  field), so the document is exactly as strict as the server.
- **One named component per concept** (TaskStatus, MaxAttempts, Seconds, ...): a generator then
  makes one enum or type for each, not one per field that uses it (`MaxAttempts1..5`, three
  identical status enums).
- **Auth as configured**: with a token the bearer scheme is required everywhere but /health;
  on a tokenless server nothing requires it, so a generated client works without one.
- What the handlers declare in their opt: `Location` on 201 (LOCATION_OPT), `ETag` and the
  conditional request headers with their 304 and 412 (api/conditional.py).
"""

from __future__ import annotations

import copy
import datetime
import functools
import html
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Router
from litestar.datastructures import ResponseHeader
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin

from api.conditional import ETAG_OPT, IF_MATCH_OPT, MAX_CONDITION_LENGTH
from api.static_files import StaticDirectory, static_router
from shared.queue_schemas import Concurrency, QueueInfo, QueueUpdate
from shared.schedule_schemas import (
    FireTimes,
    MaxAttempts,
    Missed,
    Overlap,
    Priority,
    Schedule,
    ScheduleCreate,
    ScheduleUpdate,
)
from shared.schemas import (
    PAYLOAD_TYPES,
    Attempt,
    HttpMethod,
    Seconds,
    Status,
    Task,
    TaskBatch,
    TaskBatchResult,
    TaskCreate,
    TaskPage,
)

REF = "#/components/schemas/"
DOCS_UI = Path(__file__).parent / "docs_ui"
# The structs that cross the API; msgspec describes them (and validates them).
API_STRUCTS: tuple[type[msgspec.Struct], ...] = (
    TaskCreate, TaskBatch, Task, TaskPage, TaskBatchResult, Attempt,
    ScheduleCreate, ScheduleUpdate, Schedule, FireTimes, *PAYLOAD_TYPES.values(),
    QueueInfo, QueueUpdate,
)
# Concepts used by more than one field: each becomes one component every use refers to.
NAMED_TYPES: dict[str, Any] = {
    "TaskStatus": Status, "MaxAttempts": MaxAttempts, "Priority": Priority,
    "Seconds": Seconds, "ScheduleOverlap": Overlap, "ScheduleMissed": Missed,
    "HttpMethod": HttpMethod, "QueueConcurrency": Concurrency,
}
# A handler's opt under this key: "201 carries Location, pointing at <this>".
LOCATION_OPT = "created_location"
# Ids are ULIDs in Crockford's base 32 (shared/ids.py); a task id is also the list's cursor.
# (An empty cursor, as a cleared form field sends it, is no cursor.)
ULID_PATTERN = "^[0-9A-HJKMNP-TV-Z]{26}$"
_PARAMETER_PATTERNS = {
    ("path", "task_id"): ULID_PATTERN, ("path", "schedule_id"): ULID_PATTERN,
    ("query", "cursor"): "^([0-9A-HJKMNP-TV-Z]{26})?$",
}
_PROBLEM = {"application/problem+json": {"schema": {"$ref": REF + "Problem"}}}
_ETAG_HEADER = {
    "description": "The resource's current version; send it back in If-Match to change it "
    "only if nobody else has (412 otherwise)",
    "schema": {"type": "string"},
}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def handler_opts(app: Litestar) -> dict[tuple[str, str], dict[str, Any]]:
    """(OpenAPI path, method) -> the opt of its handler: what shape() documents (Location,
    ETag, If-Match) is declared once, on the handler that does it."""
    found = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            for method in handler.http_methods:
                found[(route.path_format, method.lower())] = dict(handler.opt)
    return found


def shape(
    doc: dict[str, Any], *, token_required: bool,
    opts: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A finished copy of Litestar's document (which is left alone). opts: handler_opts()."""
    doc = copy.deepcopy(doc)
    opts = opts or {}
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_struct_components())
    _name_concepts(doc)
    for path, method, op in _operations(doc):
        _tidy_parameters(op)
        _describe_semantics(op, opts.get((path, method), {}))
        if not token_required:
            # A tokenless server (loopback only) asks nobody for credentials: no security
            # requirement, so a generated client needs no token, and no 401/403.
            op.pop("security", None)
            for code in ("401", "403"):
                op.get("responses", {}).pop(code, None)
    scheme = doc["components"].get("securitySchemes", {}).get("bearerAuth")
    if scheme is not None:
        scheme["description"] = (
            "LOCALFLOW_API_TOKEN. This server has one: every operation but /health needs it."
            if token_required else
            "LOCALFLOW_API_TOKEN. This server has none: no operation needs credentials."
        )
    return doc


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                yield path, method, item[method]


def _struct_components() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(API_STRUCTS, ref_template=REF + "{name}")
    for struct in API_STRUCTS:
        hints = typing.get_type_hints(struct)
        props = components[struct.__name__]["properties"]
        for name, hint in hints.items():
            if name in props and _is_datetime(hint):
                # msgspec says only "string"; generators turn date-time into datetime objects.
                for branch in props[name].get("anyOf", [props[name]]):
                    if branch.get("type") == "string":
                        branch["format"] = "date-time"
    # The task types the server knows, and the payload each takes (shared.schemas.PAYLOAD_TYPES).
    components["TaskType"] = {
        "title": "TaskType", "type": "string", "enum": sorted(PAYLOAD_TYPES),
        "description": "What runs the task; its payload has the matching shape",
    }
    for struct, type_field in (("TaskCreate", "type"), ("ScheduleCreate", "task_type"),
                               ("ScheduleUpdate", "task_type")):
        props = components[struct]["properties"]
        props[type_field] = {"$ref": REF + "TaskType"}
        if struct != "ScheduleUpdate":  # an update's payload merges with the stored type
            components[struct]["allOf"] = [
                {
                    "if": {"properties": {type_field: {"const": name}},
                           "required": [type_field]},
                    "then": {"properties": {"payload": {"$ref": REF + payload.__name__}}},
                }
                for name, payload in sorted(PAYLOAD_TYPES.items())
            ]
    # Examples: the docs page shows them, and fuzzers start from requests that work.
    components["TaskCreate"]["examples"] = [
        {"type": "shell", "payload": {"command": "echo", "args": ["hello"]}},
        {"type": "http", "payload": {"url": "http://127.0.0.1:9/ping", "method": "POST"},
         "delay": 60, "max_attempts": 3},
    ]
    components["ScheduleCreate"]["examples"] = [
        {"name": "nightly report", "cron_expr": "0 3 * * *", "task_type": "shell",
         "payload": {"command": "echo", "args": ["report"]}, "timezone": "Europe/Berlin"},
    ]
    create = components["TaskCreate"]
    # TaskCreate.__post_init__: run_at and delay exclude each other.
    create["not"] = {
        "required": ["run_at", "delay"],
        "properties": {"run_at": {"type": "string"}, "delay": {"type": "number"}},
    }
    create["description"] = (
        (create.get("description") or "") + " Give run_at or delay, not both."
    ).strip()
    return components


def _is_datetime(hint: Any) -> bool:
    return hint is datetime.datetime or datetime.datetime in typing.get_args(hint)


def _concept_key(schema: Any) -> Any:
    """What makes two schemas the same concept: enums by their values, the rest by content."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema:
        values = [v for v in schema["enum"] if v is not None]
        return ("enum", frozenset(values))
    # A field's default is the field's, not the concept's (it stays beside the $ref).
    concept = {k: v for k, v in schema.items() if k != "default"}
    return ("schema", msgspec.json.encode(concept, order="sorted"))


def _named_components() -> dict[str, dict[str, Any]]:
    named = {}
    for name, hint in NAMED_TYPES.items():
        schema = msgspec.json.schema(hint)
        if "enum" in schema:
            schema = {"type": "string", **schema}
        named[name] = {"title": name, **schema}
    return named


def _name_concepts(doc: dict[str, Any]) -> None:
    named = _named_components()
    by_key = {_concept_key(_untitled(s)): name for name, s in named.items()}
    by_key.update({_concept_key(msgspec.json.schema(NAMED_TYPES[n])): n for n in named})

    def visit(node: Any) -> Any:
        if isinstance(node, dict):
            name = by_key.get(_concept_key(node))
            if name is not None:
                ref: dict[str, Any] = {"$ref": REF + name}
                if "default" in node:
                    ref["default"] = node["default"]
                return ref
            return {k: visit(v) for k, v in node.items()}
        if isinstance(node, list):
            return [visit(v) for v in node]
        return node

    schemas = doc["components"]["schemas"]
    for key in list(schemas):
        schemas[key] = {k: visit(v) for k, v in schemas[key].items()}
    for _, _, op in _operations(doc):
        for param in op.get("parameters", []):
            if "schema" in param:
                param["schema"] = visit(_non_null(param["schema"]))
    schemas.update(named)


def _untitled(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "title"}


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query or header parameter is absent, never null: describe the value only,
    with Litestar's constraints (it puts them beside the oneOf) on the value itself."""
    schema = dict(schema)
    branches = schema.pop("oneOf", None)
    if branches is not None:
        values = [b for b in branches if b.get("type") != "null"]
        if len(values) == 1:
            schema = {**values[0], **schema}
        else:
            schema["oneOf"] = values
    if isinstance(schema.get("type"), list):
        types = [t for t in schema["type"] if t != "null"]
        schema["type"] = types[0] if len(types) == 1 else types
    if "enum" in schema:
        schema["enum"] = [v for v in schema["enum"] if v is not None]
    return schema


def _tidy_parameters(op: dict[str, Any]) -> None:
    for param in op.get("parameters", []):
        pattern = _PARAMETER_PATTERNS.get((param.get("in"), param.get("name")))
        if pattern is not None:
            param["schema"] = {**param.get("schema", {}), "pattern": pattern}
            param["schema"].pop("minLength", None)
        schema = param.get("schema", {})
        if param.get("in") == "query" and param.get("name") == "wait" and "minimum" not in schema:
            schema["exclusiveMinimum"] = 0  # Litestar drops gt=0 (api/tasks.py get_task)
        if param.get("in") == "query" and param.get("name") == "status" and \
                schema.get("type") == "array":
            schema["items"] = {"$ref": REF + "TaskStatus"}  # GET /api/events
        for bound in ("minimum", "maximum"):
            # Litestar writes integer bounds as floats (500.0); generators then type them float.
            if isinstance(schema.get(bound), float) and schema[bound].is_integer() and \
                    schema.get("type") == "integer":
                schema[bound] = int(schema[bound])


def _describe_semantics(op: dict[str, Any], opt: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    for response in responses.values():
        for header in response.get("headers", {}).values():
            # Litestar writes a documentation-only header (LocalFlow-Wait) with no schema,
            # which OpenAPI requires (schema or content).
            if "content" not in header and "$ref" not in header:
                header.setdefault("schema", {"type": "string"})
    where = opt.get(LOCATION_OPT)
    if where is not None and "201" in responses:
        responses["201"]["description"] = f"Created; Location is the URL of {where}"
        responses["201"].setdefault("headers", {})["Location"] = {
            "description": f"URL of {where}", "required": True,
            "schema": {"type": "string", "format": "uri-reference"},
        }
    if opt.get(ETAG_OPT):
        responses["200"].setdefault("headers", {})["ETag"] = _ETAG_HEADER
        responses["304"] = {"description": "If-None-Match named the current ETag: unchanged"}
        op.setdefault("parameters", []).append(_header_param(
            "If-None-Match", "ETag(s) the client holds; 304 when one is current"))
    if opt.get(IF_MATCH_OPT):
        ok = responses.get("200")
        if ok is not None and "content" in ok:
            ok.setdefault("headers", {})["ETag"] = _ETAG_HEADER
        responses["412"] = {
            "description": "If-Match named a version that is no longer current: someone else "
            "changed it; GET it again, reapply the change, send the new ETag",
            "content": _PROBLEM,
        }
        op.setdefault("parameters", []).append(_header_param(
            "If-Match", "Only if the resource's ETag is one of these (or * for any)"))


def _header_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name, "in": "header", "required": False, "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CONDITION_LENGTH},
    }


class DocumentJson(JsonRenderPlugin):
    """/schema/openapi.json: the shaped document, encoded once."""

    def __init__(self) -> None:
        super().__init__(path="/openapi.json")
        self._encoded: bytes | None = None

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        if self._encoded is None:
            self._encoded = msgspec.json.encode(document(request))
        return self._encoded


def document(request: Request) -> dict[str, Any]:
    return request.app.state.openapi_document


# The docs page loads only from this server; the browser refuses anything else before asking
# (Redoc's footer would fetch its logo from a CDN). Inline styles: Redoc's styled-components;
# blob: workers: its search index.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:; font-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
)


def docs_router(schema_path: str) -> Router:
    """The router Litestar puts the document, the docs page and the docs UI files on."""
    return Router(
        path=schema_path, route_handlers=[], include_in_schema=False,
        response_headers=[ResponseHeader(name="Content-Security-Policy", value=DOCS_CSP)],
    )


@functools.cache
def docs_ui_files() -> StaticDirectory:
    """Read (and gzipped) once per process, when first asked for."""
    return StaticDirectory(DOCS_UI)


class DocsPage(OpenAPIRenderPlugin):
    """/schema: Redoc from the vendored files in api/docs_ui (no CDN, no web fonts)."""

    def __init__(self, schema_path: str) -> None:
        super().__init__(path="/")
        self.schema_path = schema_path.rstrip("/")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(document(request)["info"]["title"]))
        script = f"{self.schema_path}/ui/{docs_ui_files().version}/redoc.standalone.js"
        return (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title} API</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<style>body{margin:0;font-family:system-ui,sans-serif}</style></head><body>"
            f"<redoc spec-url=\"{self.schema_path}/openapi.json\"></redoc>"
            f"<script src=\"{script}\"></script></body></html>"
        ).encode()

    def receive_router(self, router: Router) -> None:
        # Read on the first request for it: 1 MB that most processes never serve.
        router.register(static_router("/ui", docs_ui_files, "openapi-ui"))
