"""Pruning returns space on SQLite: a file LocalFlow created (auto_vacuum=INCREMENTAL) shrinks
as old tasks are pruned; a file made before that (auto_vacuum off) keeps its size but reuses
the freed pages, so it does not grow while the number of rows stays the same."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from shared.store.sqlite import migrations
from shared.store.sqlite.store import SQLiteStore

ROWS = 6000
PAYLOAD = '{"command": "echo", "args": ["' + "x" * 900 + '"]}'


def fill(path: Path, first: int, finished_at: float) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO tasks (id, type, payload, status, run_at, timeout, created_at, "
            "updated_at, finished_at) VALUES (?, 'shell', ?, 'succeeded', 0, 60, 0, 0, ?)",
            [(f"T{first + i:025d}", PAYLOAD, finished_at) for i in range(ROWS)],
        )


def pages(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as conn:
        return tuple(conn.execute(f"PRAGMA {p}").fetchone()[0]  # type: ignore[return-value]
                     for p in ("auto_vacuum", "page_count", "freelist_count"))


async def prune_all(path: Path, before: float, *, events: bool = False) -> int:
    store = await SQLiteStore.open(str(path))
    try:
        total = 0
        while deleted := await store.prune("succeeded", before, 500):
            total += deleted
        if events:
            # Each inserted task also wrote an event-log row (migrations/sqlite/004), pruned
            # on its own window (the rescue loop); here at once, as all of it is old.
            await store.prune_events(before)
        return total
    finally:
        await store.close()


async def test_a_new_file_shrinks_as_tasks_are_pruned(tmp_path: Path):
    path = tmp_path / "new.db"
    migrations.migrate(str(path))
    fill(path, 0, finished_at=100.0)
    mode, full, _ = pages(path)
    assert mode == 2  # INCREMENTAL
    assert await prune_all(path, before=200.0) == ROWS
    _, after, free = pages(path)
    assert free == 0 and after < full / 5, (full, after)


async def test_an_older_file_reuses_freed_pages(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # as files were made before: auto_vacuum off
        conn.execute("CREATE TABLE made_before (x)")
    migrations.migrate(str(path))
    fill(path, 0, finished_at=100.0)
    mode, full, _ = pages(path)
    assert mode == 0
    assert await prune_all(path, before=200.0, events=True) == ROWS
    _, same, free = pages(path)
    assert same == full and free > full / 2  # kept, but free for reuse
    fill(path, ROWS, finished_at=300.0)  # as many new rows: they go into the freed pages
    _, refilled, _ = pages(path)
    assert refilled <= full * 1.05, (full, refilled)
