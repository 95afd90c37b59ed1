"""POST /api/tasks's fast path (api/fast_submit.py) answers exactly as Litestar's route does.

Every request below goes to two apps on two fresh SQLite files: the real app, and the same app
with the fast layer taken out (the Litestar route alone). Status, headers (less the per-request
ones) and body must be the same, ids and times aside; a counting layer behind the fast path
shows which requests it answered itself, so the comparison is known to cover it."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from api.fast_submit import FastSubmit
from tests import inproc

TOKEN = "fast-path-token-7c1e9a2b4d"
PLAIN = {"type": "shell", "payload": {"command": "true"}}
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
PER_REQUEST = {"x-request-id", "server-timing", "date"}


class Counting:
    """An ASGI layer that counts the requests that reach Litestar."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


def _fast_layer(client: Any) -> FastSubmit:
    layer = client.app.asgi_handler
    while not isinstance(layer, FastSubmit):
        layer = layer.app
    return layer


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def pair(request, tmp_path_factory) -> Iterator[tuple[Any, Any, Counting]]:
    """(fast app, Litestar-only app, the counter behind the fast path), each on its own file."""
    token = request.param
    env = {"LOCALFLOW_API_TOKEN": token} if token else {}
    base = tmp_path_factory.mktemp("fast")
    with inproc.serving(base / "fast.db", env, worker=False) as fast, \
            inproc.serving(base / "slow.db", env, worker=False) as slow:
        fast_layer = _fast_layer(fast)
        counter = fast_layer.app = Counting(fast_layer.app)
        slow_layer = _fast_layer(slow)
        # Litestar only: the layer above the fast one calls Litestar directly.
        above = slow.app.asgi_handler
        while above.app is not slow_layer:
            above = above.app
        above.app = slow_layer.app
        fast.token = token  # type: ignore[attr-defined]
        yield fast, slow, counter


def _answer(response: Any) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in PER_REQUEST}
    body: Any = response.content
    if response.headers.get("content-type", "").endswith("json"):
        body = json.loads(ULID.sub("*", response.text))  # ids in a 409's detail, say
    if isinstance(body, dict) and "id" in body:  # a task: its id and times differ
        for key in ("run_at", "created_at", "updated_at"):
            body[key] = "*"
        for key in ("location", "etag", "content-length"):
            headers[key] = "*"
    return response.status_code, headers, body


def _both(pair: Any, path: str = "/api/tasks", *, auth: bool = True, **kwargs: Any):
    fast, slow, _ = pair
    headers = dict(kwargs.pop("headers", {}))
    if auth and fast.token:
        headers["Authorization"] = f"Bearer {fast.token}"
    a = fast.post(path, headers=headers, **kwargs)
    b = slow.post(path, headers=headers, **kwargs)
    assert _answer(a) == _answer(b), (a.text, b.text)
    return a


def _rows(client: Any) -> int:
    with sqlite3.connect(client.db_path) as db:
        return db.execute("SELECT count(*) FROM tasks").fetchone()[0]


def test_a_plain_submission_is_answered_by_the_fast_path_as_litestar_would(pair):
    fast, _, counter = pair
    before, rows = counter.calls, _rows(fast)
    r = _both(pair, json={**PLAIN, "priority": 3, "delay": 60, "queue": "fastq"})
    assert counter.calls == before  # Litestar never saw it
    assert r.status_code == 201
    task = r.json()
    assert r.headers["location"] == f"/api/tasks/{task['id']}"
    auth = {"Authorization": f"Bearer {fast.token}"} if fast.token else {}
    assert fast.get(r.headers["location"], headers=auth).headers["etag"] == r.headers["etag"]
    assert (task["priority"], task["queue"], task["status"]) == (3, "fastq", "queued")
    assert _rows(fast) == rows + 1  # committed before the answer


