"""A claim's handlers start while its COMMIT runs (docs/state_machine.md, "Started before the
claim is durable"), on real SQLite files, with the worker in this process.

- the handler of a claimed task starts before the claim's COMMIT returns: a before-commit hook
  queued after the claim's holds that COMMIT until the handler has started (a worker that
  starts handlers only after the commit never lets it go), and another connection then still
  sees the task queued;
- a claim whose COMMIT fails (a full disk: a real tmpfs, filled) leaves the task queued with no
  attempt row; the handler started early is stopped and writes nothing; once the disk has room
  the task runs again and succeeds with exactly one attempt in its history.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shared.errors import StorageFull
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore, migrations
from tests.test_disk_full import fill, small_fs  # noqa: F401  (small_fs: a fixture)
from tests.test_worker import running, until
from worker.handlers import HandlerContext
from worker.pool import Worker

TRUE = TaskCreate(type="shell", payload={"command": "true"})


def _row(db: Path, task_id: str) -> tuple[str, int, int]:
    """(status, attempts, attempt rows) as another connection sees them."""
    with sqlite3.connect(db) as conn:
        status, attempts = conn.execute(
            "SELECT status, attempts FROM tasks WHERE id = ?", (task_id,)).fetchone()
        (rows,) = conn.execute(
            "SELECT count(*) FROM task_attempts WHERE task_id = ?", (task_id,)).fetchone()
    return status, attempts, rows


async def test_the_handler_starts_before_the_claims_commit_returns(db_path: Path):
    store = await SQLiteStore.open(str(db_path))
    try:
        queue = Queue(store, settings=Settings(db=str(db_path), workers=2, poll=0.25))
        task, _ = await queue.enqueue(TRUE)
        started = threading.Event()
        seen_by_others: list[tuple[str, int, int]] = []

        async def handler(payload: Any, ctx: HandlerContext) -> dict[str, Any]:
            seen_by_others.append(_row(db_path, ctx.task_id))
            started.set()
            return {}

        worker = Worker(queue, queue.settings, handlers={"shell": handler})
        held: list[bool] = []

        def hold_the_commit(conn: sqlite3.Connection) -> None:
            # Registered after the claim's own hook (this op shares the claim's transaction,
            # queued right after it): the COMMIT waits here until the handler has started.
            store.db.before_commit(lambda: held.append(started.wait(30)))

        # The three writes are queued in this loop turn (claim_once reaches the store
        # without waiting), so the writer thread runs them in one transaction, the claim
        # before the hold. (The first, a write already waiting, makes the claim take the
        # writer thread's path: alone, an idle worker's claim runs on the event loop, where
        # no hook could hold its COMMIT; the test below covers that path.)
        before = asyncio.create_task(store.db.write(lambda conn: None))
        claim = asyncio.create_task(worker.claim_once())
        hold = asyncio.create_task(store.db.write(hold_the_commit))
        await asyncio.wait_for(before, 60)
        assert await asyncio.wait_for(claim, 60) == 1
        await asyncio.wait_for(hold, 60)
        assert held == [True], "the handler did not start before the claim's COMMIT"
        # The handler ran while the claim was not yet committed: others saw the task queued.
        assert seen_by_others == [("queued", 0, 0)]
        async with running(worker):  # (its outcome is written as usual)
            done = await until(queue, task.id, {"succeeded", "failed"})
        assert done.status == "succeeded" and done.attempts == 1
        assert _row(db_path, task.id) == ("succeeded", 1, 1)
    finally:
        await store.close()


async def test_an_idle_claim_hands_its_tasks_over_on_the_loop_before_its_commit(
    db_path: Path,
):
    """The writer thread idle: the claim runs on the event loop (Database.write_on_loop), and
    on_claimed is called there, on the loop's thread, before the COMMIT (others still see
    the task queued), within the claim's own call: no hop. With a batch with the writer
    thread, the claim waits for it and runs there, and on_claimed still comes first."""
    store = await SQLiteStore.open(str(db_path))
    try:
        queue = Queue(store, settings=Settings(db=str(db_path), workers=2, poll=0.25))
        first, _ = await queue.enqueue(TRUE)
        handed: list[tuple[list[str], str, tuple[str, int, int]]] = []
        within: list[asyncio.Task[Any] | None] = []  # the task on_claimed ran in, if any

        def on_claimed(claimed: list[Any]) -> None:
            ids = [c.id for c in claimed]
            within.append(asyncio.current_task())
            handed.append((ids, threading.current_thread().name, _row(db_path, ids[0])))

        claimed = await store.claim("w1", 4, time.time() + 60, time.time(), on_claimed=on_claimed)
        assert [c.id for c in claimed] == [first.id]
        assert handed == [([first.id], threading.current_thread().name, ("queued", 0, 0))]
        # Called by the claim itself (this test's task), not as a callback a thread handed in.
        assert within == [asyncio.current_task()]
        assert _row(db_path, first.id) == ("running", 1, 1)

        # Busy writer: a batch held on the writer thread; the claim goes behind it.
        second, _ = await queue.enqueue(TRUE)
        inside, let_go = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            inside.set()
            let_go.wait(60)

        held = asyncio.create_task(store.db.write(hold))
        await asyncio.to_thread(inside.wait, 30)
        handed.clear()
        within.clear()
        claim = asyncio.create_task(
            store.claim("w1", 4, time.time() + 60, time.time(), on_claimed=on_claimed))
        for _ in range(20):  # the loop turns; nothing is claimed on it
            await asyncio.sleep(0)
        assert handed == [] and not claim.done()
        let_go.set()
        await asyncio.wait_for(held, 60)
        assert [c.id for c in await asyncio.wait_for(claim, 60)] == [second.id]
        assert [(ids, thread) for ids, thread, _ in handed] == [
            ([second.id], threading.current_thread().name)]
        assert within == [None]  # handed in by the writer thread (call_soon_threadsafe)
    finally:
        await store.close()


async def test_a_claim_whose_commit_fails_leaves_the_task_queued_and_fences_the_early_run(
    small_fs: Path,  # noqa: F811
    sqlite_template: Path,
):
    db = small_fs / "lf.db"
    shutil.copyfile(sqlite_template, db)
    db.chmod(migrations.FILE_MODE)
    store = await SQLiteStore.open(str(db))
    ballast: Path | None = None
    try:
        settings = Settings(db=str(db), workers=2, poll=0.25, lease=30.0)
        queue = Queue(store, settings=settings)
        task, _ = await queue.enqueue(TRUE)
        runs: list[str] = []
        first_started = asyncio.Event()
        first_stopped = asyncio.Event()

        async def handler(payload: Any, ctx: HandlerContext) -> dict[str, Any]:
            runs.append(ctx.task_id)
            if len(runs) == 1:  # the early run: held until the worker stops it
                first_started.set()
                try:
                    await asyncio.Event().wait()  # until the worker cancels it
                finally:
                    first_stopped.set()
            return {"run": len(runs)}

        worker = Worker(queue, settings, handlers={"shell": handler})
        # Every byte left is taken: the claim's statements run (in the page cache) and its
        # before-commit hook hands the task over, then the COMMIT cannot append to the WAL.
        ballast = fill(small_fs)
        with pytest.raises(StorageFull):
            await asyncio.wait_for(worker.claim_once(), 60)
        # The handler had started early, and the failed claim stopped it.
        assert first_started.is_set()
        await asyncio.wait_for(first_stopped.wait(), 60)
        # The claim rolled back: queued, attempt not spent, no attempt row.
        assert _row(db, task.id) == ("queued", 0, 0)

        ballast.unlink()
        ballast = None
        async with running(worker):
            done = await until(queue, task.id, {"succeeded", "failed"})
        assert done.status == "succeeded" and done.attempts == 1
        assert done.result == {"run": 2}  # the second run's outcome; the first wrote nothing
        assert [a.outcome for a in await queue.attempts(task.id)] == ["succeeded"]
        assert runs == [task.id, task.id]  # at-least-once: it ran twice, recorded once
    finally:
        if ballast is not None:
            ballast.unlink()
        await store.close()


def _token(db: Path, task_id: str) -> str | None:
    with sqlite3.connect(db) as conn:
        (token,) = conn.execute(
            "SELECT claim_token FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return token


@pytest.mark.parametrize("timeout", [None, 2.0], ids=["no-timeout", "timeout"])
async def test_a_claim_run_again_alone_after_its_shared_commit_failed(
    db_path: Path, timeout: float | None,
):
    """Database._run_batch runs each op of a failed batch alone: a claim whose handlers
    started early (first claim's tokens) is answered by its second run. Real ops beside the
    claim make that happen: after it, one whose COMMIT always fails (an orphan attempt row
    under PRAGMA defer_foreign_keys: the foreign key is checked only at COMMIT), and before
    it, one that commits only when run alone (a delayed, more urgent task comes due, as any
    other writer's commit could land between the two runs). So the second run claims another
    set: a task started early and claimed again runs on under the new token and completes; one
    not claimed again is stopped and writes nothing; the new one starts. With a timeout, the
    one claimed again is still stopped at its deadline (kept under the new token)."""
    store = await SQLiteStore.open(str(db_path))
    go = asyncio.Event()
    worker: Worker | None = None
    try:
        settings = Settings(db=str(db_path), workers=2, poll=0.25, lease=30.0)
        queue = Queue(store, settings=settings)
        kept, _ = await queue.enqueue(TaskCreate(
            type="shell", payload={"command": "true"}, priority=5, timeout=timeout,
            max_attempts=1))
        dropped, _ = await queue.enqueue(TRUE)
        newer, _ = await queue.enqueue(
            TaskCreate(type="shell", payload={"command": "true"}, priority=10, delay=3600))
        runs: list[str] = []
        dropped_stopped = asyncio.Event()

        async def handler(payload: Any, ctx: HandlerContext) -> dict[str, Any]:
            runs.append(ctx.task_id)
            if ctx.task_id == kept.id:
                await go.wait()  # held until the claim's answer has been taken in
            elif ctx.task_id == dropped.id and runs.count(dropped.id) == 1:
                try:  # the early run: held until the worker stops it
                    await asyncio.Event().wait()  # until the worker cancels it
                finally:
                    dropped_stopped.set()
            return {"run": runs.count(ctx.task_id)}

        worker = Worker(queue, settings, handlers={"shell": handler})
        alone_runs: list[int] = []

        def comes_due_when_alone(conn: sqlite3.Connection) -> None:
            alone_runs.append(1)
            if len(alone_runs) == 2:  # the batch failed: this op now runs (and commits) alone
                conn.execute("UPDATE tasks SET run_at = 0 WHERE id = ?", (newer.id,))

        def fails_at_commit(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA defer_foreign_keys = ON")
            conn.execute("INSERT INTO task_attempts (task_id, attempt, worker_id, started_at) "
                         "VALUES ('no-such-task', 1, 'test', 0)")

        # All three are queued in this loop turn (claim_once reaches the store without
        # waiting), so the writer thread takes them as one batch, in this order.
        due = asyncio.create_task(store.db.write(comes_due_when_alone))
        claim = asyncio.create_task(worker.claim_once())
        bad = asyncio.create_task(store.db.write(fails_at_commit))
        assert await asyncio.wait_for(claim, 60) == 2
        await asyncio.wait_for(due, 60)
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY constraint failed"):
            await asyncio.wait_for(bad, 60)
        assert len(alone_runs) == 2, "the batch did not fail and run again op by op"

        # The early start had both tasks of the first run; the second run took newer instead
        # of dropped. dropped's early handler is stopped; it stays queued, never attempted.
        await asyncio.wait_for(dropped_stopped.wait(), 60)
        assert _row(db_path, dropped.id) == ("queued", 0, 0)
        # kept runs on under the second run's token, the one the database holds.
        assert worker.inflight[kept.id].token == _token(db_path, kept.id)
        assert _row(db_path, kept.id) == ("running", 1, 1)
        # (newer, in the slot dropped freed, may have finished already: checked below.)

        if timeout is None:
            go.set()  # else kept's handler waits until its deadline stops it
        async with running(worker):
            for task in (newer, dropped):
                done = await until(queue, task.id, {"succeeded", "failed"})
                assert done.status == "succeeded" and done.attempts == 1, done
                assert [a.outcome for a in await queue.attempts(task.id)] == ["succeeded"]
            ended = await until(queue, kept.id, {"succeeded", "failed"})
        assert (await queue.get(dropped.id)).result == {"run": 2}  # the early run wrote nothing
        assert sorted(runs) == sorted([kept.id, newer.id, dropped.id, dropped.id])
        outcomes = [a.outcome for a in await queue.attempts(kept.id)]
        if timeout is None:
            assert ended.status == "succeeded" and ended.result == {"run": 1}
            assert outcomes == ["succeeded"]
        else:
            assert ended.status == "failed" and outcomes == ["timeout"]
    finally:
        go.set()
        if worker is not None:  # after a failed assertion above: let the worker end
            with contextlib.suppress(Exception):
                async with running(worker):
                    pass
        await store.close()
