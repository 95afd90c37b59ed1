"""Inputs a client can get wrong, refused at the door: bodies that are not JSON a person meant
(400), values of the wrong kind or out of their window (422 naming the field), and paths that
are spelled differently from the route they reach (guarded exactly like it). Over real HTTP,
against a real `localflow serve` on its own database file; nothing refused may be written."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e

JSON = {"content-type": "application/json"}
ECHO = {"type": "shell", "payload": {"command": "echo", "args": ["hi"]}}
LATER = {**ECHO, "delay": 3600}  # a task that will not run during the test
SCHEDULE = {"name": "s", "cron_expr": "0 9 * * MON-FRI", "task_type": "shell",
            "payload": {"command": "echo"}, "enabled": False}
TOKEN = "input-validation-token-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[procs.Proc]:
    proc = procs.start("serve", tmp_path_factory.mktemp("input") / "input.db")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def schedule_id(api) -> str:
    r = api.post("/api/schedules", json=SCHEDULE)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def rows(server: procs.Proc) -> tuple[int, int, str]:
    """Tasks, schedules and the stored schedules' text: what a refusal must leave unchanged."""
    with sqlite3.connect(server.log_path.parent / "input.db") as conn:
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        schedules = conn.execute("SELECT count(*) FROM schedules").fetchone()[0]
        text = repr(conn.execute("SELECT * FROM schedules ORDER BY id").fetchall())
    return tasks, schedules, text


