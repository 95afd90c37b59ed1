"""A real PostgreSQL server for tests: the one LOCALFLOW_TEST_PG_URL names, or a throwaway
cluster of the machine's own PostgreSQL (Debian's `postgresql` package) started for the
test session in a temp dir and removed at its end.

Each test gets a database of its own: its rows and its NOTIFY traffic (channels are per
database) stay away from every other test. The first ones are copied from a template that was
migrated once; a test's database is then emptied back to the template's rows and handed to a
later test (Server.checkout/checkin), because copying a database costs a checkpoint and a few
megabytes of files every time, and emptying one costs one TRUNCATE (numbers in
Server.create_database and Server.checkin). LocalFlow needs PostgreSQL 13 or newer
(gen_random_uuid, pg_current_snapshot).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.procs import free_port

ENV_URL = "LOCALFLOW_TEST_PG_URL"
_READY_SECONDS = 60.0


class Unavailable(Exception):
    """No PostgreSQL server can be had here; the message says why (tests skip with it)."""


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _bin_dir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for directory in reversed(candidates):
        if os.access(Path(directory) / "initdb", os.X_OK):
            return Path(directory)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise Unavailable(
        f"no PostgreSQL server binaries (initdb under /usr/lib/postgresql/*/bin or on PATH) "
        f"and {ENV_URL} is not set: install Debian's `postgresql` package or point {ENV_URL} "
        "at a server whose user may create databases"
    )


@dataclass
class Cluster:
    """A postgres process we started; `url` reaches its `postgres` database as superuser."""

    url: str
    proc: subprocess.Popen[bytes] | None = None
    root: Path | None = None
    log_path: Path | None = None
    argv: list[str] = field(default_factory=list)
    popen_kwargs: dict[str, Any] = field(default_factory=dict)

    def kill_server(self) -> None:
        """Stop the server now (fast shutdown: clients are disconnected), keeping its data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def start_server(self) -> None:
        """Start it again on the same data and port (after kill_server); waits until ready."""
        assert self.log_path is not None
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(self.argv, stdout=log_file, stderr=subprocess.STDOUT,
                                         **self.popen_kwargs)
        wait_ready(self)

    def stop(self) -> None:
        try:
            # SIGINT is PostgreSQL's "fast shutdown": disconnect clients, no waiting on them.
            self.kill_server()
        except subprocess.TimeoutExpired:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]


