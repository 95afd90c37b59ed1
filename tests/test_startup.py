"""Starting and stopping LocalFlow processes (issue 11 items 3, 4 and 14; issue 15 items 4, 5).

Real processes on real files: a write lock held by another connection at start-up, a port
that is taken, SIGTERM while waiting, `api` and `worker` started together on a new file, and
the modes of the files LocalFlow creates.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e  # real processes


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{text}") from None
    return lines


def _migrated(tmp_path: Path) -> Path:
    db = tmp_path / "lf.db"
    done = _cli("migrate", "--db", str(db))
    assert done.returncode == 0, done.stderr
    return db


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60
         ) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    return subprocess.run([sys.executable, "-m", "localflow.cli", *args],
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=procs.REPO)


# -- a write lock held by another process at start-up -----------------------------------------


def test_serve_starts_and_reads_while_another_process_holds_the_write_lock(tmp_path):
    db = _migrated(tmp_path)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held for the whole start-up
    proc = procs.start("serve", db, wait_for_health=False)
    try:
        # Before the fix, start-up took the write lock to check the schema: it waited 30 s
        # for it, then died with a raw `database is locked` traceback.
        procs.wait_healthy(proc, timeout=20)
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            assert client.get("/api/tasks").status_code == 200
            holder.execute("ROLLBACK")
            submitted = client.post("/api/tasks", json={"type": "shell",
                                                        "payload": {"command": "true"}})
            assert submitted.status_code == 201, submitted.text
            task = procs.wait_for_status(client, submitted.json()["id"], {"succeeded"})
            assert task["attempts"] == 1
        assert "Traceback" not in proc.log()
    finally:
        holder.close()
        assert proc.stop() == 0


def test_a_new_database_waits_for_the_lock_to_migrate_logging_why(tmp_path):
    db = tmp_path / "new.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    proc = procs.start("serve", db, wait_for_health=False)
    try:
        _wait_for(lambda: "waiting for the database's write lock" in proc.log(), timeout=30,
                  what="the waiting line")
        assert proc.popen.poll() is None
        waiting = [line for line in _json_lines(proc.log())
                   if "waiting for the database" in line["event"]]
        assert waiting[0]["level"] == "warning" and waiting[0]["logger"] == "localflow.migrate"
        assert "another process holds the write lock" in waiting[0]["why"]
        holder.execute("ROLLBACK")
        procs.wait_healthy(proc, timeout=30)
        assert "Traceback" not in proc.log()
    finally:
        holder.close()
        assert proc.stop() == 0


def test_sigterm_stops_a_process_waiting_for_the_lock(tmp_path):
    db = tmp_path / "new.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    proc = procs.start("worker", db, wait_for_health=False)
    try:
        _wait_for(lambda: "waiting for the database's write lock" in proc.log(), timeout=30,
                  what="the waiting line")
        proc.signal(signal.SIGTERM)
        assert proc.popen.wait(timeout=10) == 0, proc.log()
    finally:
        holder.close()
        proc.stop()


# -- a port that is taken -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "api"])
def test_a_taken_port_is_one_clear_line_and_a_quick_exit(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        done = _cli(command, "--db", str(tmp_path / "lf.db"), "--addr", f"127.0.0.1:{port}",
                    timeout=30)  # before the fix: never exited, and ignored SIGTERM
        took = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"localflow: cannot listen on 127.0.0.1:{port}: the port is taken by "
                     "another program (another LocalFlow?); stop it, or choose another port "
                     "with --addr / LOCALFLOW_ADDR"], done.stderr
    assert took < 15, took


def test_fatal_start_up_lines_are_json_with_log_format_json(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("serve", "--db", str(tmp_path / "lf.db"), "--addr", f"127.0.0.1:{port}",
                    "--log-format", "json", timeout=30)
    assert done.returncode == 1
    (line,) = _json_lines(done.stderr.strip())
    assert line["level"] == "error" and line["logger"] == "localflow"
    assert line["event"].startswith(f"cannot listen on 127.0.0.1:{port}")

    cases = [
        # An unopenable database: a directory where the file should be.
        (["migrate", "--db", str(tmp_path)], "cannot migrate the database"),
        (["serve", "--db", str(tmp_path / "no" / "such" / "dir.db"), "--addr", "127.0.0.1:0"],
         "cannot create the database"),
        (["serve", "--db", str(tmp_path / "x.db"), "--addr", "0.0.0.0:0"],
         "refusing to listen on 0.0.0.0:0 without an API token"),
    ]
    for args, expected in cases:
        done = _cli(*args, "--log-format", "json")
        assert done.returncode == 2, done.stderr
        (line,) = _json_lines(done.stderr.strip())
        assert expected in line["event"] and line["level"] == "error", line
    done = _cli("serve", "--db", str(tmp_path / "x.db"), "--log-format", "json",
                env={"LOCALFLOW_API_TOKEN": "short"})
    assert done.returncode == 2
    (line,) = _json_lines(done.stderr.strip())
    assert "refusing to start: LOCALFLOW_API_TOKEN" in line["event"]
    assert "short" not in done.stderr  # the token itself is never echoed


def test_sigterm_stops_serve_within_its_grace_and_the_api_says_so(tmp_path):
    proc = procs.start("serve", tmp_path / "lf.db")
    proc.signal(signal.SIGTERM)
    assert proc.popen.wait(timeout=15) == 0
    events = [line["event"] for line in _json_lines(proc.log())]
    assert "api stopped" in events and "worker stopped" in events


# -- api and worker started at the same moment on a new file ------------------------------


def test_api_and_worker_started_together_on_a_new_database_both_start_every_time(tmp_path):
    rounds = int(os.environ.get("LOCALFLOW_TEST_START_ROUNDS", "30"))
    began = time.monotonic()
    for n in range(rounds):
        db = tmp_path / f"race-{n}.db"
        # Alternate which is started first; they start within a millisecond of each other.
        first, second = ("api", "worker") if n % 2 == 0 else ("worker", "api")
        flags = {"api": [], "worker": ["--metrics-addr", "off"]}
        started = {name: procs.start(name, db, *flags[name], wait_for_health=False)
                   for name in (first, second)}
        try:
            for name, proc in started.items():
                _wait_for(lambda proc=proc: "database opened" in proc.log()
                          or proc.popen.poll() is not None, timeout=60,
                          what=f"{name} to open the database")
                assert proc.popen.poll() is None, f"round {n}: {name} died:\n{proc.log()}"
        finally:
            codes = [proc.stop() for proc in started.values()]  # every one, then judge
        assert codes == [0, 0], [proc.log() for proc in started.values()]
        for proc in started.values():
            assert "Traceback" not in proc.log(), proc.log()
    print(f"{rounds} rounds in {time.monotonic() - began:.1f}s")


# -- file modes ----------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_files_and_wake_folder_are_private(tmp_path):
    os.umask(0o022)  # the usual umask, under which SQLite made the file 0644
    db = _migrated(tmp_path)
    assert _mode(db) == 0o600
    with procs.serving(db) as client:
        submitted = client.post("/api/tasks", json={"type": "shell",
                                                    "payload": {"command": "true"}})
        procs.wait_for_status(client, submitted.json()["id"], {"succeeded"})
        for suffix in ("", "-wal", "-shm"):
            assert _mode(Path(f"{db}{suffix}")) == 0o600, suffix
        assert _mode(Path(f"{db}.wake")) == 0o700

    fresh = tmp_path / "fresh.db"  # made by serve itself, not by `localflow migrate`
    with procs.serving(fresh):
        assert _mode(fresh) == 0o600
        assert _mode(Path(f"{fresh}-wal")) == 0o600


@pytest.mark.parametrize("command", ["serve", "api"])
def test_metrics_addr_is_refused_where_it_would_do_nothing(tmp_path, command):
    done = _cli(command, "--db", str(tmp_path / "lf.db"), "--metrics-addr", "127.0.0.1:9999")
    assert done.returncode == 2
    assert "--metrics-addr is for `localflow worker` only" in done.stderr
    assert not (tmp_path / "lf.db").exists()  # refused before anything was done
    # The environment variable (one environment for every service) is no reason to refuse.
    port = procs.free_port()
    proc = procs.start(command, tmp_path / "env.db", port=port,
                       env={"LOCALFLOW_METRICS_ADDR": "127.0.0.1:9999"})
    assert proc.stop() == 0
