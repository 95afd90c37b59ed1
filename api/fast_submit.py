"""POST /api/tasks, the hot path, without Litestar's per-request machinery.

A submission through Litestar builds a Request, a ScopeState, a signature model, resolves the
queue dependency, runs the before_request hook and the bearer-token middleware, and builds a
Response, its headers and an ASGIResponse: about 150 us of a ~250 us submission (bench/README.md,
"The single-submit fast path"). For the plain case this layer does only what that path does
for it: the same checks, the same decoding (shared/json_input.py, strictly, into TaskCreate),
the same Queue.enqueue (a commit with synchronous=FULL before the answer), and the same answer,
byte for byte (201 or 200, Location, ETag, the Task as JSON).

Anything else goes on to Litestar untouched, so every refusal keeps its one definition there:
a query string, a conditional or Idempotency-Key header, a chunked or empty or large body, a
missing or wrong token, a body that does not decode. A body already read is handed on as it
came (the receive is replayed). A refusal from the queue or the store (422, 409, 503, 507,
500) is answered by the app's own exception handlers (api/errors.py), as Litestar would.

Outside this layer, as for every request: the request id, metrics and logs, the path's one
spelling and the browser guard (api/front_door.py), and who is acting (api/audit_context.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.body import INLINE_BYTES
from api.conditional import task_etag
from api.errors import EXCEPTION_HANDLERS
from shared.json_input import BodyError, decode
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.tokens import bearer_of, token_matches

PATH = "/api/tasks"
# The route's template, as Litestar's router records it for metrics (api/front_door.py).
TEMPLATE = "/api/tasks"
# Headers whose meaning Litestar's path decides (a 400 for a condition the route ignores, the
# Idempotency-Key header's checks, a chunked body): with any of them, the request goes there.
_LITESTAR_DECIDES = frozenset({
    b"if-match", b"if-none-match", b"if-unmodified-since", b"idempotency-key",
    b"transfer-encoding",
})
_JSON = (b"content-type", b"application/json")
_encode = msgspec.json.Encoder().encode


class FastSubmit:
    def __init__(self, app: ASGIApp, queue: Queue, api_token: str | None) -> None:
        self.app = app
        self.queue = queue
        self.token = api_token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH
            or scope["query_string"]
        ):
            await self.app(scope, receive, send)
            return
        length = self._plain_length(scope["headers"])
        if length is None:
            await self.app(scope, receive, send)
            return
        body, messages = await _read_body(receive, length)
        if body is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        try:
            create = decode(body, TaskCreate)
        except BodyError:  # Litestar's path words the refusal (api/body.py, api/errors.py)
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["path_template"] = TEMPLATE
        try:
            task, created = await self.queue.enqueue(create)
        except Exception as exc:  # answered as Litestar's exception middleware would
            await _problem(scope, receive, send, exc)
            return
        encoded = _encode(task)
        await send({
            "type": "http.response.start", "status": 201 if created else 200,
            "headers": [
                (b"location", f"/api/tasks/{task.id}".encode()),
                (b"etag", task_etag(task).encode()),
                _JSON,
                (b"content-length", str(len(encoded)).encode()),
            ],
        })
        await send({"type": "http.response.body", "body": encoded, "more_body": False})

    def _plain_length(self, headers: Any) -> int | None:
        """The body's length if this request is the plain case, else None (Litestar's path)."""
        length: bytes | None = None
        authorization: bytes | None = None
        for name, value in headers:
            if name == b"content-length":
                if length is not None:
                    return None
                length = value
            elif name == b"authorization":
                if authorization is not None:
                    return None
                authorization = value
            elif name in _LITESTAR_DECIDES:
                return None
        if self.token is not None:
            given = bearer_of(authorization.decode("latin-1") if authorization else None)
            # The right token is always accepted (shared/tokens.py); anything else is
            # answered (401, 403, 429) by the bearer middleware.
            if not given or not token_matches(given, self.token):
                return None
        if length is None or not length.isdigit():
            return None
        size = int(length)
        return size if 0 < size <= INLINE_BYTES else None


async def _read_body(receive: Receive, length: int) -> tuple[bytes | None, list[Message]]:
    """(the body, the messages it came in); the body None if it is not `length` bytes or the
    client went away: then Litestar's path reads the messages again and answers."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > length:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size != length:
        return None, messages
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def _handler_of(exc: Exception) -> Callable[[Any, Any], Any]:
    for cls in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(cls)
        if handler is not None:
            return handler
    return EXCEPTION_HANDLERS[Exception]


async def _problem(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """The answer the app's exception handlers give for `exc` (as Litestar's exception
    middleware would send it)."""
    app: Litestar = scope["litestar_app"]
    request = app.request_class(scope=scope, receive=receive, send=send)
    response = _handler_of(exc)(request, exc)
    await response.to_asgi_response(app=None, request=request, type_encoders=app.type_encoders)(
        scope, receive, send
    )