def _as_user() -> dict[str, object]:
    """initdb refuses to run as root: as root, run the server as the `postgres` user."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable(
            "running as root and there is no `postgres` user to run a test cluster as "
            "(initdb refuses root)"
        ) from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def start_cluster(
    listen: Sequence[str] = ("127.0.0.1",), hba: Sequence[str] = (), durable: bool = False
) -> Cluster:
    """initdb + postgres on a free port; returns once it accepts connections.

    `listen`: the addresses it listens on (its `url` always uses the first); each must exist
    on this machine, e.g. a test bridge's address for clients in other network namespaces.
    `hba`: pg_hba.conf lines added to initdb's (which trust the Unix socket and ask loopback
    TCP for the password), e.g. `host all all 169.254.7.0/24 scram-sha-256`.
    `durable`: keep PostgreSQL's own fsync and commit settings (the bench, which compares it
    with SQLite at synchronous=FULL); tests turn them off for speed."""
    return prepare_cluster(listen, hba, durable)()


def prepare_cluster(
    listen: Sequence[str] = ("127.0.0.1",), hba: Sequence[str] = (), durable: bool = False
) -> Callable[[], Cluster]:
    """start_cluster in two steps: what it needs from this process (the binaries, the user,
    PATH) is looked up now, raising Unavailable; the call it returns does the slow part and
    may run in another thread, unaffected by what tests patch meanwhile."""
    return functools.partial(_start_cluster, _bin_dir(), _as_user(),
                             os.environ.get("PATH", "/usr/bin:/bin"), listen, hba, durable)


def _start_cluster(
    bin_dir: Path, as_user: dict[str, Any], search_path: str,
    listen: Sequence[str], hba: Sequence[str], durable: bool,
) -> Cluster:
    root = Path(tempfile.mkdtemp(prefix="localflow-pg-"))
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])  # type: ignore[arg-type]
    data, log_path, pwfile = root / "data", root / "server.log", root / "pw"
    env = {"PATH": search_path, "LC_ALL": "C.UTF-8",
           "HOME": str(root)}
    # TCP connections need the password (so a wrong one is refused, as on a real server);
    # a random one per cluster, never a secret worth keeping.
    password = uuid.uuid4().hex
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, as_user["user"], as_user["group"])  # type: ignore[arg-type]
    init = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
        env=env, cwd=root, capture_output=True, **as_user,  # type: ignore[arg-type]
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
    if hba:
        with open(data / "pg_hba.conf", "a") as hba_file:
            hba_file.write("".join(line + "\n" for line in hba))
    port = free_port()
    argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
            "-c", f"listen_addresses={','.join(listen)}", "-c", f"unix_socket_directories={root}",
            "-c", "max_connections=300", "-c", "shared_buffers=64MB"]
    if not durable:
        # A throwaway cluster: durability buys nothing, speed buys shorter tests.
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    popen_kwargs = {"env": env, "cwd": root, "start_new_session": True, **as_user}
    log_path.touch()
    if as_user:
        os.chown(log_path, as_user["user"], as_user["group"])  # type: ignore[arg-type]
    cluster = Cluster(url=f"postgresql://postgres:{password}@{listen[0]}:{port}/postgres",
                      root=root, log_path=log_path, argv=argv, popen_kwargs=popen_kwargs)
    # Also stopped when this interpreter exits some other way than through the fixture (a
    # script that raised, a session interrupted): no orphaned server left behind.
    atexit.register(cluster.stop)
    try:
        cluster.start_server()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_ready(cluster: Cluster, deadline: float = _READY_SECONDS) -> None:
    """Connect until it answers (the condition), failing early if the server exits."""
    import psycopg

    end = time.monotonic() + deadline
    delay = 0.01
    while True:
        if cluster.proc is not None and cluster.proc.poll() is not None:
            raise RuntimeError(f"postgres exited at start-up:\n{cluster.log()}")
        try:
            with psycopg.connect(cluster.url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise RuntimeError(
                    f"postgres did not accept connections within {deadline:g}s:\n{cluster.log()}"
                ) from None
            time.sleep(delay)  # polling a condition with a deadline, not waiting a fixed time
            delay = min(delay * 2, 0.2)


@dataclass
class Server:
    """The session's server: hands out migrated, empty databases of their own."""

    admin_url: str  # a database we may connect to and issue CREATE DATABASE from
    cluster: Cluster | None = None
    prefix: str = field(default_factory=lambda: f"lf_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    _counter: Iterator[int] = field(default_factory=itertools.count)
    _template: str | None = None
    # Emptied databases waiting for their next test, and what "empty" means: the template's
    # tables, the rows its migrations wrote (COPY text per table) and its schema's fingerprint.
    _free: list[str] = field(default_factory=list)
    _tables: list[str] = field(default_factory=list)
    _seed_rows: dict[str, bytes] = field(default_factory=dict)
    _fingerprint: str = ""

    def url_for(self, dbname: str) -> str:
        return with_database(self.admin_url, dbname)

    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def template(self) -> str:
        """The migrated template every test database is copied from (made once)."""
        if self._template is None:
            from shared.store.postgres import schema as pg_migrate

            name = f"{self.prefix}_template"
            with self._admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            pg_migrate.migrate(self.url_for(name))
            self._remember_template(name)
            self._template = name
        return self._template

    def _remember_template(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url_for(name), autocommit=True) as conn:
            self._fingerprint = _schema_fingerprint(conn)
            self._tables = [r[0] for r in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                "ORDER BY tablename").fetchall()]
            for table in self._tables:
                data = bytearray()
                with conn.cursor().copy(f"COPY {table} TO STDOUT") as copy:
                    for chunk in copy:
                        data += chunk
                if data:
                    self._seed_rows[table] = bytes(data)

    def checkout(self) -> str:
        """A migrated database holding only what the migrations wrote, for one test: an
        emptied one from an earlier test when there is one, else a new copy of the template."""
        if self._free:
            return self.url_for(self._free.pop())
        return self.create_database()

    def checkin(self, url: str) -> None:
        """The test is done with url: empty it for the next test, or drop it where it cannot
        be made exactly like the template again (its schema changed, a session would not go,
        the server refused).

        Measured here under load (~14 on 2 cores): ~60 ms to empty one, connecting
        included, against ~780 ms to copy the template and drop the copy."""
        name = urlsplit(url).path.lstrip("/")
        try:
            self._empty(name)
        except Exception:
            self.drop_database(url)
            return
        self._free.append(name)

    def _empty(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url_for(name), autocommit=True, connect_timeout=10) as conn:
            # The test's own sessions (a store it did not close, a listener, a process it
            # started) go first, as DROP DATABASE ... WITH (FORCE) would make them: none may
            # write into the next test's rows.
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f"SELECT pg_terminate_backend(pid) {_OTHER_SESSIONS}")
            _wait_alone(conn)
            if _schema_fingerprint(conn) != self._fingerprint:
                raise RuntimeError(f"{name}: the test changed the schema")
            with conn.transaction():
                # Replica role: no trigger fires (the event log's, the foreign keys'), so the
                # order of the tables does not matter and the template's rows go back as they
                # were. DELETE, not TRUNCATE: a test's few rows go faster than TRUNCATE makes
                # and removes new files for every table and index (measured: 30 ms, 165 ms).
                conn.execute("SET LOCAL session_replication_role = replica")
                for table in self._tables:
                    conn.execute(f"DELETE FROM {table}")
                for table, data in self._seed_rows.items():
                    with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                        copy.write(data)
                # Identity columns count from their start again, as in a new copy.
                conn.execute("SELECT setval(format('%I.%I', schemaname, sequencename), "
                             "start_value, false) FROM pg_sequences "
                             "WHERE schemaname = 'public'")

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database (migrated unless told otherwise); returns its URL."""
        name = f"{self.prefix}_{next(self._counter)}"
        with self._admin() as conn:
            if migrated:
                # FILE_COPY (PostgreSQL 15+; older servers only copy files): copies the
                # template's few files instead of WAL-logging every block. Measured here
                # under load: median 99 ms to create, against 123 ms (WAL_LOG) and 163 ms
                # (an empty database, then the migrations).
                strategy = " STRATEGY = FILE_COPY" if conn.info.server_version >= 150000 else ""
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template()}"{strategy}')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def database(self, *, migrated: bool = True) -> Iterator[str]:
        """A database for the block: a migrated one from checkout (handed back after it), or
        a new, empty one (dropped after it)."""
        if not migrated:
            url = self.create_database(migrated=False)
            try:
                yield url
            finally:
                self.drop_database(url)
            return
        url = self.checkout()
        try:
            yield url
        finally:
            self.checkin(url)

    def close(self) -> None:
        self._free.clear()
        if self.cluster is not None:
            self.cluster.stop()  # the whole cluster goes: nothing to drop one by one
            return
        with contextlib.suppress(Exception), self._admin() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (self.prefix + "\\_%",),
            ).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The catalogs a migration writes to, with how many rows each holds and the newest
# transaction that wrote one: DDL adds, changes (a new row version, a newer xmin) or removes
# rows there, so an equal fingerprint means the test changed no part of the schema and emptying
# the tables gives back the template. Cheap enough to run after every test (a few ms), unlike
# comparing the definitions themselves.
_CATALOGS = ("pg_class", "pg_attribute", "pg_attrdef", "pg_constraint", "pg_index",
             "pg_trigger", "pg_proc", "pg_type", "pg_namespace", "pg_rewrite", "pg_sequence",
             "pg_extension", "pg_policy", "pg_event_trigger")
_FINGERPRINT_SQL = " UNION ALL ".join(
    f"SELECT '{name}', count(*), max(xmin::text::bigint) FROM {name}" for name in _CATALOGS
)


# Clients' sessions on this database but this one (autovacuum yields to DELETE on its own).
_OTHER_SESSIONS = ("FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")


def _schema_fingerprint(conn: Any) -> str:
    return repr(conn.execute(_FINGERPRINT_SQL).fetchall())


def _wait_alone(conn: Any, deadline: float = 10.0) -> None:
    """Until this is the database's only session (terminated ones take a moment to exit)."""
    end = time.monotonic() + deadline
    delay = 0.002
    while conn.execute(f"SELECT count(*) {_OTHER_SESSIONS}").fetchone()[0]:
        if time.monotonic() > end:
            raise RuntimeError("sessions of the finished test did not go")
        time.sleep(delay)  # polling a condition with a deadline
        delay = min(delay * 2, 0.1)


