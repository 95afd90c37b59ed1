"""What a web page in the user's browser may not make a local LocalFlow do (api/browser_guard.py),
against a real server on loopback with no token: the default a user starts."""

from __future__ import annotations

import pytest

from api.browser_guard import BrowserGuard, is_loopback_host
from shared.settings import Settings
from tests import inproc, procs

ECHO = b'{"type": "shell", "payload": {"command": "echo", "args": ["pwned"]}}'


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with inproc.serving(tmp_path_factory.mktemp("guard") / "g.db") as client:
        yield client


def _tasks(local) -> int:
    return procs.task_count(local.db_path)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", ""])
def test_a_body_that_is_not_json_is_refused(local, content_type):
    """What a cross-site <form> or a no-preflight fetch can send: never reaches the queue."""
    before = _tasks(local)
    r = local.post("/api/tasks", content=ECHO, headers={"content-type": content_type})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert _tasks(local) == before


def test_cross_site_writes_are_refused_and_same_origin_pass(local):
    before = _tasks(local)
    json = {"content-type": "application/json"}
    for headers in ({"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"},
                    {"origin": "https://evil.example"}, {"origin": "null"}):
        r = local.post("/api/tasks", content=ECHO, headers={**json, **headers})
        assert r.status_code == 403 and "cross-site" in r.json()["detail"], headers
        r = local.post("/dashboard/submit", data={"type": "shell", "command": "echo"},
                       headers=headers)
        assert r.status_code == 403, headers
    assert _tasks(local) == before
    host = local.base_url.netloc.decode()
    for headers in ({"sec-fetch-site": "same-origin"}, {"origin": f"http://{host}"}, {}):
        r = local.post("/api/tasks", content=ECHO, headers={**json, **headers})
        assert r.status_code == 201, (headers, r.text)
    # Reading stays open to a cross-site navigation (the browser keeps the answer from the page).
    assert local.get("/health", headers={"sec-fetch-site": "cross-site"}).status_code == 200


def test_dns_rebinding_host_is_refused_without_a_token(local):
    before = _tasks(local)
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example"):
        r = local.post("/api/tasks", content=ECHO,
                       headers={"content-type": "application/json", "host": host})
        assert r.status_code == 403 and "loopback" in r.json()["detail"], host
        assert local.get("/dashboard", headers={"host": host}).status_code == 403
    assert _tasks(local) == before
    for host in ("localhost:1", "127.0.0.1", "[::1]:8080", "app.localhost"):
        assert local.get("/health", headers={"host": host}).status_code == 200, host


def test_bodyless_posts_and_scripts_are_unaffected(local):
    task = local.post("/api/tasks", content=ECHO,
                      headers={"content-type": "application/json; charset=utf-8"}).json()
    r = local.post(f"/api/tasks/{task['id']}/cancel")  # no body, no content type
    assert r.status_code in (200, 409), r.text


def test_with_a_token_any_host_name_is_accepted():
    guard = BrowserGuard(app=None, settings=Settings(api_token="t"))
    assert guard.refusal("GET", "/api/tasks", {"host": "api:8080"}) is None
    insecure = BrowserGuard(app=None, settings=Settings(insecure=True))
    assert insecure.refusal("GET", "/", {"host": "box.lan:8080"}) is None
    default = BrowserGuard(app=None, settings=Settings())
    assert default.refusal("GET", "/", {"host": "box.lan:8080"})[0] == 403


@pytest.mark.parametrize("host,loopback", [
    ("localhost", True), ("LOCALHOST:8080", True), ("127.0.0.1:80", True), ("127.5.5.5", True),
    ("[::1]:8080", True), ("::1", True), ("x.localhost", True), ("localhost.evil", False),
    ("0.0.0.0:8080", False), ("10.0.0.1", False), ("", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback
