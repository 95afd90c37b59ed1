"""Command and URL policy: the rules themselves, the worker's handlers enforcing them against real
processes and real HTTP servers, and the API refusing at submit with nothing queued."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from shared.policy import Policy, PolicyError
from shared.queue import InvalidTask, Queue
from shared.schemas import HttpPayload, ShellPayload, TaskCreate
from shared.settings import Settings
from tests import inproc, procs
from worker.handlers.base import HandlerContext, TaskFailed
from worker.handlers.http import close_client, run_http
from worker.handlers.shell import run_shell

METACHARACTERS = ["; rm -rf /", "$(id)", "`x`", "|", "&&", "> /tmp/x", "*", "'\"", "a\nb"]


def policy(**settings) -> Policy:
    return Policy.from_settings(Settings(**settings))


def ctx(pol: Policy, output_limit: int = 64 * 1024, timeout: float = 10) -> HandlerContext:
    return HandlerContext("t1", 1, timeout, output_limit, pol)


# -- shell rules ---------------------------------------------------------------------------


def test_without_allowlist_any_program_may_run_and_a_missing_one_is_left_to_the_worker():
    pol = policy()
    assert pol.shell.check("echo", {}) == shutil.which("echo", path=pol.shell.path)
    assert pol.shell.check("no-such-program-xyz", {"LD_PRELOAD": "x"}) is None


def test_allowlist_resolves_names_to_absolute_paths_and_refuses_the_rest():
    pol = policy(shell_allow=("echo",))
    echo = pol.shell.check("echo", {})
    assert echo is not None and echo.startswith("/")
    assert pol.shell.check(echo, {}) == echo  # the same program by its path
    with pytest.raises(PolicyError, match=r"payload\.command: 'sh'.*LOCALFLOW_SHELL_ALLOW"):
        pol.shell.check("sh", {})
    with pytest.raises(PolicyError, match="not an allowed program"):
        pol.shell.check("no-such-program-xyz", {})


def test_allowlist_by_absolute_path(tmp_path: Path):
    script = tmp_path / "report"
    script.write_text("#!/bin/sh\necho report\n")
    script.chmod(0o755)
    pol = policy(shell_allow=(str(script),), shell_workdir=str(tmp_path))
    assert pol.shell.check(str(script), {}) == str(script)
    assert pol.shell.check("./report", {}) == str(script)  # relative to the working directory
    with pytest.raises(PolicyError):
        pol.shell.check("echo", {})


def test_allowlist_forbids_environment_that_would_run_other_code():
    pol = policy(shell_allow=("echo",))
    pol.shell.check("echo", {"GREETING": "hi"})
    for name in ("LD_PRELOAD", "PATH", "BASH_ENV", "PYTHONSTARTUP", "ld_library_path"):
        with pytest.raises(PolicyError, match=rf"payload\.env: {name}"):
            pol.shell.check("echo", {name: "/tmp/evil"})


def test_shell_allow_setting_parses_and_rejects_relative_paths():
    from shared.settings import settings_from

    got = settings_from({"LOCALFLOW_SHELL_ALLOW": "echo, /usr/bin/env ,"})
    assert got.shell_allow == ("echo", "/usr/bin/env")
    with pytest.raises(ValueError, match=r"LOCALFLOW_SHELL_ALLOW.*absolute path"):
        settings_from({"LOCALFLOW_SHELL_ALLOW": "bin/echo"})


# -- http rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "mentions"),
    [
        ("ftp://example.com/x", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://0.0.0.0:8080/", "not a destination"),
        ("http://127.0.0.1:8080health", "port is not valid"),
        ("http://127.0.0.1:99999/", "port is not valid"),
    ],
)
def test_default_http_policy_refuses(url, mentions):
    with pytest.raises(PolicyError, match=mentions):
        policy().http.check_url(url)


def test_default_http_policy_allows_loopback_private_and_public_hosts():
    for url in ("http://localhost:8080/health", "http://127.0.0.1:8080/health",
                "http://[::1]:8080/", "http://10.1.2.3/", "https://example.com/"):
        policy().http.check_url(url)


def test_http_deny_and_allow_lists():
    deny = policy(http_deny_hosts=("localhost", "127.0.0.0/8", "*.internal")).http
    for url in ("http://localhost/", "http://LOCALHOST./", "http://127.0.0.2/",
                "http://db.internal/"):
        with pytest.raises(PolicyError, match="LOCALFLOW_HTTP_DENY_HOSTS"):
            deny.check_url(url)
    deny.check_url("http://internal/")  # *.internal means subdomains only

    allow = policy(http_allow_hosts=("api.example.com", "*.corp.example")).http
    allow.check_url("https://api.example.com/x")
    allow.check_url("https://a.b.corp.example/x")
    with pytest.raises(PolicyError, match="LOCALFLOW_HTTP_ALLOW_HOSTS"):
        allow.check_url("https://example.com/")
    with pytest.raises(PolicyError, match="LOCALFLOW_HTTP_ALLOW_HOSTS"):
        allow.check_url("http://127.0.0.1/")

    both = policy(http_allow_hosts=("10.0.0.0/8",), http_deny_hosts=("10.9.0.0/16",)).http
    both.check_url("http://10.1.1.1/")
    both.check_url("http://some-name/")  # may resolve into 10/8: decided at connect time
    with pytest.raises(PolicyError, match="DENY"):
        both.check_url("http://10.9.1.1/")  # deny wins over allow


def test_metadata_range_opens_only_when_listed_explicitly():
    import ipaddress

    listed = policy(http_allow_hosts=("169.254.169.254",)).http
    assert listed.address_denied("x", ipaddress.ip_address("169.254.169.254")) is None
    assert listed.address_denied("x", ipaddress.ip_address("169.254.1.1")) is not None
    assert policy().http.address_denied("x", ipaddress.ip_address("169.254.169.254"))


def test_host_setting_rejects_what_is_not_a_host():
    from shared.settings import settings_from

    with pytest.raises(ValueError, match=r"LOCALFLOW_HTTP_DENY_HOSTS.*http://x"):
        settings_from({"LOCALFLOW_HTTP_DENY_HOSTS": "http://x"})
    got = settings_from({"LOCALFLOW_HTTP_ALLOW_HOSTS": "Example.COM., 10.0.0.0/8, ::1"})
    assert got.http_allow_hosts == ("example.com", "10.0.0.0/8", "::1")


# -- submit: the queue refuses, nothing is written ------------------------------------------


async def test_queue_refuses_disallowed_tasks_and_writes_nothing(store, clock, db_path):
    settings = Settings(db=str(db_path), shell_allow=("echo",),
                        http_deny_hosts=("127.0.0.0/8",))
    queue = Queue(store, clock, settings)
    bad = [
        TaskCreate(type="shell", payload={"command": "rm", "args": ["-rf", "/tmp/x"]}),
        TaskCreate(type="shell", payload={"command": "echo", "env": {"LD_PRELOAD": "x"}}),
        TaskCreate(type="http", payload={"url": "http://127.0.0.1:1/"}),
        TaskCreate(type="http", payload={"url": "http://169.254.169.254/"}),
    ]
    for create in bad:
        with pytest.raises(InvalidTask, match="payload"):
            await queue.enqueue(create)
    with pytest.raises(InvalidTask, match=r"tasks\[1\]: payload.command"):
        await queue.enqueue_many([TaskCreate(type="shell", payload={"command": "echo"}), bad[0]])
    assert (await queue.counts())["queued"] == 0
    task, created = await queue.enqueue(TaskCreate(type="shell", payload={"command": "echo"}))
    assert created and task.status == "queued"


# -- the shell handler ---------------------------------------------------------------------


async def test_shell_metacharacters_are_literal_arguments(tmp_path):
    pol = policy(shell_workdir=str(tmp_path))
    result = await run_shell(ShellPayload(command="echo", args=METACHARACTERS), ctx(pol))
    assert result["stdout"] == " ".join(METACHARACTERS) + "\n"
    assert list(tmp_path.iterdir()) == []  # no redirection happened: "> /tmp/x" is text


async def test_shell_runs_in_the_fixed_directory_with_a_clean_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALFLOW_API_TOKEN", "worker-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    pol = policy(shell_workdir=str(tmp_path))
    cwd = await run_shell(ShellPayload(command="pwd"), ctx(pol))
    assert cwd["stdout"].strip() == str(tmp_path)
    env = await run_shell(ShellPayload(command="env", env={"GREETING": "hi"}), ctx(pol))
    names = {line.split("=", 1)[0] for line in env["stdout"].splitlines()}
    assert names == {"PATH", "LANG", "GREETING", "LOCALFLOW_TASK_GUARD"}  # the orphan guard's
    assert "secret" not in env["stdout"]


async def test_worker_rechecks_the_allowlist(tmp_path):
    # A task queued before the allowlist was tightened (or written by something else) is
    # refused by the worker, and the program never starts.
    marker = tmp_path / "ran"
    pol = policy(shell_allow=("echo",), shell_workdir=str(tmp_path))
    with pytest.raises(TaskFailed, match=r"refused by policy.*'touch'"):
        await run_shell(ShellPayload(command="touch", args=[str(marker)]), ctx(pol))
    with pytest.raises(TaskFailed, match=r"refused by policy.*LD_PRELOAD"):
        await run_shell(ShellPayload(command="echo", env={"LD_PRELOAD": "/x.so"}), ctx(pol))
    assert not marker.exists()
    ok = await run_shell(ShellPayload(command="echo", args=["fine"]), ctx(pol))
    assert ok["stdout"] == "fine\n"


async def test_missing_working_directory_is_a_clear_failure(tmp_path):
    pol = policy(shell_workdir=str(tmp_path / "gone"))
    with pytest.raises(TaskFailed, match=r"working directory .*gone does not exist"):
        await run_shell(ShellPayload(command="echo"), ctx(pol))


# -- the http handler, against real servers --------------------------------------------------


@dataclass
class Site:
    """A real HTTP server on a loopback address, counting what reaches it."""

    host: str
    server: ThreadingHTTPServer
    hits: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"


def _serve(host: str) -> Site:
    site: Site

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            site.hits.append(self.path)
            path, _, query = self.path.partition("?")
            if path == "/ok":
                self._send(200, b"hello")
            elif path == "/to":  # /to?<absolute url>
                self.send_response(302)
                self.send_header("Location", query)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/big":  # declared length
                self._send(200, b"x" * 5000)
            elif path == "/stream":  # no length: read until the connection closes
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(50):
                    self.wfile.write(b"y" * 100)
            else:
                self._send(404, b"no")

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    site = Site(host, server)
    # shutdown() returns at the loop's next look at its flag: every 0.5 s by default.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                     daemon=True).start()
    return site


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    """Two servers: 127.0.0.1 and 127.0.0.2 (both loopback on Linux; the second can be denied
    while the first stays allowed)."""
    try:
        second = _serve("127.0.0.2")
    except OSError as exc:
        pytest.skip(f"cannot bind 127.0.0.2 on this machine: {exc}")
    first = _serve("127.0.0.1")
    yield first, second
    for site in (first, second):
        site.server.shutdown()
        site.server.server_close()


@pytest.fixture(autouse=True)
async def _fresh_http_clients():
    yield
    await close_client()


async def test_seed_local_example_works_with_the_default_policy(sites):
    first, _ = sites
    result = await run_http(HttpPayload(url=f"{first.base}/ok"), ctx(policy()))
    assert (result["status_code"], result["body"], result["bytes"]) == (200, "hello", 5)


async def test_redirects_are_followed_and_each_hop_is_checked(sites):
    first, second = sites
    pol = policy(http_deny_hosts=("127.0.0.2",))
    # Allowed hop: followed, and the hops are reported.
    ok = await run_http(HttpPayload(url=f"{first.base}/to?{first.base}/ok"), ctx(pol))
    assert ok["body"] == "hello" and ok["redirects"] == [f"{first.base}/ok"]
    # Denied hop: refused before any request reaches it.
    with pytest.raises(TaskFailed, match=r"refused by policy \(redirected to .*127\.0\.0\.2"):
        await run_http(HttpPayload(url=f"{first.base}/to?{second.base}/ok"), ctx(pol))
    for target in ("http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"):
        with pytest.raises(TaskFailed, match="refused by policy"):
            await run_http(HttpPayload(url=f"{first.base}/to?{target}"), ctx(pol))
    assert second.hits == []


async def test_a_name_resolving_to_a_denied_address_is_refused_at_connect_time(sites):
    first, _ = sites
    pol = policy(http_deny_hosts=("127.0.0.0/8", "::1"))
    url = f"http://localhost:{first.server.server_address[1]}/ok"
    pol.http.check_url(url)  # the name alone is not denied: only DNS tells
    denied = r"refused by policy: localhost \(127\.0\.0\.1\) is denied"
    with pytest.raises(TaskFailed, match=denied):
        await run_http(HttpPayload(url=url), ctx(pol))
    assert first.hits == []


async def test_redirect_limit(sites):
    first, _ = sites
    pol = policy(http_max_redirects=3)
    with pytest.raises(TaskFailed, match="more than 3 redirects"):
        await run_http(HttpPayload(url=f"{first.base}/loop"), ctx(pol))
    assert first.hits == ["/loop"] * 4
    none = policy(http_max_redirects=0)
    with pytest.raises(TaskFailed, match="more than 0 redirects"):
        await run_http(HttpPayload(url=f"{first.base}/loop"), ctx(none))


@pytest.mark.parametrize("path", ["/big", "/stream"])
async def test_response_size_cap(sites, path):
    first, _ = sites
    capped = policy(http_max_response_bytes=1000)
    with pytest.raises(TaskFailed, match="exceeds the 1000-byte limit"):
        await run_http(HttpPayload(url=f"{first.base}{path}"), ctx(capped))
    roomy = policy(http_max_response_bytes=10_000)
    result = await run_http(HttpPayload(url=f"{first.base}{path}"), ctx(roomy, output_limit=100))
    assert result["bytes"] == 5000
    assert result["body"].endswith("... [4900 more bytes not kept]")


# -- end to end: the API refuses at submit, the worker runs what is allowed ------------------


LOCKED = {"LOCALFLOW_SHELL_ALLOW": "echo",
          "LOCALFLOW_HTTP_DENY_HOSTS": "10.0.0.0/8,blocked.example"}


@pytest.fixture(scope="module")
def locked(tmp_path_factory) -> Iterator[httpx.Client]:
    """`localflow serve`'s app in this process (tests/inproc.py), locked down."""
    with inproc.serving(tmp_path_factory.mktemp("policy") / "policy.db", env=LOCKED) as client:
        yield client