def open_server() -> Server:
    """The server for this session, or Unavailable saying why there is none."""
    return prepare_server()()


def prepare_server() -> Callable[[], Server]:
    """open_server in two steps, as prepare_cluster: Unavailable is raised now."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable(
            "psycopg is not installed: `uv sync` installs the dev group, which has it"
        ) from None
    url = os.environ.get(ENV_URL)
    if url:
        return functools.partial(_reach, url)
    start = prepare_cluster()

    def started() -> Server:
        cluster = start()
        return Server(admin_url=cluster.url, cluster=cluster)

    return started


def _reach(url: str) -> Server:
    server = Server(admin_url=url)
    try:
        server._admin().close()
    except Exception as exc:
        # Set but wrong is a failure to fix, not a missing server to skip over.
        raise RuntimeError(f"{ENV_URL} is set but cannot be reached: {exc}") from None
    return server


# -- pytest fixtures (registered by tests/conftest.py through pytest_plugins) ---------------

import pytest  # noqa: E402 - fixtures below; the helpers above need no pytest

_early: concurrent.futures.Future[Server] | None = None


def _open_with_template(start: Callable[[], Server]) -> Server:
    server = start()
    server.template()
    return server


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the server (initdb, start-up, the migrated template: seconds, mostly waiting on
    those processes) in the background as soon as the tests that will need it are known, so
    the tests before the first PostgreSQL one run meanwhile."""
    global _early
    if session.config.option.collectonly or _early is not None:
        return
    if not any("pg_server" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    try:
        start = prepare_server()
    except Unavailable:
        return  # pg_server skips, saying why, when a test asks for it
    _early = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="pg-start").submit(_open_with_template, start)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The session's PostgreSQL server; skips (saying why) where none can be had."""
    try:
        server = _early.result() if _early is not None else open_server()
    except Unavailable as exc:
        pytest.skip(f"PostgreSQL cases need a server: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server: Server) -> Iterator[str]:
    """A migrated, empty database of this test's own; emptied (or dropped) after it."""
    with pg_server.database() as url:
        yield url
