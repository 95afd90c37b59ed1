"""Start real LocalFlow processes for end-to-end tests, and stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL if it will not go. Returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def start(
    command: str,
    db: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    log_dir: Path | None = None,
    wait_for_health: bool = True,
) -> Proc:
    """Run `localflow <command>` on db; for serve/api, wait until /health answers."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    full_env.update({"LOCALFLOW_DB": str(db), "LOCALFLOW_LOG_FORMAT": "json"})
    full_env.update(env or {})
    argv = [sys.executable, "-m", "localflow.cli", command, *args]
    url = None
    if command in ("serve", "api"):
        port = port or free_port()
        argv += ["--addr", f"127.0.0.1:{port}"]
        url = f"http://127.0.0.1:{port}"
    log_path = (log_dir or db.parent) / f"{command}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(
            argv, cwd=REPO, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    proc = Proc(popen, log_path, url)
    if url and wait_for_health:
        wait_healthy(proc)
    return proc


def wait_until(check: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` seconds (a callable is
    asked then, so the message can show the state at the end). A deadline, not a guess at
    speed: a busy machine only makes it take longer."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            named = what() if callable(what) else what
            raise AssertionError(f"gave up after {timeout}s waiting for {named}")
        time.sleep(0.05)


def wait_healthy(proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"process exited with {proc.popen.returncode}:\n{proc.log()}")
        try:
            if httpx.get(f"{proc.url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no healthy answer from {proc.url} in {timeout}s:\n{proc.log()}")


def wait_for_status(
    client: httpx.Client, task_id: str, statuses: set[str], timeout: float = 60.0
) -> dict:
    """Poll a task until its status is one of `statuses`; returns the task."""
    deadline = time.monotonic() + timeout
    task: dict = {}
    while time.monotonic() < deadline:
        task = client.get(f"/api/tasks/{task_id}").json()
        if task.get("status") in statuses:
            return task
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} never reached {statuses}; last seen {task}")


@contextlib.contextmanager
def serving(db: Path, env: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    """A `localflow serve` on db, and a client for it that knows its database file."""
    proc = start("serve", db, env=env)
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            client.db_path = db  # type: ignore[attr-defined]
            yield client
    finally:
        proc.stop()


def task_count(db: Path) -> int:
    """Tasks in the database file, read directly: what the API wrote, not what it says."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