@pytest.fixture(scope="module")
def locked_served(tmp_path_factory) -> Iterator[httpx.Client]:
    """The same as a real process: for a task that calls LocalFlow back over HTTP."""
    db = tmp_path_factory.mktemp("policy-served") / "policy.db"
    proc = procs.start("serve", db, env=LOCKED)
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        client.db_path = db
        client.root = proc.url
        yield client
    proc.stop()


def _count(client: httpx.Client) -> int:
    with sqlite3.connect(client.db_path) as conn:
        return conn.execute("SELECT count(*) FROM tasks").fetchone()[0]


@pytest.mark.parametrize(
    ("payload", "mentions"),
    [
        ({"type": "shell", "payload": {"command": "rm", "args": ["-rf", "/"]}},
         "payload.command: 'rm'"),
        ({"type": "shell", "payload": {"command": "echo", "env": {"LD_PRELOAD": "/x.so"}}},
         "payload.env: LD_PRELOAD"),
        ({"type": "http", "payload": {"url": "http://169.254.169.254/latest/meta-data/"}},
         "payload.url"),
        ({"type": "http", "payload": {"url": "http://10.1.2.3/"}}, "payload.url"),
        ({"type": "http", "payload": {"url": "https://blocked.example/"}}, "payload.url"),
    ],
)
def test_api_refuses_disallowed_tasks_with_422_and_queues_nothing(locked, payload, mentions):
    before = _count(locked)
    r = locked.post("/api/tasks", json=payload)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert mentions in r.json()["detail"]
    assert _count(locked) == before


@pytest.mark.e2e
def test_api_runs_allowed_shell_with_metacharacters_literal_and_the_seed_http_example(
        locked_served):
    locked = locked_served
    r = locked.post("/api/tasks", json={"type": "shell", "payload": {
        "command": "echo", "args": METACHARACTERS}})
    assert r.status_code == 201, r.text
    done = procs.wait_for_status(locked, r.json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert done["result"]["stdout"] == " ".join(METACHARACTERS) + "\n"
    # The seed's local example: an http task calling LocalFlow's own /health.
    r = locked.post("/api/tasks", json={"type": "http", "payload": {
        "url": f"{locked.root}/health", "method": "GET"}})
    assert r.status_code == 201, r.text
    done = procs.wait_for_status(locked, r.json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