def problem(r: httpx.Response, status: int, *mentions: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    for text in mentions:
        assert text in body["detail"], body
    return body


def fields(body: dict) -> list[str | None]:
    return [e["field"] for e in body.get("errors", [])]


class LogWatch:
    """New lines of the server's log since the start: no traceback may appear in them."""

    def __init__(self, server: procs.Proc) -> None:
        self.server = server
        self.start = len(server.log())

    def assert_clean(self) -> None:
        new = self.server.log()[self.start:]
        assert "Traceback" not in new and "unhandled error" not in new, new[-3000:]


@pytest.fixture
def clean(server) -> Iterator[None]:
    """Every test here: nothing written by a refusal is checked in the test; no traceback."""
    watch = LogWatch(server)
    yield
    watch.assert_clean()


# -- 12: bodies that are not the JSON a person meant --------------------------------------

DEEP = 5000
BAD_BODIES = [
    pytest.param(b'{"type": "shell\xff", "payload": {"command": "echo"}}', 400, "UTF-8",
                 id="invalid-utf8-in-string"),
    pytest.param(b'{"type": "shell", "payload": {"command": "echo", "args": ["\xc3\x28"]}}',
                 400, "UTF-8", id="invalid-utf8-continuation"),
    pytest.param("{\"type\": \"shell\"}".encode("utf-16"), 400, "UTF-8", id="utf16"),
    pytest.param(b"[" * DEEP + b"]" * DEEP, 400, "nested", id="arrays-5000-deep"),
    pytest.param(b'{"type":"shell","payload":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
                 400, "nested", id="objects-5000-deep-in-payload"),
    pytest.param(b'{"type":"http","payload":{"url":"http://127.0.0.1:1/","json":'
                 + b"[" * 300 + b"]" * 300 + b"}}", 400, "nested", id="json-300-deep"),
    pytest.param(b'{"type": "shell", "payload": {"command": "ec', 400, "truncated",
                 id="truncated"),
    pytest.param(b"", 400, "body", id="empty"),
    pytest.param(b"null", 422, "object", id="null"),
    pytest.param(b"[1, 2]", 422, "object", id="array"),
    pytest.param(b'"shell"', 422, "object", id="string"),
    pytest.param(b"42", 422, "object", id="number"),
    pytest.param(b"1e999", 400, "range", id="huge-float-alone"),
    pytest.param(b'{"type":"shell","payload":{"command":"echo"},"priority":1e999}', 400,
                 "range", id="huge-float"),
    pytest.param(b'{"type":"shell","payload":{"command":"echo"},"priority":'
                 b'123456789012345678901234567890}', 422, "priority", id="huge-int"),
    pytest.param(b'{"type":"shell","payload":{"command":"echo","args":[' + b"9" * 5000
                 + b"]}}", 400, "range", id="5000-digit-int"),
    pytest.param(b'{"type":"shell","payload":{"command":"echo"},"timeout":NaN}', 400,
                 "malformed", id="nan"),
    pytest.param(b'{"type":"shell","payload":{"command":"echo"},"timeout":Infinity}', 400,
                 "malformed", id="infinity"),
    pytest.param(b'{"type":"shell","type":"http","payload":{"command":"echo"}}', 400,
                 "duplicate", id="duplicate-key"),
    pytest.param(b'{"type":"shell","payload":{"command":"echo","env":{"A":"1","A":"2"}}}', 400,
                 "duplicate", id="duplicate-key-nested"),
    # Colons, quotes and escapes inside strings must not hide a repeated key from the count.
    pytest.param(b'{"type":"shell","payload":{"command":"a:\\":b","env":{"K:":"x:","K:":"y"}}}',
                 400, "duplicate", id="duplicate-key-among-colons"),
    pytest.param(b'{"type":"shell","payload":{"command":"echo","env":{"A":"1","\\u0041":"2"}}}',
                 400, "duplicate", id="duplicate-key-escaped"),
]


@pytest.mark.parametrize(("body", "status", "mention"), BAD_BODIES)
@pytest.mark.parametrize("route", ["/api/tasks", "/api/tasks/batch", "/api/schedules",
                                   "PUT /api/schedules/{id}"])
def test_bad_bodies_are_client_errors_and_write_nothing(
    server, api, schedule_id, clean, route, body, status, mention
):
    method, _, path = route.rpartition(" ")
    path = path.replace("{id}", schedule_id)
    before = rows(server)
    r = api.request(method or "POST", path, content=body, headers=JSON)
    if status == 422 and route != "/api/tasks" and mention == "priority":
        # The same number is out of range wherever it goes; only the field differs.
        assert r.status_code in (400, 422), r.text
    else:
        got = problem(r, status)
        assert mention.lower() in got["detail"].lower(), got
    assert 400 <= r.status_code < 500
    assert "Traceback" not in r.text
    assert rows(server) == before


def test_a_body_over_the_limit_is_413_on_every_json_route(server, api, schedule_id, clean):
    huge = b'{"name": "' + b"a" * 2_000_000 + b'"}'
    before = rows(server)
    for method, path in (("POST", "/api/tasks"), ("POST", "/api/tasks/batch"),
                         ("POST", "/api/schedules"), ("PUT", f"/api/schedules/{schedule_id}")):
        problem(api.request(method, path, content=huge, headers=JSON), 413, "limit")
    # The same without a Content-Length: chunks are counted as they arrive.
    chunks = (huge[i:i + 65536] for i in range(0, len(huge), 65536))
    problem(api.post("/api/tasks", content=chunks, headers=JSON), 413, "limit")
    assert rows(server) == before


def raw_exchange(server: procs.Proc, request: bytes, *, half_close: bool = False) -> bytes:
    """One request on its own socket, bytes exactly as given; everything the server sends."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def raw_request(method: str, target: str, body: bytes = b"", *, content_length: int | None = None,
                host: str = "127.0.0.1", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        if value:
            lines.append(f"{name}: {value}")
    length = len(body) if content_length is None else content_length
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_a_content_length_that_lies_writes_nothing(server, clean):
    before = rows(server)
    body = b'{"type": "shell", "payload": {"command": "echo"}}'
    # Shorter than the body: the server reads a truncated document.
    shorter = raw_exchange(server, raw_request("POST", "/api/tasks", body, content_length=20))
    assert status_of(shorter) == 400, shorter[:300]
    # Longer than the body, then the client stops sending: no answer is owed, nothing written.
    longer = raw_exchange(server, raw_request("POST", "/api/tasks", body, content_length=500),
                          half_close=True)
    assert status_of(longer) in (0, 400), longer[:300]
    # Not a number at all: the HTTP layer refuses it.
    bad = raw_exchange(server, raw_request("POST", "/api/tasks", body, content_length=None,
                                           headers={"Content-Length": "ten"})
                       .replace(f"Content-Length: {len(body)}\r\n".encode(), b""))
    assert status_of(bad) in (0, 400), bad[:300]
    assert rows(server) == before


# -- 13: one path for every guard ----------------------------------------------------------

SPELLINGS = ["//api/tasks", "///api/tasks", "/api//tasks", "/api/tasks/", "//api//tasks//",
             "/%2Fapi/tasks", "/api%2Ftasks", "/api%2ftasks", "/api/%74asks", "/%61pi/tasks"]
DOT_SEGMENTS = ["/api/./tasks", "/./api/tasks", "/x/../api/tasks", "/api/tasks/.",
                "/api/%2e/tasks", "/api/tasks/..", "/dashboard/../api/tasks"]
ECHO_BYTES = b'{"type": "shell", "payload": {"command": "echo", "args": ["pwned"]}, "delay": 3600}'


@pytest.mark.parametrize("target", SPELLINGS)
def test_every_spelling_of_a_route_is_guarded_like_the_route(server, clean, target):
    before = rows(server)
    plain = raw_exchange(server, raw_request("POST", target, ECHO_BYTES,
                                             headers={"Content-Type": "text/plain"}))
    assert status_of(plain) == 415, plain[:400]
    cross = raw_exchange(server, raw_request("POST", target, ECHO_BYTES,
                                             headers={"Origin": "https://evil.example"}))
    assert status_of(cross) == 403, cross[:400]
    rebound = raw_exchange(server, raw_request("POST", target, ECHO_BYTES, host="evil.example"))
    assert status_of(rebound) == 403, rebound[:400]
    assert rows(server) == before
    # And JSON from this machine reaches the route, as on its canonical path.
    ok = raw_exchange(server, raw_request("POST", target, ECHO_BYTES))
    assert status_of(ok) == 201, ok[:400]


@pytest.mark.parametrize("target", DOT_SEGMENTS)
def test_dot_segments_are_refused_whatever_the_body(server, clean, target):
    before = rows(server)
    for ctype in ("text/plain", "application/json"):
        answer = raw_exchange(server, raw_request("POST", target, ECHO_BYTES,
                                                  headers={"Content-Type": ctype}))
        assert status_of(answer) == 400, answer[:400]
        assert b"application/problem+json" in answer and b"path" in answer
    assert rows(server) == before


def test_with_a_token_every_spelling_needs_it(tmp_path):
    proc = procs.start("serve", tmp_path / "token.db", env={"LOCALFLOW_API_TOKEN": TOKEN})
    try:
        for target in SPELLINGS:
            answer = raw_exchange(proc, raw_request("POST", target, ECHO_BYTES))
            assert status_of(answer) == 401, (target, answer[:300])
            answer = raw_exchange(proc, raw_request("GET", target))
            assert status_of(answer) == 401, (target, answer[:300])
        assert procs.task_count(tmp_path / "token.db") == 0
        answer = raw_exchange(proc, raw_request(
            "POST", "//api//tasks/", ECHO_BYTES, headers={"Authorization": f"Bearer {TOKEN}"}))
        assert status_of(answer) == 201, answer[:300]
    finally:
        proc.stop()


# -- 14 and 15.9: lax values refused with the field named ----------------------------------

def _shell(**payload) -> dict:
    return {**LATER, "payload": {"command": "echo", **payload}}


def _http(url: str = "http://127.0.0.1:1/", **payload) -> dict:
    return {"type": "http", "payload": {"url": url, **payload}, "delay": 3600}


def _at(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


NOW = datetime.now(UTC)
LAX_TASKS = [
    pytest.param({**LATER, "priority": "1"}, "priority", id="priority-as-string"),
    pytest.param({**ECHO, "timeout": "5"}, "timeout", id="timeout-as-string"),
    pytest.param({**ECHO, "max_attempts": "3"}, "max_attempts", id="max-attempts-as-string"),
    pytest.param({**ECHO, "delay": "60"}, "delay", id="delay-as-string"),
    pytest.param({**ECHO, "priority": True}, "priority", id="priority-as-bool"),
    pytest.param({**ECHO, "priority": 1.5}, "priority", id="priority-as-float"),
    pytest.param({**ECHO, "run_at": "0001-01-01T00:00:00Z"}, "run_at", id="run-at-year-1"),
    pytest.param({**ECHO, "run_at": "9999-12-31T23:59:59Z"}, "run_at", id="run-at-year-9999"),
    pytest.param({**ECHO, "run_at": _at(NOW + timedelta(days=400))}, "run_at",
                 id="run-at-400-days-ahead"),
    pytest.param({**ECHO, "run_at": _at(NOW - timedelta(days=40))}, "run_at",
                 id="run-at-40-days-ago"),
    pytest.param({**ECHO, "run_at": 1767225600}, "run_at", id="run-at-as-number"),
    pytest.param({**ECHO, "delay": 5, "run_at": _at(NOW)}, "run_at", id="run-at-and-delay"),
    pytest.param(_shell(env={"A": "b\u0000c"}), "payload.env", id="nul-in-env-value"),
    pytest.param(_shell(env={"A\u0000B": "c"}), "payload.env", id="nul-in-env-name"),
    pytest.param(_shell(env={"A=B": "c"}), "payload.env", id="equals-in-env-name"),
    pytest.param(_shell(args=["ok", "a\u0000b"]), "payload.args[1]", id="nul-in-args"),
    pytest.param({**LATER, "payload": {"command": "ec\u0000ho"}}, "payload.command",
                 id="nul-in-command"),
    pytest.param(_shell(env={"A": 1}), "payload.env", id="env-value-number"),
    pytest.param(_http(headers={"X-Name": "caf\u00e9"}), "payload.headers",
                 id="non-ascii-header-value"),
    pytest.param(_http(headers={"X-Caf\u00e9": "1"}), "payload.headers",
                 id="non-ascii-header-name"),
    pytest.param(_http(headers={"X Name": "1"}), "payload.headers", id="space-in-header-name"),
    pytest.param(_http(headers={"X-A": "1\r\nX-B: 2"}), "payload.headers",
                 id="crlf-in-header-value"),
    pytest.param(_http(headers={"X-A": " padded "}), "payload.headers",
                 id="header-value-padded"),
    pytest.param(_http(headers={"X-A": "a\u0000"}), "payload.headers", id="nul-in-header"),
    pytest.param(_http(headers={"Content-Length": "5"}), "payload.headers",
                 id="content-length-header"),
    pytest.param(_http(headers={"transfer-encoding": "gzip"}), "payload.headers",
                 id="transfer-encoding-header"),
    pytest.param(_http("http://0177.0.0.1/"), "payload.url", id="octal-ip"),
    pytest.param(_http("http://0x7f.0.0.1/"), "payload.url", id="hex-ip-part"),
    pytest.param(_http("http://0x7f.1/"), "payload.url", id="hex-short-ip"),
    pytest.param(_http("http://2130706433/"), "payload.url", id="integer-ip"),
    pytest.param(_http("http://0x7f000001/"), "payload.url", id="hex-integer-ip"),
    pytest.param(_http("http://017700000001/"), "payload.url", id="octal-integer-ip"),
    pytest.param(_http("http://127.1/"), "payload.url", id="short-ip"),
    pytest.param(_http("http://127.0.0.1.1/"), "payload.url", id="five-part-ip"),
    pytest.param(_http("http://256.0.0.1/"), "payload.url", id="ip-part-too-big"),
    pytest.param(_http("http://example.123/"), "payload.url", id="numeric-last-label"),
    pytest.param(_http("http://127.0.0.1./"), "payload.url", id="ip-with-trailing-dot"),
    pytest.param(_http("http://[::ffff:0177.0.0.1]/"), "payload.url", id="octal-in-ipv6"),
    pytest.param(_http("http://ex%61mple.com/"), "payload.url", id="percent-in-host"),
    pytest.param(_http("http://a..b/"), "payload.url", id="empty-label"),
    pytest.param(_http("http://exa mple.com/"), "payload.url", id="space-in-host"),
    pytest.param({"type": "nope", "payload": {}}, "type", id="unknown-type"),
    pytest.param({"type": "shell", "payload": {}}, "payload.command", id="missing-command"),
    pytest.param({"type": "http", "payload": {}}, "payload.url", id="missing-url"),
    pytest.param({"type": "shell"}, "payload", id="missing-payload"),
    pytest.param({"type": "shell", "payload": {"command": "echo", "bogus": 1}},
                 "payload.bogus", id="unknown-payload-field"),
    pytest.param({"type": "shell", "payload": {"command": "echo", "args": [1]}},
                 "payload.args[0]", id="arg-not-a-string"),
    pytest.param({**ECHO, "priority": 5000}, "priority", id="priority-out-of-range"),
    pytest.param({**ECHO, "bogus": 1}, "bogus", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "field"), LAX_TASKS)
def test_lax_values_are_refused_naming_the_field(server, api, clean, body, field):
    before = rows(server)
    got = problem(api.post("/api/tasks", json=body), 422)
    assert field in fields(got), got
    assert field in got["detail"], got
    assert rows(server) == before


@pytest.mark.parametrize(("body", "field"), LAX_TASKS)
def test_the_batch_names_the_item_and_its_field(server, api, clean, body, field):
    before = rows(server)
    batch = {"tasks": [LATER, LATER, LATER, body]}
    got = problem(api.post("/api/tasks/batch", json=batch), 422)
    assert f"tasks[3].{field}" in fields(got), got
    assert "tasks[3]" in got["detail"], got
    assert rows(server) == before


LAX_SCHEDULES = [
    pytest.param({"cron_expr": "1-0 * * * *"}, "cron_expr", id="reversed-minute-range"),
    pytest.param({"cron_expr": "0 23-1 * * *"}, "cron_expr", id="reversed-hour-range"),
    pytest.param({"cron_expr": "0 0 * * SAT-SUN"}, "cron_expr", id="reversed-day-names"),
    pytest.param({"cron_expr": "*/1000 * * * *"}, "cron_expr", id="minute-step-1000"),
    pytest.param({"cron_expr": "0 */25 * * *"}, "cron_expr", id="hour-step-25"),
    pytest.param({"cron_expr": "0 0 1-31/32 * *"}, "cron_expr", id="day-step-32"),
    pytest.param({"cron_expr": "0 0 1 */13 *"}, "cron_expr", id="month-step-13"),
    pytest.param({"cron_expr": "0 0 * * */8"}, "cron_expr", id="weekday-step-8"),
    pytest.param({"priority": "1"}, "priority", id="priority-as-string"),
    pytest.param({"timeout": "5"}, "timeout", id="timeout-as-string"),
    pytest.param({"enabled": "yes"}, "enabled", id="enabled-as-string"),
    pytest.param({"enabled": 1}, "enabled", id="enabled-as-number"),
    pytest.param({"payload": {"command": "echo", "env": {"A": "\u0000"}}}, "payload",
                 id="nul-in-env"),
    pytest.param({"task_type": "http", "payload": {"url": "http://0177.0.0.1/"}}, "payload",
                 id="octal-ip"),
    pytest.param({"task_type": "http", "payload": {"url": "http://x.test/",
                                                   "headers": {"X": "caf\u00e9"}}},
                 "payload", id="non-ascii-header"),
    pytest.param({"task_type": "nope"}, "task_type", id="unknown-task-type"),
    pytest.param({"payload": {}}, "payload", id="missing-command"),
]


@pytest.mark.parametrize(("change", "field"), LAX_SCHEDULES)
def test_lax_schedules_are_refused_naming_the_field(
    server, api, schedule_id, clean, change, field
):
    before = rows(server)
    got = problem(api.post("/api/schedules", json={**SCHEDULE, **change}), 422)
    assert any(f and f.startswith(field) for f in fields(got)), got
    got = problem(api.put(f"/api/schedules/{schedule_id}", json=change), 422)
    assert any(f and f.startswith(field) for f in fields(got)), got
    assert rows(server) == before


def test_a_schedule_needs_its_payload(server, api, clean):
    body = {k: v for k, v in SCHEDULE.items() if k != "payload"}
    got = problem(api.post("/api/schedules", json=body), 422)
    assert "payload" in fields(got), got


@pytest.mark.parametrize("cursor", ["garbage", "~", "!!!!", "0" * 25, "I" * 26, "u" * 26,
                                    "01ARZ3NDEKTSV4RRFFQ69G5FA" + "!"])
def test_a_cursor_that_is_no_task_id_is_refused(api, clean, cursor):
    got = problem(api.get("/api/tasks", params={"cursor": cursor}), 422)
    assert "cursor" in fields(got) and "cursor" in got["detail"], got


def test_an_idempotency_key_mismatch_names_the_field(api, clean):
    got = problem(api.post("/api/tasks", json={**LATER, "idempotency_key": "a"},
                           headers={"Idempotency-Key": "b"}), 422)
    assert "idempotency_key" in fields(got), got


# -- what stays accepted --------------------------------------------------------------------

GOOD_TASKS = [
    pytest.param({**ECHO, "run_at": _at(NOW + timedelta(days=300))}, id="run-at-300-days"),
    pytest.param({**ECHO, "run_at": _at(NOW - timedelta(days=20)), "delay": None,
                  "priority": -1000}, id="run-at-20-days-ago-runs-now"),
    pytest.param({**LATER, "timeout": 5, "priority": 7, "max_attempts": 2}, id="numbers"),
    pytest.param({**LATER, "timeout": 2.5}, id="float-timeout"),
    pytest.param(_shell(env={"LANG": "C.UTF-8", "NAME": "caf\u00e9"}), id="unicode-env"),
    pytest.param(_shell(args=["caf\u00e9", "a b", ""]), id="unicode-args"),
    pytest.param(_http(headers={"X-Token": "a b\tc", "Accept": "*/*", "X-Empty": ""}),
                 id="headers"),
    pytest.param(_http("http://[::1]:1/"), id="ipv6"),
    pytest.param(_http("http://localhost:1/x?y=1"), id="localhost"),
    pytest.param(_http("http://b\u00fccher.example/"), id="idn"),
    pytest.param(_http("http://my_host.internal:8080/"), id="underscore-name"),
    pytest.param(_http("https://10.0.0.1/", json={"a": [[[[1]]]]}), id="nested-json-ok"),
]


@pytest.mark.parametrize("body", GOOD_TASKS)
def test_sound_values_stay_accepted(api, clean, body):
    r = api.post("/api/tasks", json={k: v for k, v in body.items() if v is not None})
    assert r.status_code == 201, r.text
    assert api.delete(f"/api/tasks/{r.json()['id']}").status_code in (204, 409)


@pytest.mark.parametrize("expr", ["*/5 * * * *", "0 9 * * MON-FRI", "0 0 1 * *", "30 14 * * 6",
                                  "*/60 * * * *", "0 */24 * * *", "0 0 * * 5-7",
                                  "0 0 L * *", "0 0 * * FRI#2", "0-30/10 * * * *", "5/15 * * * *",
                                  "0 22,23,0,1 * * *", "@hourly", "0 0 1-31/31 * *"])
def test_sound_cron_expressions_stay_accepted(api, clean, expr):
    r = api.post("/api/schedules", json={**SCHEDULE, "cron_expr": expr})
    assert r.status_code == 201, r.text
    assert api.delete(f"/api/schedules/{r.json()['id']}").status_code == 204


def test_a_real_cursor_still_pages(api, clean):
    # Four tasks of its own, so it pages the same alone or after the module's other tests:
    # the newest four are these, two a page.
    ids = {api.post("/api/tasks", json=LATER).json()["id"] for _ in range(4)}
    first = api.get("/api/tasks", params={"limit": 2}).json()
    assert first["next_cursor"]
    second = api.get("/api/tasks", params={"limit": 2, "cursor": first["next_cursor"]})
    assert second.status_code == 200, second.text
    seen = [t["id"] for t in first["items"] + second.json()["items"]]
    assert set(seen) == ids and len(seen) == 4


def test_the_schema_requires_payload_as_the_server_does(api):
    schemas = api.get("/schema/openapi.json").json()["components"]["schemas"]
    for name in ("TaskCreate", "ScheduleCreate"):
        assert "payload" in schemas[name]["required"], schemas[name]


def test_a_schedule_saved_before_the_cron_rules_keeps_firing_as_it_did(server, api, clean):
    """`0 23-1 * * *` was accepted (croniter wraps it around midnight): a stored one still
    fires and previews; only saving it again applies the rule."""
    from shared import cron

    assert sorted(t.hour for t in cron.preview("0 23-1 * * *", n=3, after=0, saved=True)) == [
        0, 1, 23]
    with pytest.raises(cron.CronError, match="runs backwards"):
        cron.validate("0 23-1 * * *")
    created = api.post("/api/schedules", json={**SCHEDULE, "cron_expr": "0 23 * * *"}).json()
    with sqlite3.connect(server.log_path.parent / "input.db") as conn:
        conn.execute("UPDATE schedules SET cron_expr = '0 23-1 * * *' WHERE id = ?",
                     (created["id"],))
    r = api.get(f"/api/schedules/{created['id']}/next", params={"n": 3})
    assert r.status_code == 200, r.text
    assert sorted(datetime.fromisoformat(t).hour for t in r.json()["times"]) == [0, 1, 23]
    got = problem(api.put(f"/api/schedules/{created['id']}", json={"name": "renamed"}), 422)
    assert "cron_expr" in fields(got)
    assert api.delete(f"/api/schedules/{created['id']}").status_code == 204


def test_large_bodies_get_the_same_checks(server, api, clean):
    """Bodies above 64 KiB are checked off the event loop (api/body.py): the same answers."""
    import msgspec

    items = [msgspec.json.encode({**LATER, "payload": {"command": "echo", "args": ["x" * 100]}})
             for _ in range(800)]
    head = b'{"tasks": [' + b",".join(items)
    assert len(head) > 64 * 1024
    before = rows(server)
    dup = head + b', {"type": "shell", "type": "shell", "payload": {"command": "echo"}}]}'
    problem(api.post("/api/tasks/batch", content=dup, headers=JSON), 400, "duplicate")
    lax = head + b', {"type": "shell", "payload": {"command": "echo"}, "priority": "1"}]}'
    got = problem(api.post("/api/tasks/batch", content=lax, headers=JSON), 422)
    assert fields(got) == ["tasks[800].priority"], got
    deep = head + b", " + b"[" * 100 + b"]" * 100 + b"]}"
    problem(api.post("/api/tasks/batch", content=deep, headers=JSON), 400, "nested")
    assert rows(server) == before
    r = api.post("/api/tasks/batch", content=head + b"]}", headers=JSON)
    assert r.status_code == 201, r.text[:500]
    assert len(r.json()["ids"]) == 800


@pytest.mark.parametrize("part", [
    b'Content-Disposition: form-data; name="command"\r\n\r\n\xff\xfe',
    b'Content-Disposition: form-data; name="command"\r\nContent-Type: text/plain; '
    b"charset=no-such-charset\r\n\r\necho",
], ids=["not-utf8", "unknown-charset"])
def test_a_form_that_is_not_text_is_a_400(server, clean, part):
    """Forms are read (by the CSRF check) on every dashboard POST: a field that cannot be
    decoded is the client's error, not a 500."""
    before = rows(server)
    body = b"--x\r\n" + part + b"\r\n--x--\r\n"
    answer = raw_exchange(server, raw_request(
        "POST", "/dashboard/submit", body,
        headers={"Content-Type": "multipart/form-data; boundary=x"}))
    assert status_of(answer) == 400, answer[:400]
    assert b"form field" in answer
    assert rows(server) == before
