"""Bearer-token auth against a real `localflow serve` started with LOCALFLOW_API_TOKEN, and the
refusal to listen beyond loopback without one."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from api.auth import token_matches
from api.dashboard.security import SESSION_COOKIE, make_session
from tests import procs

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token-4fd1c2b7a9"
WRONG = "wrong-token-77e0a1"
ECHO = {"type": "shell", "payload": {"command": "echo", "args": ["hi"]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[procs.Proc]:
    db = tmp_path_factory.mktemp("auth") / "auth.db"
    proc = procs.start("serve", db, "--debug", env={
        "LOCALFLOW_API_TOKEN": TOKEN, "LOCALFLOW_ACCESS_LOG": "true",
    })
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def anon(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def authed(server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=10, headers=headers) as client:
        yield client


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


def test_unknown_routes_are_404_not_401(anon):
    # Routing comes first: nothing is behind a path that does not exist.
    assert anon.get("/api/nothing-here").status_code == 404


def test_dashboard_session_may_read_the_api_but_not_write(anon):
    def cookie(value: str) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={value}"}

    session = cookie(make_session(TOKEN))
    assert anon.get("/api/tasks", headers=session).status_code == 200
    assert anon.get("/metrics", headers=session).status_code == 200
    write = anon.post("/api/tasks", json=ECHO, headers=session)
    assert write.status_code == 403, write.text
    assert "Authorization: Bearer" in write.json()["detail"]
    assert anon.delete("/api/tasks/x", headers=session).status_code == 403
    forged = anon.get("/api/tasks", headers=cookie(make_session("another-token")))
    assert forged.status_code == 401
    expired = anon.get("/api/tasks", headers=cookie(make_session(TOKEN, now=0)))
    assert expired.status_code == 401


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
