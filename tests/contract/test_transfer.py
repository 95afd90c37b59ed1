"""Contract of the bulk reads and writes `localflow copy` is built on (Store.table_counts,
export_rows, import_rows), on every backend: a database with a past, exported in small
batches into a fresh database of the same engine, must read back identical; importing again
inserts nothing. The cross-engine copy (SQLite to PostgreSQL) is tests/test_copy.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store import open_store
from shared.store.base import TRANSFER_COLUMNS, TRANSFER_TABLES, Store, TransferRow
from tests.history import make_history, shell


@pytest.fixture
async def fresh(backend: str, tmp_path: Path, request: pytest.FixtureRequest
                ) -> AsyncIterator[Store]:
    """A second, empty, migrated database on the same engine."""
    if backend == "sqlite":
        opened = await open_store(Settings(db=str(tmp_path / "fresh.db")))
        yield opened
        await opened.close()
        return
    server = request.getfixturevalue("pg_server")
    with server.database() as url:
        opened = await open_store(Settings(db=url), migrate_first=False)
        yield opened
        await opened.close()


async def everything(store: Store, batch: int = 1000) -> dict[str, list[TransferRow]]:
    out: dict[str, list[TransferRow]] = {}
    for table in TRANSFER_TABLES:
        rows, after = [], ""
        while page := await store.export_rows(table, after, batch):
            assert len(page) <= batch
            rows += page
            after = page[-1]["id"]
        out[table] = rows
    return out


async def test_an_empty_store_counts_and_exports_nothing(store: Store):
    assert await store.table_counts() == {
        "workers": 0, "schedules": 0, "tasks": 0, "task_attempts": 0, "audit": 0,
        "webhook_deliveries": 0}
    for table in TRANSFER_TABLES:
        assert await store.export_rows(table, "", 10) == []


async def test_export_pages_by_id_with_every_column(
    store: Store, queue: Queue, schedules: Schedules, clock: FakeClock
):
    await make_history(queue, schedules, clock)
    rows = await everything(store, batch=2)
    for table in TRANSFER_TABLES:
        ids = [r["id"] for r in rows[table]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for row in rows[table]:
            assert set(TRANSFER_COLUMNS[table]) <= set(row)
    counts = await store.table_counts()
    assert counts["tasks"] == len(rows["tasks"]) == 12
    assert counts["schedules"] == len(rows["schedules"]) == 3
    assert counts["workers"] == len(rows["workers"]) == 2
    assert counts["task_attempts"] == sum(len(t["attempt_rows"]) for t in rows["tasks"]) == 8
    # The audit trail goes too: make_history's cancels (and any other operator action).
    assert counts["audit"] == len(rows["audit"]) >= 1
    assert {r["action"] for r in rows["audit"]} >= {"task.cancel"}
    assert all(isinstance(r["details"], str) for r in rows["audit"])
    # Neutral values: flags are booleans on both engines, JSON stays the stored text.
    by_status = {t["status"] for t in rows["tasks"]}
    assert by_status == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert all(isinstance(t["cancel_requested"], bool) for t in rows["tasks"])
    assert all(isinstance(s["enabled"], bool) for s in rows["schedules"])
    assert all(isinstance(t["payload"], str) for t in rows["tasks"])


async def test_import_into_a_fresh_store_reads_back_identical_and_twice_inserts_nothing(
    store: Store, fresh: Store, queue: Queue, schedules: Schedules, clock: FakeClock
):
    ids = await make_history(queue, schedules, clock)
    source = await everything(store)
    attempts = 0
    for table in TRANSFER_TABLES:
        for start in range(0, len(source[table]), 3):  # several transactions per table
            done = await fresh.import_rows(table, source[table][start:start + 3])
            assert done.skipped == 0
            attempts += done.attempts
    assert attempts == sum(len(t["attempt_rows"]) for t in source["tasks"])
    assert await everything(fresh, batch=4) == source
    assert await fresh.table_counts() == await store.table_counts()
    # Read through the ordinary interface too: the task, its attempts in order.
    for task_id in ids.values():
        assert await fresh.get(task_id) == await store.get(task_id)
        assert await fresh.attempts(task_id) == await store.attempts(task_id)
    for schedule in await store.list_schedules(100):
        assert await fresh.get_schedule(schedule.id) == schedule

    for table in TRANSFER_TABLES:
        again = await fresh.import_rows(table, source[table])
        assert (again.rows, again.skipped, again.attempts) == (0, len(source[table]), 0)
    assert await fresh.table_counts() == await store.table_counts()


async def test_import_skips_a_task_whose_idempotency_key_is_taken(
    store: Store, fresh: Store, queue: Queue, clock: FakeClock
):
    await queue.enqueue(shell("a", idempotency_key="same"))
    other = Queue(fresh, clock)
    mine, _ = await other.enqueue(shell("b", idempotency_key="same"))
    rows = await store.export_rows("tasks", "", 10)
    done = await fresh.import_rows("tasks", rows)
    assert (done.rows, done.skipped) == (0, 1)
    assert await fresh.task_id_by_key("same") == mine.id
