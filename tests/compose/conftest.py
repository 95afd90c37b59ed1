"""Fixtures for the container tests: the real image, the real docker-compose.yml.

Each session builds the image once and runs the stack under its own project name, port
and env file, so it neither reads a developer's .env nor touches their running stack.
The tests skip, saying why, only when the machine cannot run containers at all: no
Docker engine, no Compose, or no base image (no registry and no local stand-in). On
such a machine `docker/prepare-offline.sh` (as root) provides all three.

Environment: LOCALFLOW_COMPOSE picks the Compose command (e.g. "docker-compose");
LOCALFLOW_OFFLINE_BUILD=0/1 overrides the wheelhouse detection; LOCALFLOW_KEEP_STACK=1
leaves the stack running after the tests, for debugging.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.procs import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
POSTGRES_COMPOSE_FILE = REPO / "docker-compose.postgres.yml"
BASE_IMAGE = "python:3.11-slim"
POSTGRES_IMAGE = "postgres:15-bookworm"
TEST_IMAGE = "localflow:compose-test"
PREPARE = "run docker/prepare-offline.sh (as root) to set one up"
DONE = {"succeeded", "failed", "cancelled"}


def run(argv: list[str], *, timeout: float = 120, check: bool = True, **kwargs):
    """subprocess.run with text output; on failure the message carries the command's output."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(argv)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_command() -> list[str] | None:
    """Compose v2 (`docker compose`) if present, else docker-compose 1.29 (Debian's)."""
    if os.environ.get("LOCALFLOW_COMPOSE"):
        return shlex.split(os.environ["LOCALFLOW_COMPOSE"])
    if _works(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Skip (with the reason) when this machine cannot run the containers."""
    if not shutil.which("docker"):
        pytest.skip(f"no docker command; {PREPARE}")
    if not _works(["docker", "info"]):
        pytest.skip(f"no Docker engine reachable; {PREPARE}")
    if not _works(["docker", "image", "inspect", BASE_IMAGE]) and not _works(
        ["docker", "pull", BASE_IMAGE]
    ):
        pytest.skip(f"base image {BASE_IMAGE} is absent and cannot be pulled; {PREPARE}")


@dataclass
class Stack:
    """One Compose project running one of the repository's compose files."""

    compose: list[str]
    project: str
    env_file: Path
    port: int
    token: str = ""
    file: Path = COMPOSE_FILE
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    # -- compose and docker ----------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [
            *self.compose,
            "--project-name",
            self.project,
            "--env-file",
            str(self.env_file),
            "--file",
            str(self.file),
            *args,
        ]

    @property
    def env(self) -> dict[str, str]:
        # Interpolation reads the process environment before the env file: drop the
        # developer's LOCALFLOW_* so only the test's settings apply.
        return {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}

    def __call__(self, *args: str, timeout: float = 300, check: bool = True):
        return run(self.argv(*args), timeout=timeout, check=check, env=self.env, cwd=REPO)

    def container(self, service: str) -> str:
        cid = self("ps", "-q", service).stdout.strip()
        assert cid, f"no container for {service}\n{self.logs()}"
        return cid

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    def logs(self) -> str:
        result = self("logs", "--no-color", "--tail", "60", check=False)
        return result.stdout + result.stderr

    def health(self, service: str) -> str:
        """"healthy" when every container of the service is; else the first other state."""
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        cids = self.containers(service)  # several once the service is scaled
        if not cids:
            return "absent"
        states = run(["docker", "inspect", "-f", fmt, *cids], check=False).stdout.split()
        if len(states) != len(cids):
            return "gone"  # a container went away between ps and inspect
        return next((state for state in states if state != "healthy"), "healthy")

    def wait_healthy(self, *services: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for service in services:
            while (state := self.health(service)) != "healthy":
                # "unhealthy" comes only after the start period and several failed probes.
                if state in ("unhealthy", "exited", "dead") or time.monotonic() > deadline:
                    raise AssertionError(f"{service} is {state}, not healthy\n{self.logs()}")
                time.sleep(0.5)

    def up(self, *args: str) -> None:
        self("up", "-d", *args)
        self.wait_healthy("api", "worker")

    def containers(self, service: str) -> list[str]:
        """Every container of a (possibly scaled) service."""
        return self("ps", "-q", service).stdout.split()

    # -- the API ---------------------------------------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def submit(self, task_type: str, payload: dict) -> str:
        r = self.client.post(
            "/api/tasks", json={"type": task_type, "payload": payload}, headers=self.auth
        )
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def task(self, task_id: str) -> dict:
        r = self.client.get(f"/api/tasks/{task_id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_status(self, task_id: str, statuses: set[str], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while (task := self.task(task_id))["status"] not in statuses:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"task {task_id} still {task['status']}, wanted {statuses}:\n"
                    f"{json.dumps(task, indent=1)}\n{self.logs()}"
                )
            time.sleep(0.2)
        return task


def _offline_build() -> str:
    """Build from docker/wheelhouse alone when docker/wheelhouse.sh has filled it.

    A wheelhouse is refreshed first (a no-op unless uv.lock changed since), so a stale
    one cannot fail the build; if refreshing fails, the build uses the index instead.
    """
    if "LOCALFLOW_OFFLINE_BUILD" in os.environ:
        return os.environ["LOCALFLOW_OFFLINE_BUILD"]
    if not (REPO / "docker" / "wheelhouse" / ".stamp").exists():
        return "0"
    refreshed = run(["bash", str(REPO / "docker" / "wheelhouse.sh")], timeout=600, check=False)
    if refreshed.returncode != 0:
        print(f"docker/wheelhouse.sh failed; building online:\n{refreshed.stderr}")
        return "0"
    return "1"


def _start(file: Path, tmp_path_factory, extra_env: str = "") -> Stack:
    compose = compose_command()
    if compose is None:
        pytest.skip(f"neither `docker compose` nor docker-compose is installed; {PREPARE}")
    port = free_port()
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    # No LOCALFLOW_API_TOKEN: exercise what a fresh clone gets, the generated token.
    env_file.write_text(
        f"LOCALFLOW_IMAGE={TEST_IMAGE}\n"
        f"LOCALFLOW_OFFLINE_BUILD={_offline_build()}\n"
        f"LOCALFLOW_HOST_PORT={port}\n"
        # Short lease: a task whose worker was SIGKILLed is re-run within seconds.
        "LOCALFLOW_LEASE=5s\n"
        "LOCALFLOW_GRACE=20s\n"
        "LOCALFLOW_STOP_GRACE_PERIOD=30s\n" + extra_env
    )
    return Stack(compose, f"lftest{uuid.uuid4().hex[:8]}", env_file, port, file=file)


def _run_stack(s: Stack) -> Iterator[Stack]:
    try:
        # Build one service: every LocalFlow service uses the same image.
        s("build", "api", timeout=900)
        s.up()
        s.token = s("exec", "-T", "api", "cat", "/data/api-token").stdout.strip()
        assert s.token, "the api container generated no token"
        yield s
    finally:
        s.client.close()
        if os.environ.get("LOCALFLOW_KEEP_STACK") != "1":
            s("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


@pytest.fixture(scope="session")
def stack(docker_ready, tmp_path_factory) -> Iterator[Stack]:
    """docker-compose.yml: api and worker on one SQLite volume."""
    yield from _run_stack(_start(COMPOSE_FILE, tmp_path_factory))


@pytest.fixture(scope="session")
def postgres_stack(docker_ready, tmp_path_factory) -> Iterator[Stack]:
    """docker-compose.postgres.yml: PostgreSQL, the api and workers with no shared volume."""
    if not _works(["docker", "image", "inspect", POSTGRES_IMAGE]) and not _works(
        ["docker", "pull", POSTGRES_IMAGE]
    ):
        pytest.skip(f"image {POSTGRES_IMAGE} is absent and cannot be pulled; {PREPARE}")
    yield from _run_stack(
        _start(POSTGRES_COMPOSE_FILE, tmp_path_factory, "POSTGRES_PASSWORD=compose-test-pw\n")
    )
