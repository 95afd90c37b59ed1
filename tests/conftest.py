"""Shared fixtures: real SQLite files built from migrations/sqlite/, the store and queue on
them, a clock tests can move, and real LocalFlow processes."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from shared import logs
from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore, migrations
from tests import inproc, procs
from tests.procs import REPO

# The app, worker and scheduler log as they do in a process: to stderr, never into the
# stdout a test reads from a command it runs in this process (tests/test_client.py).
logs.configure("console")

# -- every test that starts a LocalFlow process is marked e2e ----------------------------------
# The fast tier (`make test-fast`) leaves e2e out; a test that starts `localflow` (or one of
# our own helper scripts) without the mark would slip a slow, process-level test into it.
# An audit hook sees every subprocess this interpreter starts, fixtures' included.

_spawned: list[str] = []
_SLOW_TIERS = ("e2e", "browser", "compose", "soak")
_OUR_MODULES = ("localflow", "tests.", "bench.")


def _is_localflow(args: object) -> bool:
    """`localflow ...`, `python -m localflow.cli|tests.*|bench.*`, `python bench/x.py`."""
    if isinstance(args, (str, bytes)):
        args = [args]
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in (args or [])]
    if not words:
        return False
    program = Path(words[0]).name
    if program == "localflow":
        return True
    if not program.startswith("python"):
        return False
    if "-m" in words[1:-1]:
        return words[words.index("-m") + 1].startswith(_OUR_MODULES)
    script = next((w for w in words[1:] if not w.startswith("-")), "")
    # Our helper scripts, not a worker's own helpers (worker/handlers/orphan_guard.py runs
    # beside every in-process worker that starts a shell task).
    return script.startswith(("bench/", "tests/", f"{REPO}/bench/", f"{REPO}/tests/"))


def _audit(event: str, args: tuple) -> None:
    if event == "subprocess.Popen" and _is_localflow(args[1]):
        _spawned.append(" ".join(map(str, args[1]))[:200])


sys.addaudithook(_audit)


def _check_spawns(item: pytest.Item) -> None:
    spawned, _spawned[:] = list(_spawned), []
    if spawned and not any(item.get_closest_marker(m) for m in _SLOW_TIERS):
        pytest.fail(f"{item.nodeid} starts LocalFlow processes ({spawned[0]}) but is not "
                    "marked e2e: mark it, or use tests/inproc.py", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _spawned.clear()
    result = yield
    _check_spawns(item)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    _spawned.clear()
    result = yield
    _check_spawns(item)
    return result

# PostgreSQL fixtures (pg_server, pg_url): a throwaway cluster or LOCALFLOW_TEST_PG_URL.
pytest_plugins = ["tests.pg"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file migrated once for the session; db_path copies it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrations.migrate(str(path))
    # The last connection closed checkpointed the WAL into the file and removed it: the file
    # alone is the whole database (in WAL mode, which the file's header keeps).
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert not leftovers, f"the migrated template left {leftovers} beside it"
    return path


@pytest.fixture
def db_path(tmp_path: Path, sqlite_template: Path) -> Path:
    """A migrated database file of this test's own: a byte copy of the session's template,
    which is what migrating a new file makes (measured: 0.1 ms to copy, 30-100 ms to
    migrate). Migrating itself is tested in tests/sqlite/ and tests/test_startup.py."""
    path = tmp_path / "lf.db"
    shutil.copyfile(sqlite_template, path)
    path.chmod(migrations.FILE_MODE)  # what migrate's create_private gives a new file
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db=str(db_path), lease=30.0, retry_base=2.0, retry_max=3600.0)


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    """An opened store on a real, migrated file (the contract tests parametrize this)."""
    opened = await SQLiteStore.open(str(db_path), synchronous="NORMAL")
    yield opened
    await opened.close()


@pytest.fixture
async def queue(store: SQLiteStore, clock: FakeClock, settings: Settings) -> Queue:
    return Queue(store, clock, settings)


@pytest.fixture
def schedules(queue: Queue) -> Schedules:
    return Schedules(queue)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[procs.Proc]:
    """A real `localflow serve` on a free loopback port and its own database file."""
    proc = procs.start("serve", tmp_path / "serve.db")
    yield proc
    proc.stop()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    """`localflow serve`'s app, worker and scheduler in this process, on its own database file
    (tests/inproc.py): an httpx.Client that needs no port."""
    with inproc.serving(tmp_path / "serve.db") as c:
        yield c
