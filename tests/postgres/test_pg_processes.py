"""LocalFlow's real commands against a real PostgreSQL: `migrate` (also from several processes
at once), `serve` running the README's shell task, a worker whose listener connection is
killed, and one clear line (no traceback, no password) for every way a --db URL can be wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from shared.store.postgres import schema
from tests import pg, procs
from tests.pg import Server, with_database

pytestmark = pytest.mark.e2e

README_TASK = {"type": "shell", "payload": {"command": "echo", "args": ["Hello, LocalFlow!"]}}


def _localflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    return subprocess.run([sys.executable, "-m", "localflow.cli", *args], cwd=procs.REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_migrate_command_on_an_empty_database_and_again(pg_server: Server) -> None:
    with pg_server.database(migrated=False) as url:
        for _ in range(2):
            done = _localflow("migrate", "--db", url)
            assert done.returncode == 0, done.stderr
            password = urlsplit(url).password
            assert password and password not in done.stdout + done.stderr
            assert done.stdout.strip().endswith(f"schema version {schema.newest_version()}")


def test_migrate_from_several_processes_at_once(pg_server: Server) -> None:
    with pg_server.database(migrated=False) as url:
        argv = [sys.executable, "-m", "localflow.cli", "migrate", "--db", url]
        running = [subprocess.Popen(argv, cwd=procs.REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(5)]
        outputs = [p.communicate(timeout=120) for p in running]
        assert [p.returncode for p in running] == [0] * 5, [err for _, err in outputs]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version FROM localflow_schema ORDER BY 1").fetchall() \
                == [(v,) for v in range(1, schema.newest_version() + 1)]


def test_newer_schema_is_refused_by_every_command(pg_url: str) -> None:
    future = schema.newest_version() + 1  # one this code does not know, whatever the newest
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO localflow_schema (version, name) VALUES (%s, %s)",
                     (future, f"{future:03d}_future"))
    for command in ("migrate", "worker"):
        done = _localflow(command, "--db", pg_url)
        assert done.returncode == 2
        assert f"schema version {future}" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def wrong_urls(pg_server: Server) -> dict[str, tuple[str, str]]:
    """URL -> the words the one error line must contain; each carries a password that must
    never be printed."""
    good = urlsplit(pg_server.admin_url)
    port = procs.free_port()  # nothing listens there
    wrong_password = good._replace(netloc=f"postgres:hunter2secret@{good.hostname}:{good.port}")
    return {
        "bad port": ("postgresql://u:hunter2secret@localhost:notaport/db", "port"),
        "no database name": ("postgresql://u:hunter2secret@127.0.0.1:5432/", "no database name"),
        "unreachable": (f"postgresql://u:hunter2secret@127.0.0.1:{port}/db", "refused"),
        "wrong password": (with_database(wrong_password.geturl(), "postgres"),
                           "wrong user name or password"),
        "missing database": (with_database(pg_server.admin_url, "no_such_db_here"),
                             "no such database"),
    }


@pytest.mark.parametrize("command", ["migrate", "serve", "api", "worker"])
def test_every_wrong_url_is_one_clear_line(command: str, wrong_urls, pg_server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    running = {}
    for name, (url, _) in wrong_urls.items():  # all at once: five start-ups cost one
        args = [sys.executable, "-m", "localflow.cli", command, "--db", url]
        if command in ("serve", "api"):
            args += ["--addr", f"127.0.0.1:{procs.free_port()}"]
        running[name] = subprocess.Popen(args, cwd=procs.REPO, env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for name, (_, words) in wrong_urls.items():
        out, err = running[name].communicate(timeout=120)
        lines = err.strip().splitlines()
        assert running[name].returncode != 0, (name, err)
        assert len(lines) == 1 and words in lines[0], (name, err)
        assert "Traceback" not in err
        for secret in ("hunter2secret", urlsplit(pg_server.admin_url).password):
            assert secret not in err + out, name


def test_serve_runs_the_readmes_shell_task(pg_url: str, tmp_path: Path) -> None:
    """`localflow serve --db postgresql://...` as a real process: the README's first task
    runs, and the database (not the API's word) says it succeeded."""
    proc = procs.start("serve", tmp_path / "unused.db", env={"LOCALFLOW_DB": pg_url},
                       log_dir=tmp_path)
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            created = client.post("/api/tasks", json=README_TASK)
            assert created.status_code == 201, created.text
            task = procs.wait_for_status(client, created.json()["id"], {"succeeded", "failed"})
            assert task["status"] == "succeeded", task
            assert task["result"]["stdout"] == "Hello, LocalFlow!\n"
            assert client.get("/health").status_code == 200
    finally:
        assert proc.stop() == 0, proc.log()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT status FROM tasks").fetchall() == [("succeeded",)]
    password = urlsplit(pg_url).password
    assert password and password not in proc.log()


def test_worker_keeps_working_after_its_listener_connection_is_killed(
    pg_url: str, tmp_path: Path
) -> None:
    """pg_terminate_backend on every LISTEN connection of a running `serve`: its listener
    reconnects by itself, and a task submitted afterwards still runs."""
    proc = procs.start("serve", tmp_path / "unused.db", env={"LOCALFLOW_DB": pg_url},
                       log_dir=tmp_path)
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            first = client.post("/api/tasks", json=README_TASK).json()
            procs.wait_for_status(client, first["id"], {"succeeded"})
            with psycopg.connect(pg_url, autocommit=True) as conn:
                listening = _listeners(conn)
                assert listening
                for pid in listening:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                # The condition: a new LISTEN connection (another backend) shows up.
                deadline = time.monotonic() + 60
                while not (_listeners(conn) - listening):
                    assert time.monotonic() < deadline, proc.log()
                    time.sleep(0.02)
            second = client.post("/api/tasks", json=README_TASK).json()
            assert procs.wait_for_status(client, second["id"], {"succeeded"})
    finally:
        assert proc.stop() == 0, proc.log()
    assert "PostgreSQL listener reconnected" in proc.log()


def _listeners(conn: psycopg.Connection) -> set[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    ).fetchall()
    return {pid for (pid,) in rows}


def test_serve_outlives_a_postgresql_restart(tmp_path: Path) -> None:
    """The server goes down under a running `serve` and comes back on the same port: the
    process keeps running, its pool and listener reconnect, and new work runs."""
    try:
        cluster = pg.start_cluster()
    except pg.Unavailable as exc:
        pytest.skip(str(exc))
    proc = None
    try:
        proc = procs.start("serve", tmp_path / "unused.db", env={"LOCALFLOW_DB": cluster.url},
                           log_dir=tmp_path)
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            before = client.post("/api/tasks", json=README_TASK).json()
            procs.wait_for_status(client, before["id"], {"succeeded"})
            cluster.kill_server()
            # While it is down the API answers (an error), and nothing exits.
            assert client.get(f"/api/tasks/{before['id']}").status_code >= 500
            assert proc.popen.poll() is None
            cluster.start_server()
            deadline = time.monotonic() + 60
            while True:  # the first request after the restart may meet a dying connection
                created = client.post("/api/tasks", json=README_TASK)
                if created.status_code == 201:
                    break
                assert time.monotonic() < deadline, created.text
                time.sleep(0.1)
            task = procs.wait_for_status(client, created.json()["id"], {"succeeded"})
            assert task["result"]["stdout"] == "Hello, LocalFlow!\n"
            while "PostgreSQL listener reconnected" not in proc.log():  # backoff: <= 5 s
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.05)
    finally:
        if proc is not None:
            assert proc.stop() == 0, proc.log()
        cluster.stop()
    assert urlsplit(cluster.url).password not in proc.log()
