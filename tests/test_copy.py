"""`localflow copy` for real: a SQLite file with a past (tests/history.py) copied by the CLI,
run as a subprocess, into a PostgreSQL database (tests/pg.py), then read back through the
PostgreSQL store and compared field by field with what the SQLite store reads. Also: a
non-empty target is refused (and --append completes it), bad --from/--to give one line and
exit 2 without the password, and running tasks are rescued on the target after their lease."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store import open_store
from shared.store.base import TRANSFER_TABLES, Store
from shared.store.sqlite import SQLiteStore
from tests import procs
from tests.history import LEASE, make_history

pytestmark = pytest.mark.e2e


def localflow(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "localflow.cli", *args], env=env, capture_output=True,
        text=True, timeout=120, cwd=procs.REPO,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    return lines[0]


def copied_counts(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+): (\d+) copied", stdout, re.M)}


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[tuple[str, SQLiteStore, dict[str, str]]]:
    """A real SQLite file with a past, and the store reading it."""
    path = str(tmp_path / "localflow.db")
    store = await open_store(Settings(db=path))
    clock = FakeClock()
    queue = Queue(store, clock, Settings(db=path, lease=LEASE))
    ids = await make_history(queue, Schedules(queue), clock)
    yield path, store, ids  # type: ignore[misc]
    await store.close()


@pytest.fixture
async def target(pg_url: str) -> AsyncIterator[Store]:
    store = await open_store(Settings(db=pg_url), migrate_first=False)
    yield store
    await store.close()


async def test_copies_everything_field_by_field(source, target: Store, pg_url: str):
    path, sqlite, ids = source
    result = localflow("copy", "--from", path, "--to", pg_url, "--batch", "3")
    assert result.returncode == 0, result.stderr
    expected = await sqlite.table_counts()
    assert copied_counts(result.stdout) == expected
    # make_history's operator actions (cancels, schedule changes) left 7 audit entries.
    assert expected == {"workers": 2, "schedules": 3, "tasks": 12, "task_attempts": 8,
                        "audit": 7, "webhook_deliveries": 0}
    assert await target.table_counts() == expected

    # Every task, as the API would show it, and its attempts in order.
    for what, task_id in ids.items():
        assert await target.get(task_id) == await sqlite.get(task_id), what
        assert await target.attempts(task_id) == await sqlite.attempts(task_id), what
    # Every column of every row, including what the API does not show (claim tokens, leases,
    # request hashes, worker ids, fire times, schedule state).
    for table in TRANSFER_TABLES:
        assert await target.export_rows(table, "", 100) == await sqlite.export_rows(
            table, "", 100), table
    for schedule in await sqlite.list_schedules(100):
        assert await target.get_schedule(schedule.id) == schedule
    assert await target.task_id_by_key("key-ok") == ids["succeeded"]
    assert await target.task_id_by_key("key-q") == ids["queued"]
    assert await target.counts() == await sqlite.counts()
    # The audit trail reads back the same through the ordinary interface.
    assert await target.list_audit(action=None, target=None, cursor=None, limit=100) == (
        await sqlite.list_audit(action=None, target=None, cursor=None, limit=100))
    assert "2 tasks were running in the source" in result.stdout


async def test_running_tasks_are_rescued_on_the_target_after_their_lease(
    source, target: Store, pg_url: str
):
    path, _, ids = source
    assert localflow("copy", "--from", path, "--to", pg_url).returncode == 0
    running = await target.get(ids["running"])
    assert running.status == "running"
    # On the target, a worker's rescuer finds the lease ran out, as after a crash.
    clock = FakeClock(start=running.updated_at.timestamp() + LEASE + 1)
    rescued = await Queue(target, clock).rescue_expired()
    assert set(rescued) == {ids["running"], ids["cancelling"]}
    after = await target.get(ids["running"])
    assert after.status == "queued" and after.attempts == 1
    assert [a.outcome for a in await target.attempts(ids["running"])] == ["lost"]
    assert (await target.get(ids["cancelling"])).status == "cancelled"


async def test_refuses_a_non_empty_target_and_append_finishes_it(
    source, target: Store, pg_url: str
):
    path, sqlite, _ = source
    assert localflow("copy", "--from", path, "--to", pg_url).returncode == 0
    before = await target.table_counts()

    again = one_line(localflow("copy", "--from", path, "--to", pg_url))
    assert "not empty" in again and "--append" in again
    assert await target.table_counts() == before

    # --append: nothing new in the source, so nothing is inserted and every row is skipped.
    appended = localflow("copy", "--from", path, "--to", pg_url, "--append")
    assert appended.returncode == 0, appended.stderr
    assert copied_counts(appended.stdout) == dict.fromkeys(before, 0)
    assert "12 skipped" in appended.stdout
    assert await target.table_counts() == before

    # A copy that stopped partway: remove some tasks from the target; --append restores them.
    victims = [r["id"] for r in await sqlite.export_rows("tasks", "", 4)
               if r["status"] != "running"]
    for task_id in victims:
        assert await target.delete(task_id) == "deleted"
    resumed = localflow("copy", "--from", path, "--to", pg_url, "--append")
    assert resumed.returncode == 0, resumed.stderr
    assert copied_counts(resumed.stdout)["tasks"] == len(victims)
    assert await target.table_counts() == before
    for task_id in victims:
        assert await target.attempts(task_id) == await sqlite.attempts(task_id)


def test_bad_from_and_to_give_one_line_and_exit_2(tmp_path: Path, pg_url: str):
    missing = tmp_path / "nope.db"
    line = one_line(localflow("copy", "--from", str(missing), "--to", pg_url))
    assert "--from" in line and "no such file" in line
    assert not missing.exists()

    src = tmp_path / "src.db"
    src.write_bytes(b"")
    line = one_line(localflow("copy", "--from", str(src), "--to", "mysql://u:hunter22@h/db"))
    assert "--to" in line and "unsupported scheme" in line and "hunter22" not in line

    # Unreachable server: a closed port, with a password that must not be printed.
    closed = f"postgresql://app:s3cret-pw-123@127.0.0.1:{procs.free_port()}/localflow"
    line = one_line(localflow("copy", "--from", str(src), "--to", closed))
    assert "--to" in line and "s3cret-pw-123" not in line

    line = one_line(localflow("copy", "--from", str(src), "--to", str(src)))
    assert "same database" in line