def test_a_repeated_idempotency_key_in_the_body_is_200_with_the_same_task(pair):
    _, _, counter = pair
    first = _both(pair, json={**PLAIN, "idempotency_key": "k-1"})
    again = _both(pair, json={**PLAIN, "idempotency_key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    before = counter.calls
    conflict = _both(pair, json={**PLAIN, "priority": 9, "idempotency_key": "k-1"})
    assert conflict.status_code == 409  # from the store, through the app's own handler
    assert counter.calls == before


@pytest.mark.parametrize(("body", "status"), [
    (b'{"type":"shell"}', 422),
    (b'{"type":"shell","payload":{"command":"true"},"priority":"1"}', 422),
    (b'{"type":"shell","type":"http","payload":{"command":"true"}}', 400),
    (b'{"type":"shell","payload":{"command":"true"}', 400),
    (b'\xff{"type":"shell"}', 400),
    (b'[1, 2]', 422),
    (b'{"type":"nope","payload":{}}', 422),
    (b'{"type":"shell","payload":{"command":"true"},"run_at":"2099-01-01T00:00:00Z"}', 422),
    (b'{"type":"shell","payload":{"command":"true","timeout":-1}}', 422),
    (b'{"type":"shell","payload":{"command":"true"},"queue":"no spaces"}', 422),
    (b"   ", 400),
])
def test_refused_bodies_get_litestars_answer_and_change_nothing(pair, body, status):
    fast, _, _ = pair
    rows = _rows(fast)
    r = _both(pair, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert _rows(fast) == rows


@pytest.mark.parametrize("headers", [
    {"Idempotency-Key": "hdr-1"},
    {"Idempotency-Key": ""},
    {"If-Match": '"x"'},
    {"If-None-Match": "*"},
    {"content-type": "text/plain"},
])
def test_requests_the_fast_path_leaves_to_litestar(pair, headers):
    _, _, counter = pair
    before = counter.calls
    _both(pair, json=PLAIN, headers=headers)
    assert counter.calls == before + (0 if headers.get("content-type") else 1)


def test_a_query_string_and_an_empty_body_go_to_litestar(pair):
    _, _, counter = pair
    before = counter.calls
    _both(pair, "/api/tasks?x=1", json=PLAIN)
    _both(pair, content=b"", headers={"content-type": "application/json"})
    assert counter.calls == before + 2


def test_without_the_right_token_litestar_answers(pair):
    """With a token set, a missing or wrong one is refused (401) by Litestar's bearer check,
    never by the fast path; an open server ignores the header on both paths (201, fast)."""
    fast, _, counter = pair
    before = counter.calls
    for headers in ({}, {"Authorization": "Bearer wrong-token-123456"},
                    {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        r = _both(pair, auth=False, json=PLAIN, headers=headers)
        assert r.status_code == (401 if fast.token else 201)
    assert counter.calls == before + (4 if fast.token else 0)


def _asgi_post(client: Any, messages: list[dict[str, Any]], length: int) -> list[dict[str, Any]]:
    """POST /api/tasks straight into the app over ASGI, the body in the given messages."""
    sent: list[dict[str, Any]] = []
    headers = [(b"host", client.settings.addr.encode()), (b"content-type", b"application/json"),
               (b"content-length", str(length).encode())]
    if client.token:
        headers.append((b"authorization", f"Bearer {client.token}".encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/tasks", "raw_path": b"/api/tasks", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080), "state": {},
    }
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def call() -> None:
        await client.app(scope, receive, send)

    client.blocking_portal.call(call)
    return sent


def test_a_body_in_several_pieces_is_read_whole(pair):
    fast, _, counter = pair
    body = json.dumps({**PLAIN, "payload": {"command": "echo", "args": ["x" * 3000] * 10}})
    raw = body.encode()
    thirds = [raw[:1000], raw[1000:20000], raw[20000:]]
    before, rows = counter.calls, _rows(fast)
    sent = _asgi_post(fast, [
        {"type": "http.request", "body": part, "more_body": i < 2}
        for i, part in enumerate(thirds)
    ], len(raw))
    assert sent[0]["status"] == 201 and counter.calls == before
    task = json.loads(sent[1]["body"])
    assert task["payload"]["args"] == ["x" * 3000] * 10
    assert _rows(fast) == rows + 1


def test_a_client_gone_mid_body_reaches_litestar_and_nothing_is_queued(pair):
    fast, _, counter = pair
    raw = json.dumps(PLAIN).encode()
    before, rows = counter.calls, _rows(fast)
    _asgi_post(fast, [{"type": "http.request", "body": raw[:10], "more_body": True}], len(raw))
    assert counter.calls == before + 1  # Litestar read the same messages again, then gave up
    assert _rows(fast) == rows
