"""--db / LOCALFLOW_DB: a SQLite path or a postgresql:// URL; a bad one is one clear line and
exit 2, and a password never shows (shared/store/__init__.py, localflow/cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.errors import BadDatabaseURL
from shared.store import check_db, is_postgres, password_of, redact
from tests import procs

SECRET = "s3cr3t-Pa55word"


@pytest.mark.parametrize(
    ("db", "postgres"),
    [
        ("localflow.db", False),
        ("/var/lib/localflow/queue.db", False),
        ("./data/with:colon.db", False),
        ("postgresql://lf:pw@db:5432/localflow", True),
        ("postgres://lf@db/localflow", True),
        ("POSTGRESQL://lf@db/localflow", True),
    ],
)
def test_the_backend_follows_the_scheme(db, postgres):
    assert is_postgres(db) is postgres
    assert check_db(db) == db


@pytest.mark.parametrize(
    ("db", "says"),
    [
        ("", "--db is empty"),
        ("mysql://lf:pw@db/localflow", "unsupported scheme 'mysql'"),
        ("sqlite:///tmp/x.db", "unsupported scheme 'sqlite'"),
        ("postgresql://lf:pw@db:99999/localflow", "Port out of range"),
        ("postgresql://lf:pw@db:port/localflow", "Port could not be cast"),
        ("postgresql://lf:pw@db:5432/", "no database name"),
        ("postgresql://lf:pw@db:5432", "no database name"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(db, says):
    with pytest.raises(BadDatabaseURL) as caught:
        check_db(db)
    assert says in str(caught.value)
    assert "pw" not in str(caught.value).replace("postgresql", "")


@pytest.mark.parametrize(
    ("db", "shown"),
    [
        ("localflow.db", "localflow.db"),
        (f"postgresql://lf:{SECRET}@db:5432/localflow", "postgresql://lf@db:5432/localflow"),
        (f"postgres://lf:{SECRET}@db/lf?sslmode=require&password={SECRET}",
         "postgres://lf@db/lf?sslmode=require"),
        ("postgresql://db/localflow", "postgresql://db/localflow"),
        (f"postgresql://:{SECRET}@db/lf", "postgresql://db/lf"),
    ],
)
def test_redact_drops_every_password(db, shown):
    assert redact(db) == shown
    assert SECRET not in redact(db)


def test_password_of_finds_it_for_the_log_redactor():
    assert password_of(f"postgresql://lf:{SECRET}@db/lf") == SECRET
    assert password_of(f"postgresql://lf@db/lf?password={SECRET}") == SECRET
    assert password_of("postgresql://lf@db/lf") is None
    assert password_of("localflow.db") is None


def _localflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "localflow.cli", *args], env={**base, **(env or {})},
        capture_output=True, text=True, timeout=60, cwd=procs.REPO,
    )


def _one_clear_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("localflow: "), result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
    return lines[0]


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["migrate", "serve", "api", "worker"])
def test_a_bad_url_is_one_line_and_exit_2(command):
    line = _one_clear_line(_localflow(command, "--db", f"mysql://lf:{SECRET}@db/lf"))
    assert "unsupported scheme 'mysql'" in line and "mysql://lf@db/lf" in line


@pytest.mark.e2e
def test_a_bad_url_in_the_environment_is_refused_too():
    line = _one_clear_line(
        _localflow("migrate", env={"LOCALFLOW_DB": f"postgresql://lf:{SECRET}@db:70000/lf"})
    )
    assert "Port out of range" in line


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_an_unreachable_postgres_is_one_line_and_exit_2(command):
    """Port 1 on loopback: nothing listens. Without the postgres extra the line says so; with
    it, the line says the server cannot be reached. Either way: no traceback, no password."""
    line = _one_clear_line(
        _localflow(command, "--addr", "127.0.0.1:0",
                   "--db", f"postgresql://lf:{SECRET}@127.0.0.1:1/localflow")
    )
    assert "PostgreSQL" in line or "127.0.0.1" in line, line


async def test_the_system_page_shows_the_database_without_its_password(queue):
    """The dashboard's configuration table and storage card, in process on a real file: a
    postgresql:// --db is shown redacted (the store here is SQLite; the page shows both)."""
    from litestar.testing import AsyncTestClient

    from api.app import create_app
    from shared.settings import Settings

    url = f"postgresql://lf:{SECRET}@db.example:5432/localflow"
    app = create_app(queue, Settings(db=url))
    async with AsyncTestClient(app, base_url="http://127.0.0.1:8080") as http:
        page = await http.get("/dashboard/system")
    assert page.status_code == 200
    assert SECRET not in page.text
    assert "postgresql://lf@db.example:5432/localflow" in page.text
    assert queue.store.describe() in page.text and "Write-ahead log size" in page.text
