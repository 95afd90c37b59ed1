"""Bearer-token auth against a real `localflow serve` started with LOCALFLOW_API_TOKEN (and a
real `localflow worker` with LOCALFLOW_METRICS_TOKEN: one behaviour on every endpoint), the
throttle on wrong tokens, and the refusals at start-up (no token beyond loopback, weak tokens).

Every client of the shared server sends from its own loopback address (127.1.x.y: all of
127.0.0.0/8 reaches this machine), so one test's wrong tokens never throttle another's."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from api.dashboard.security import SESSION_COOKIE
from shared.tokens import token_matches
from tests import procs

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token-4fd1c2b7a9"
WRONG = "wrong-token-77e0a1"
METRICS_TOKEN = "metrics-only-token-5b0e9c1d"
_addresses = (f"127.1.{i // 250}.{i % 250 + 2}" for i in itertools.count())


def client(base_url: str, **kwargs) -> httpx.Client:
    """A client sending from a loopback address of its own: a throttle bucket of its own."""
    transport = httpx.HTTPTransport(local_address=next(_addresses))
    return httpx.Client(base_url=base_url, timeout=10, transport=transport, **kwargs)
ECHO = {"type": "shell", "payload": {"command": "echo", "args": ["hi"]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[procs.Proc]:
    db = tmp_path_factory.mktemp("auth") / "auth.db"
    proc = procs.start("serve", db, "--debug", env={
        "LOCALFLOW_API_TOKEN": TOKEN, "LOCALFLOW_ACCESS_LOG": "true",
    })
    yield proc
    proc.stop()


@pytest.fixture()
def anon(server) -> Iterator[httpx.Client]:
    with client(server.url) as c:
        yield c


@pytest.fixture()
def authed(server) -> Iterator[httpx.Client]:
    with client(server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


PROTECTED = [
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ("POST", "/api/tasks/batch"),
    ("DELETE", "/api/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ("GET", "/api/schedules"),
    ("GET", "/metrics"),
    ("GET", "/debug/"),
    ("GET", "/debug/tasks"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_credentials_is_401_with_a_bearer_challenge(anon, method, path):
    r = anon.request(method, path, json=ECHO if method == "POST" else None)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer realm="localflow"'
    assert r.headers["content-type"] == "application/problem+json"
    assert "Authorization: Bearer" in r.json()["detail"]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_wrong_token_is_401_invalid_token(anon, method, path):
    r = anon.request(method, path, headers={"Authorization": f"Bearer {WRONG}"})
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert WRONG not in r.text and TOKEN not in r.text


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", f"Token {TOKEN}", f"Bearer  {TOKEN} extra", f"Bearer {TOKEN}x",
     f"Bearer {TOKEN[:-1]}", f"bearer {TOKEN.upper()}"],
)
def test_malformed_or_near_miss_credentials_are_refused(anon, header):
    assert anon.get("/api/tasks", headers={"Authorization": header}).status_code == 401


def test_the_right_token_opens_every_protected_route(authed):
    assert authed.get("/api/tasks").status_code == 200
    assert authed.get("/metrics").status_code == 200
    assert authed.get("/debug/tasks").status_code == 200
    r = authed.post("/api/tasks", json=ECHO)
    assert r.status_code == 201
    assert authed.get(f"/api/tasks/{r.json()['id']}").status_code == 200
    # The scheme is case-insensitive (RFC 9110 11.1).
    lower = authed.get("/api/tasks", headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status_code == 200


def test_health_and_openapi_stay_open(anon):
    assert anon.get("/health").status_code == 200
    schema = anon.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "bearerAuth" in schema.json()["components"]["securitySchemes"]
    # A protected operation documents the throttle's answer too.
    assert "429" in schema.json()["paths"]["/api/tasks"]["get"]["responses"]


def test_unknown_routes_are_404_not_401(anon):
    # Routing comes first: nothing is behind a path that does not exist.
    assert anon.get("/api/nothing-here").status_code == 404


def _log_in(c: httpx.Client, token: str = TOKEN) -> str:
    """Log in through the dashboard's form; returns the session cookie's value."""
    r = c.post("/dashboard/login", data={"token": token, "_csrf_token": _login_csrf(c)})
    assert r.status_code == 303, r.text
    return c.cookies[SESSION_COOKIE]


def _session(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


def test_dashboard_session_may_read_the_api_but_not_write(server, anon):
    with client(server.url) as browser:
        session = _session(_log_in(browser))
    assert anon.get("/api/tasks", headers=session).status_code == 200
    assert anon.get("/metrics", headers=session).status_code == 200
    write = anon.post("/api/tasks", json=ECHO, headers=session)
    assert write.status_code == 403, write.text
    assert "Authorization: Bearer" in write.json()["detail"]
    assert write.headers["www-authenticate"] == (
        'Bearer realm="localflow", error="insufficient_scope"')
    assert anon.delete("/api/tasks/x", headers=session).status_code == 403
    forged = anon.get("/api/tasks", headers=_session("made-up-session-value"))
    assert forged.status_code == 401


def test_logout_ends_the_session_for_every_copy_of_the_cookie(server, anon):
    with client(server.url) as browser:
        saved = _log_in(browser)
        assert anon.get("/api/tasks", headers=_session(saved)).status_code == 200
        csrf = _login_csrf_from_cookie(browser)
        out = browser.post("/dashboard/logout", headers={"x-csrftoken": csrf})
        assert out.status_code == 303
    # The copy saved before logging out reads nothing any more: not the API...
    after = anon.get("/api/tasks", headers=_session(saved))
    assert after.status_code == 401
    # ...nor the dashboard.
    page = anon.get("/dashboard", headers=_session(saved), follow_redirects=False)
    assert page.status_code == 303 and "/dashboard/login" in page.headers["location"]


def test_a_restart_or_a_new_token_ends_every_session(tmp_path):
    """Sessions live in the API process: a restart ends them (log in again), so a logout can
    never come back to life; a new token needs a restart, so it ends them too."""
    db = tmp_path / "sessions.db"
    first = procs.start("serve", db, env={"LOCALFLOW_API_TOKEN": TOKEN})
    try:
        with client(first.url) as browser:
            saved = _log_in(browser)
            assert browser.get("/api/tasks").status_code == 200
    finally:
        first.stop()
    new_token = TOKEN + "-rotated"
    for token in (TOKEN, new_token):
        again = procs.start("serve", db, env={"LOCALFLOW_API_TOKEN": token})
        try:
            with client(again.url) as c:
                assert c.get("/api/tasks", headers=_session(saved)).status_code == 401
                fresh = _log_in(c, token)
                assert c.get("/api/tasks", headers=_session(fresh)).status_code == 200
        finally:
            again.stop()


def _login_csrf_from_cookie(c: httpx.Client) -> str:
    return next(v for k, v in c.cookies.items() if k.startswith("localflow_csrf"))


def test_dashboard_pages_are_left_to_the_dashboard_login(anon):
    r = anon.get("/dashboard", follow_redirects=False)
    assert r.status_code in (302, 303) and "/dashboard/login" in r.headers["location"]


def test_the_token_never_reaches_the_log(server, anon, authed):
    authed.get("/api/tasks")
    anon.get("/api/tasks", headers={"Authorization": f"Bearer {WRONG}"})
    anon.get(f"/api/tasks?token={WRONG}", headers={"Authorization": f"Bearer {WRONG}"})
    # Until the server has logged all three (the access log is on), however busy it is.
    deadline = time.monotonic() + 60
    while (log := server.log()).count("/api/tasks") < 3:
        assert time.monotonic() < deadline, f"the three requests never reached the log:\n{log}"
        time.sleep(0.02)
    assert '"path": "/api/tasks"' in log or "/api/tasks" in log  # the access log is on
    assert TOKEN not in log
    assert WRONG not in log


def test_token_comparison_is_exact():
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN + " ", TOKEN)
    assert not token_matches("", TOKEN)
    assert not token_matches("é", "e")


# -- one behaviour on every endpoint of every process (RFC 6750), and the throttle ----------


@pytest.fixture(scope="module")
def worker(server, tmp_path_factory) -> Iterator[str]:
    """A `localflow worker` beside the server: the base URL of its own /health and /metrics."""
    port = procs.free_port()
    db = tmp_path_factory.mktemp("auth-worker") / "worker.db"
    proc = procs.start("worker", db, env={
        "LOCALFLOW_METRICS_TOKEN": METRICS_TOKEN, "LOCALFLOW_METRICS_ADDR": f"127.0.0.1:{port}",
    })
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.popen.poll() is None, proc.log()
        try:
            httpx.get(f"{base}/health", timeout=2)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.05)
    yield base
    assert proc.stop() == 0
    assert METRICS_TOKEN not in proc.log()


@pytest.fixture(params=["api", "worker"])
def metrics_endpoint(request, server) -> tuple[str, str]:
    """(base URL, token) of the API's /metrics, then of the worker's own."""
    if request.param == "api":
        return server.url, TOKEN
    return request.getfixturevalue("worker"), METRICS_TOKEN


def test_every_metrics_endpoint_answers_auth_alike(metrics_endpoint):
    base, token = metrics_endpoint
    with client(base) as c:
        missing = c.get("/metrics")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="localflow"'
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["status"] == 401
        for header in (f"Bearer {WRONG}", "Bearer", f"Bearer {token} extra"):
            wrong = c.get("/metrics", headers={"Authorization": header})
            assert wrong.status_code == 401, (header, wrong.text)
            assert wrong.headers["www-authenticate"] == (
                'Bearer realm="localflow", error="invalid_token"')
            assert wrong.headers["content-type"] == "application/problem+json"
            assert WRONG not in wrong.text and token not in wrong.text
        assert c.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def _wrong_until_throttled(c: httpx.Client, path: str = "/api/tasks") -> httpx.Response:
    answers = [c.get(path, headers={"Authorization": f"Bearer {WRONG}-{i}"}) for i in range(11)]
    assert [a.status_code for a in answers[:10]] == [401] * 10
    return answers[10]


def test_wrong_tokens_are_throttled_per_address_and_the_right_one_still_works(metrics_endpoint):
    base, token = metrics_endpoint
    with client(base) as c, client(base) as neighbour:
        blocked = _wrong_until_throttled(c, "/metrics")
        assert blocked.status_code == 429, blocked.text
        assert 0 < int(blocked.headers["retry-after"]) <= 61
        assert blocked.headers["content-type"] == "application/problem+json"
        assert "too many wrong tokens" in blocked.json()["detail"]
        # A local attacker failing on purpose cannot lock the right user out of its address...
        right = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert right.status_code == 200
        # ...and the throttle holds per address: another client is not affected.
        assert neighbour.get("/metrics", headers={
            "Authorization": f"Bearer {WRONG}"}).status_code == 401
        # Still throttled after the right token: only waiting ends it.
        assert c.get("/metrics", headers={"Authorization": f"Bearer {WRONG}"}).status_code == 429


def test_missing_credentials_are_not_counted_as_guesses(anon):
    for _ in range(15):
        assert anon.get("/api/tasks").status_code == 401


def test_api_and_dashboard_login_share_one_throttle(server):
    """The dashboard's limit cannot be stepped around through /api, nor the reverse."""
    with client(server.url) as c:
        assert _wrong_until_throttled(c).status_code == 429
        csrf = _login_csrf(c)
        wrong = c.post("/dashboard/login", data={"token": WRONG, "_csrf_token": csrf})
        assert wrong.status_code == 429 and int(wrong.headers["retry-after"]) > 0
        right = c.post("/dashboard/login", data={"token": TOKEN, "_csrf_token": csrf})
        assert right.status_code == 303, right.text
        assert SESSION_COOKIE in c.cookies
    with client(server.url) as c:
        csrf = _login_csrf(c)
        for i in range(10):
            r = c.post("/dashboard/login", data={"token": f"{WRONG}-{i}", "_csrf_token": csrf})
            assert r.status_code == 401
        api = c.get("/api/tasks", headers={"Authorization": f"Bearer {WRONG}"})
        assert api.status_code == 429 and "retry-after" in api.headers
        assert c.get("/api/tasks", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def _login_csrf(c: httpx.Client) -> str:
    page = c.get("/dashboard/login")
    return re.search(r'name="_csrf_token" value="(\w+)"', page.text).group(1)


# -- refusing to listen beyond loopback ------------------------------------------------------


def _localflow(*args: str, env: dict[str, str] | None = None, db) -> subprocess.Popen:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    full_env.update({"LOCALFLOW_DB": str(db), "LOCALFLOW_LOG_FORMAT": "json", **(env or {})})
    return subprocess.Popen(
        [sys.executable, "-m", "localflow.cli", *args], cwd=procs.REPO, env=full_env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.parametrize("command", ["serve", "api"])
def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path, command):
    port = procs.free_port()
    proc = _localflow(command, "--addr", f"0.0.0.0:{port}", db=tmp_path / "x.db")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"refusing to listen on 0.0.0.0:{port} without an API token" in out
    for hint in ("LOCALFLOW_API_TOKEN", "127.0.0.1", "--insecure"):
        assert hint in out
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--insecure"], {}), ([], {"LOCALFLOW_API_TOKEN": TOKEN}),
     ([], {"LOCALFLOW_INSECURE": "true"})],
)
def test_listens_beyond_loopback_with_a_token_or_insecure(tmp_path, args, env):
    port = procs.free_port()
    proc = _localflow("api", "--addr", f"0.0.0.0:{port}", *args, env=env, db=tmp_path / "x.db")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            pytest.fail("never became healthy")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    if not env.get("LOCALFLOW_API_TOKEN"):
        assert "without an API token" in out  # a loud warning, not silence


