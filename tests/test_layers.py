"""The storage seam holds: api/ and worker/ never touch a database driver, SQL, a PRAGMA, a
database file or a backend's own module; they see shared/store/base.py's interface only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("api", "worker")
DRIVERS = ("sqlite3", "aiosqlite", "psycopg", "psycopg_pool", "asyncpg")
# Only the interface: a backend's package (shared.store.sqlite, shared.store.postgres) is the
# composition root's business, and the SQL files are the backends'.
FORBIDDEN_MODULES = ("shared.store.sqlite", "shared.store.postgres", "shared.sql")
SQL = re.compile(
    r"\b(SELECT\s+(\*|\w+|\()|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b"
    r"|CREATE\s+(TABLE|INDEX)\b|BEGIN\s+IMMEDIATE\b|PRAGMA\b)"
)


def _sources() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (REPO / layer).rglob("*.py"))


def violations(path: Path) -> list[str]:
    """Every place in one file where it reaches past the store interface."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in DRIVERS or name.startswith(FORBIDDEN_MODULES):
                found.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.Attribute) and node.attr in ("db", "data_version"):
            found.append(f"line {node.lineno}: reaches .{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr in ("getsize", "st_size"):
            found.append(f"line {node.lineno}: reads a file size ({node.attr})")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = SQL.search(node.value)
            if match:
                found.append(f"line {node.lineno}: SQL in a string ({match.group(0)!r})")
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_api_and_worker_stay_above_the_store(path: Path) -> None:
    assert violations(path) == []


def test_the_checker_catches_what_it_is_for(tmp_path: Path) -> None:
    """The rule must be able to fail: each kind of breach in a sample file is reported."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import aiosqlite\n"
        "from psycopg import sql\n"
        "from shared.store.sqlite.store import SQLiteStore\n"
        "import os\n"
        "async def f(queue):\n"
        "    await queue.db.fetch_all('SELECT count(*) FROM tasks')\n"
        "    await queue.store.db.data_version()\n"
        "    os.path.getsize(queue.store.path)\n"
        "    x = 'PRAGMA user_version'\n"
    )
    found = "\n".join(violations(sample))
    for expected in ("imports aiosqlite", "imports psycopg", "imports shared.store.sqlite",
                     "reaches .db", "reaches .data_version", "file size", "('SELECT",
                     "('PRAGMA'"):
        assert expected in found, found
