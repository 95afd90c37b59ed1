"""Processes the bench starts: `localflow api|worker` and the bench's own helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Compiled bytecode for the bench's processes (git-ignored; kept between runs). A deployed
# LocalFlow imports compiled bytecode: the image compiles its packages and /app at build time,
# and a plain `python` writes __pycache__ on first import. A shell with PYTHONDONTWRITEBYTECODE=1
# (as on the machine these numbers come from) would make every process compile every module
# from source at start-up, and the compiler's freed memory stays in the process: ~5 MB of the
# API's resident memory that no deployment has (bench/README.md, "Session 4: API memory").
# localflow_side.warm_up fills it before anything is measured.
PYCACHE = REPO / "bench" / "results" / "pycache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LOCALFLOW_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"LOCALFLOW_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
    env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))  # see PYCACHE
    env.update(extra)
    return env


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def localflow(command: str, db: Path | str, workdir: Path, *args: str) -> Proc:
    """`localflow <command>` on db (a file or a postgresql:// URL, given in LOCALFLOW_DB so
    a password stays out of the process list and the recorded argv); for api/serve, waits
    until /health answers."""
    argv = [sys.executable, "-m", "localflow.cli", command, *args]
    url = None
    if command in ("api", "serve"):
        port = free_port()
        argv += ["--addr", f"127.0.0.1:{port}"]
        url = f"http://127.0.0.1:{port}"
    proc = _start(argv, workdir / f"{command}-{time.monotonic_ns()}.log",
                  clean_env(LOCALFLOW_DB=str(db)))
    proc.url = url
    if url:
        _wait_healthy(proc)
    return proc


def python_module(module: str, workdir: Path, *args: str, db: Path | str | None = None,
                  stdin: int | None = None) -> Proc:
    argv = [sys.executable, "-m", module, *args]
    name = module.rsplit(".", 1)[-1]
    env = clean_env() if db is None else clean_env(LOCALFLOW_DB=str(db))
    return _start(argv, workdir / f"{name}-{time.monotonic_ns()}.log", env,
                  stdout=subprocess.PIPE, stdin=stdin)


def _start(argv: list[str], log_path: Path, env: dict[str, str], stdout: int | None = None,
           stdin: int | None = None) -> Proc:
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=stdin, stdout=stdout or log_file, stderr=log_file
        )
    return Proc(popen, log_path, argv)


def wait_line(proc: Proc, expected: str, timeout: float = 30.0) -> None:
    """Block until the helper prints `expected` on stdout (it says when it is ready)."""
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.popen.stdout.readline().decode().strip()
        if line == expected:
            return
        if not line and proc.popen.poll() is not None:
            break
    raise RuntimeError(f"{proc.argv} never said {expected!r}:\n{proc.log()}")


def _wait_healthy(proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.argv} exited with {proc.popen.returncode}:\n{proc.log()}")
        try:
            if httpx.get(f"{proc.url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no healthy answer from {proc.url} in {timeout}s:\n{proc.log()}")


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process now (VmRSS), in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; count fields after its closing paren.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