# -- refusing weak tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "api"])
@pytest.mark.parametrize(("token", "why"), [
    ("short-token", "11 characters long; use at least 16"),
    ("a token with spaces in it", "whitespace"),
    ("long-enough-token-but\t", "whitespace"),
])
def test_refuses_to_start_with_a_weak_token(tmp_path, command, token, why):
    proc = _localflow(command, "--addr", f"127.0.0.1:{procs.free_port()}",
                      env={"LOCALFLOW_API_TOKEN": token}, db=tmp_path / "x.db")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # one clear line
    assert "LOCALFLOW_API_TOKEN" in lines[0] and why in lines[0] and "--insecure" in lines[0]
    assert token not in out
    assert not (tmp_path / "x.db").exists()


def test_refuses_a_weak_metrics_token_too(tmp_path):
    proc = _localflow("worker", env={"LOCALFLOW_METRICS_TOKEN": "tiny"}, db=tmp_path / "x.db")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2, out
    assert "LOCALFLOW_METRICS_TOKEN" in out and "4 characters long" in out


def test_a_weak_token_is_accepted_with_insecure_and_a_warning(tmp_path):
    port = procs.free_port()
    proc = _localflow("api", "--addr", f"127.0.0.1:{port}", "--insecure",
                      env={"LOCALFLOW_API_TOKEN": "short-token"}, db=tmp_path / "x.db")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/tasks",
                              headers={"Authorization": "Bearer short-token"}, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert r.status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "weak" in out.lower() and "short-token" not in out


def test_a_forwarded_for_header_does_not_move_a_client_out_of_its_throttle(server):
    # The address is the peer's. uvicorn used to believe X-Forwarded-For from 127.0.0.1, so a
    # local guesser could name a new address per request and never be throttled.
    transport = httpx.HTTPTransport(local_address="127.0.0.1")
    with httpx.Client(base_url=server.url, timeout=10, transport=transport) as c:
        answers = [c.get("/api/tasks", headers={
            "Authorization": f"Bearer {WRONG}-{i}", "X-Forwarded-For": f"198.51.100.{i + 1}",
        }) for i in range(11)]
    assert [a.status_code for a in answers] == [401] * 10 + [429]
