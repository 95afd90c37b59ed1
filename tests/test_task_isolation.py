"""Task programs cannot reach the worker's secrets (issue 11 item 9): real `localflow worker`
processes started with the API token in their environment, and shell tasks that try to read it
through /proc/$PPID/environ, read the token file, and write the database.

Three ways a worker runs: as root with LOCALFLOW_TASK_USER (tasks switch to that user), as an
ordinary user without it (tasks share the user; the worker is non-dumpable), and the container's
worker (docker/entrypoint.py started as root: file access as the container user, tasks as
another user).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc and prctl"),
]

TOKEN = "isolation-token-3c9e1f7a5b2d"
TASK_USER = "nobody"
CONTAINER_USER = "daemon"  # stands in for the image's `localflow` user
SYSTEM_PYTHON = "/usr/bin/python3"


def _task_uid() -> int:
    return pwd.getpwnam(TASK_USER).pw_uid


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    """Like the image's /data: reachable by anyone (0755), the files in it private to their
    owner. (pytest's own tmp_path is inside a 0700 directory, which would prove nothing.)"""
    path = Path(tempfile.mkdtemp(prefix="lf-isolation-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _token_file(data: Path, owner: int = 0) -> Path:
    path = data / "api-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    os.chown(path, owner, owner)
    return path


def _sh(script: str) -> dict:
    return {"type": "shell", "max_attempts": 1,
            "payload": {"command": "sh", "args": ["-c", script], "timeout": 20}}


def _probes(data: Path) -> dict[str, dict]:
    db = data / "lf.db"
    return {
        "ids": _sh("id -u; id -G"),
        "environ": _sh('tr "\\0" "\\n" < /proc/$PPID/environ'),
        "mem": _sh('head -c 64 /proc/$PPID/mem'),
        "token_file": _sh(f"cat {data / 'api-token'}"),
        "write_db": _sh(f"echo junk >> {db}"),
        "write_wal": _sh(f"echo junk >> {db}-wal"),
        "own_env": _sh("env"),
    }


def _run_probes(api: procs.Proc, data: Path) -> dict[str, dict]:
    """Submit every probe, wait for each to finish, return the stored tasks by probe name."""
    done: dict[str, dict] = {}
    with httpx.Client(base_url=api.url, timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        ids = {}
        for name, body in _probes(data).items():
            r = c.post("/api/tasks", json=body)
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
        for name, task_id in ids.items():
            procs.wait_for_status(c, task_id, {"succeeded", "failed"}, timeout=90)
            done[name] = c.get(f"/api/tasks/{task_id}").json()
            done[name]["_raw"] = c.get(f"/api/tasks/{task_id}").text
    return done


def _assert_no_secret_reached_a_task(done: dict[str, dict]) -> None:
    for name, task in done.items():
        assert TOKEN not in task["_raw"], f"{name} read the token: {task['_raw']}"
    for name in ("environ", "mem", "token_file", "write_db", "write_wal"):
        assert done[name]["status"] == "failed", (name, done[name])


def _start_api(data: Path) -> procs.Proc:
    return procs.start("api", data / "lf.db", env={"LOCALFLOW_API_TOKEN": TOKEN},
                       log_dir=data)


def _wait_for_health(port: int, worker: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert worker.poll() is None, log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def _worker(data: Path, argv: list[str], env: dict[str, str], python: str = sys.executable):
    """A worker process (argv after the interpreter) with the token in its environment."""
    port = procs.free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    full_env.update({
        "LOCALFLOW_DB": str(data / "lf.db"), "LOCALFLOW_LOG_FORMAT": "json",
        "LOCALFLOW_API_TOKEN": TOKEN, "LOCALFLOW_METRICS_ADDR": f"127.0.0.1:{port}",
        "LOCALFLOW_POLL": "0.05", "PYTHONPATH": str(procs.REPO), **env,
    })
    log = data / f"worker-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([python, *argv], cwd=procs.REPO, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, port, log


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _system_python_matches() -> bool:
    """The system's interpreter can load this environment's compiled packages."""
    if not Path(SYSTEM_PYTHON).exists():
        return False
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    return version == str(sys.version_info[:2])


def test_root_worker_runs_tasks_as_the_task_user(data_dir):
    _token_file(data_dir)
    api = _start_api(data_dir)
    worker, port, log = _worker(data_dir, ["-m", "localflow.cli", "worker"], {
        "LOCALFLOW_TASK_USER": TASK_USER,
        "LOCALFLOW_API_TOKEN_FILE": str(data_dir / "api-token"),
    })
    try:
        _wait_for_health(port, worker, log)
        done = _run_probes(api, data_dir)
    finally:
        _stop(worker)
        api.stop()
    _assert_no_secret_reached_a_task(done)
    uid = str(_task_uid())
    assert done["ids"]["result"]["stdout"].split() == [uid, str(pwd.getpwnam(TASK_USER).pw_gid)]
    assert _integrity(data_dir / "lf.db") == "ok"
    assert TOKEN not in log.read_text()
    assert "the worker does not use LOCALFLOW_API_TOKEN" in log.read_text()


# What an ordinary user's worker does for its same-user tasks. The project's interpreter lives
# under /root here, out of an ordinary user's reach, so the system's Python runs the real
# protect_process() (standard library only) as `nobody`, and its child tries to read its
# environment: once unprotected (the leak the issue reports: proves the probe sees it), once
# protected.
_SAME_USER_PARENT = r"""
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from worker.task_identity import protect_process
if sys.argv[2] == "protect":
    assert protect_process()
probe = subprocess.run(["sh", "-c", 'tr "\\0" "\\n" < /proc/$PPID/environ'],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
print(probe.stdout + probe.stderr)
"""


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="needs the system Python")
@pytest.mark.parametrize("mode", ["unprotected", "protect"])
def test_same_user_tasks_cannot_read_a_protected_worker_environment(mode):
    user = pwd.getpwnam(TASK_USER)
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", _SAME_USER_PARENT, str(procs.REPO), mode],
        env={"PATH": "/usr/bin:/bin", "LOCALFLOW_API_TOKEN": TOKEN}, cwd="/",
        user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    if mode == "unprotected":
        assert f"LOCALFLOW_API_TOKEN={TOKEN}" in out.stdout
    else:
        assert TOKEN not in out.stdout and "Permission denied" in out.stdout, out.stdout


@pytest.mark.skipif(not _system_python_matches(),
                    reason=f"needs {SYSTEM_PYTHON} of this Python's version, to load our packages")
def test_container_worker_keeps_files_as_its_user_and_tasks_as_another(data_dir):
    """docker/entrypoint.py started as root, as the compose file starts the worker."""
    user = pwd.getpwnam(CONTAINER_USER)
    os.chown(data_dir, user.pw_uid, user.pw_gid)
    _token_file(data_dir, owner=user.pw_uid)  # what /data/api-token is in the image
    entrypoint = str(procs.REPO / "docker" / "entrypoint.py")
    # As in the image, the interpreter must be readable by the container user; this project's
    # lives under /root, so the system's Python (the same 3.11) runs it with our packages.
    site = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    worker, port, log = _worker(data_dir, [entrypoint, "worker"], {
        "LOCALFLOW_CONTAINER_USER": CONTAINER_USER, "LOCALFLOW_TASK_USER": TASK_USER,
        "LOCALFLOW_API_TOKEN_FILE": str(data_dir / "api-token"),
        "PYTHONPATH": f"{procs.REPO}:{site}",
    }, python=SYSTEM_PYTHON)
    api = None
    try:
        _wait_for_health(port, worker, log)  # the worker made the database, as its user
        api = _start_api(data_dir)
        done = _run_probes(api, data_dir)
        status = (Path("/proc") / str(worker.pid) / "status").read_text()
        owners = {p.name: p.stat().st_uid for p in data_dir.glob("lf.db*")}
        with httpx.Client(base_url=api.url, timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            slow = c.post("/api/tasks", json=_sh("sleep 60")).json()["id"]
            procs.wait_for_status(c, slow, {"running"})
            started = time.monotonic()
            assert c.post(f"/api/tasks/{slow}/cancel").status_code == 200
            procs.wait_for_status(c, slow, {"cancelled"})
            # The worker may signal its task user's processes (it keeps CAP_KILL).
            assert time.monotonic() - started < 20
    finally:
        _stop(worker)
        if api is not None:
            api.stop()
    _assert_no_secret_reached_a_task(done)
    assert done["ids"]["result"]["stdout"].split()[0] == str(_task_uid())
    # uids: real, effective, saved, filesystem: root to switch tasks, files as its user.
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["0", "0", "0", str(user.pw_uid)]
    # The database, its WAL and shared memory belong to the container user, as the API's do.
    assert owners["lf.db"] == owners["lf.db-wal"] == owners["lf.db-shm"] == user.pw_uid, owners
    assert _integrity(data_dir / "lf.db") == "ok"
    assert TOKEN not in log.read_text()


@pytest.mark.parametrize(("user", "why"), [
    ("no-such-user-3f9a", "no such user 'no-such-user-3f9a'"),
    ("root", "LOCALFLOW_TASK_USER=root is root: that separates nothing"),
    ("0", "LOCALFLOW_TASK_USER=0 is root: that separates nothing"),
])
def test_a_task_user_that_separates_nothing_is_refused_at_start(data_dir, user, why):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    out = subprocess.run(
        [sys.executable, "-m", "localflow.cli", "worker"], cwd=procs.REPO, timeout=60,
        env={**env, "LOCALFLOW_DB": str(data_dir / "lf.db"), "LOCALFLOW_TASK_USER": user},
        capture_output=True, text=True,
    )
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.strip().splitlines()  # one clear line
    assert line.startswith("localflow: refusing to start: ") and why in line
    assert "LOCALFLOW_TASK_USER" in line
    assert not (data_dir / "lf.db").exists()
