"""The worker with its real handlers, on a real database file, in this process."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Event, Thread

import pytest

from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore
from worker.pool import Worker


def shell(command: str, *args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": command, "args": list(args)}, **fields)


@pytest.fixture
async def live_queue(store: SQLiteStore, db_path) -> Queue:
    settings = Settings(db=str(db_path), workers=4, lease=5, grace=2, retry_base=0.05,
                        poll=0.25)
    return Queue(store, settings=settings)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(queue: Queue, task_id: str, statuses: set[str], timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = await queue.get(task_id)
        if task.status in statuses:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError(f"{task_id} never reached {statuses}: {await queue.get(task_id)}")


async def test_shell_success_failure_and_retry(live_queue):
    ok, _ = await live_queue.enqueue(shell("echo", "hello", "; rm -rf /", "$(id)"))
    bad, _ = await live_queue.enqueue(shell("sh", "-c", "echo oops >&2; exit 3", max_attempts=2))
    missing, _ = await live_queue.enqueue(shell("no-such-command-xyz", max_attempts=3))
    async with running(Worker(live_queue, live_queue.settings)):
        done = await until(live_queue, ok.id, {"succeeded", "failed"})
        assert done.status == "succeeded"
        assert done.result["stdout"] == "hello ; rm -rf / $(id)\n"  # metacharacters literal
        failed = await until(live_queue, bad.id, {"failed"})
        assert failed.attempts == 2 and failed.last_error == "sh exited with status 3"
        assert failed.result["stderr"] == "oops\n" and failed.result["exit_code"] == 3
        attempts = await live_queue.attempts(bad.id)
        assert [a.outcome for a in attempts] == ["failed", "failed"]
        not_found = await until(live_queue, missing.id, {"failed"})
        assert "cannot start 'no-such-command-xyz'" in not_found.last_error
        assert os.environ["PATH"] not in not_found.last_error  # the server's PATH is its own
        assert "/usr/bin" not in not_found.last_error
        assert not_found.attempts == 1  # retrying cannot make the program appear


async def test_timeout_kills_the_whole_process_group(live_queue, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    # The child starts a grandchild in the background and waits: both must die on timeout.
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    task, _ = await live_queue.enqueue(shell("sh", "-c", script, timeout=0.5, max_attempts=1))
    async with running(Worker(live_queue, live_queue.settings)):
        failed = await until(live_queue, task.id, {"failed"})
    assert "timed out after 0.5s" in failed.last_error
    assert [a.outcome for a in await live_queue.attempts(task.id)] == ["timeout"]
    grandchild = int(pid_file.read_text())
    async with asyncio.timeout(30):  # killed with its group; init may take a moment to reap
        while _alive(grandchild):
            await asyncio.sleep(0.01)


async def test_a_timeout_is_retried_like_any_failure_and_recorded_as_timeout(live_queue):
    task, _ = await live_queue.enqueue(shell("sleep", "30", timeout=0.3, max_attempts=2))
    async with running(Worker(live_queue, live_queue.settings)):
        failed = await until(live_queue, task.id, {"failed"})
    assert failed.attempts == 2
    assert [a.outcome for a in await live_queue.attempts(task.id)] == ["timeout", "timeout"]


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan may wait a while for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_output_is_bounded(live_queue):
    live_queue.settings.output_limit = 100
    code = "import sys; sys.stdout.write('x' * 5000)"
    task, _ = await live_queue.enqueue(shell(sys.executable, "-c", code))
    async with running(Worker(live_queue, live_queue.settings)):
        done = await until(live_queue, task.id, {"succeeded"})
    out = done.result["stdout"]
    assert out.startswith("x" * 50) and out.endswith("x" * 50)  # the head and the tail
    assert "[4900 bytes not kept]" in out and out.count("x") == 100


_release_slow = Event()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            _release_slow.wait(30)  # answers only when the test is over
        status = 200 if self.path == "/ok" else 503
        body = b'{"hello": "world"}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers["content-length"])
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    # shutdown() returns at the loop's next look at its flag: every 0.5 s by default.
    Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    _release_slow.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _release_slow.set()
    server.shutdown()


async def test_http_handler_success_non_2xx_and_body(live_queue, http_server):
    ok, _ = await live_queue.enqueue(
        TaskCreate(type="http", payload={"url": f"{http_server}/ok", "method": "get"})
    )
    echo, _ = await live_queue.enqueue(
        TaskCreate(type="http", payload={"url": f"{http_server}/e", "method": "POST",
                                         "json": {"a": 1}})
    )
    down, _ = await live_queue.enqueue(
        TaskCreate(type="http", payload={"url": f"{http_server}/down"}, max_attempts=1)
    )
    async with running(Worker(live_queue, live_queue.settings)):
        done = await until(live_queue, ok.id, {"succeeded", "failed"})
        assert done.status == "succeeded"
        assert done.result["status_code"] == 200 and done.result["body"] == '{"hello": "world"}'
        assert done.result["latency_ms"] >= 0
        echoed = await until(live_queue, echo.id, {"succeeded"})
        assert echoed.result["body"] == '{"a":1}'
        failed = await until(live_queue, down.id, {"failed"})
        assert "answered 503" in failed.last_error
        assert failed.result["status_code"] == 503


async def test_http_timeout_is_recorded_as_timeout(live_queue, http_server):
    task, _ = await live_queue.enqueue(TaskCreate(
        type="http", payload={"url": f"{http_server}/slow", "timeout": 0.3}, max_attempts=1))
    async with running(Worker(live_queue, live_queue.settings)):
        failed = await until(live_queue, task.id, {"failed"})
    assert "timed out after 0.3s" in failed.last_error
    assert [a.outcome for a in await live_queue.attempts(task.id)] == ["timeout"]


async def test_http_connection_refused_is_a_failed_attempt(live_queue):
    task, _ = await live_queue.enqueue(
        TaskCreate(type="http", payload={"url": "http://127.0.0.1:9/"}, max_attempts=1)
    )
    async with running(Worker(live_queue, live_queue.settings)):
        failed = await until(live_queue, task.id, {"failed"})
    assert "failed" in failed.last_error


async def test_cancel_running_task_stops_its_process(live_queue):
    task, _ = await live_queue.enqueue(shell("sleep", "30"))
    async with running(Worker(live_queue, live_queue.settings)):
        await until(live_queue, task.id, {"running"})
        started = time.monotonic()
        await live_queue.cancel(task.id)
        cancelled = await until(live_queue, task.id, {"cancelled"})
        # The wake-up reaches the worker, not the lease's expiry (and on a busy machine the
        # wake-up may take a while: the bound is generous).
        assert time.monotonic() - started < live_queue.settings.lease * 6
    assert cancelled.finished_at is not None
    assert [a.outcome for a in await live_queue.attempts(task.id)] == ["cancelled"]


async def test_stop_lets_short_tasks_finish_and_returns_long_ones(live_queue):
    live_queue.settings.grace = 5.0  # ample for a 0.3 s task on a busy machine
    short, _ = await live_queue.enqueue(shell("sleep", "0.3"))
    long, _ = await live_queue.enqueue(shell("sleep", "30"))
    worker = Worker(live_queue, live_queue.settings)
    async with running(worker):
        await until(live_queue, long.id, {"running"})
        await until(live_queue, short.id, {"running", "succeeded"})
    assert (await live_queue.get(short.id)).status == "succeeded"
    returned = await live_queue.get(long.id)
    assert returned.status == "queued" and returned.attempts == 0
    assert [a.outcome for a in await live_queue.attempts(long.id)] == ["released"]
    assert worker.inflight == {}


async def test_worker_claims_no_more_than_its_free_slots(live_queue):
    live_queue.settings.workers = 2
    ids = [(await live_queue.enqueue(shell("sleep", "0.5")))[0].id for _ in range(5)]
    seen: list[int] = []
    async with running(Worker(live_queue, live_queue.settings)):
        async with asyncio.timeout(60):
            while (counts := await live_queue.counts())["succeeded"] < len(ids):
                seen.append(counts["running"])
                await asyncio.sleep(0.01)
    assert max(seen) == 2  # both slots were used, and never more


async def test_worker_rescues_tasks_of_a_dead_worker_at_start(live_queue):
    task, _ = await live_queue.enqueue(shell("echo", "again"))
    (_held,) = await live_queue.claim("dead-worker", 1, lease=0.01)
    await asyncio.sleep(0.05)
    async with running(Worker(live_queue, live_queue.settings)):
        done = await until(live_queue, task.id, {"succeeded"})
    assert done.attempts == 2
    assert [a.outcome for a in await live_queue.attempts(task.id)] == ["lost", "succeeded"]


async def test_worker_outlives_a_database_locked_past_its_busy_limit(db_path):
    """Another process holds the write lock longer than the worker will wait: the claim fails,
    the worker logs it and carries on, and runs the task once the lock is gone."""
    import sqlite3

    db = await SQLiteStore.open(str(db_path), busy_seconds=0.2)
    settings = Settings(db=str(db_path), workers=2, lease=5, poll=0.1)
    queue = Queue(db, settings=settings)
    try:
        task, _ = await queue.enqueue(shell("echo", "after the lock"))
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        async with running(Worker(queue, settings)):
            await asyncio.sleep(0.6)  # several claims fail with StorageBusy meanwhile
            assert (await queue.get(task.id)).status == "queued"
            other.execute("COMMIT")
            done = await until(queue, task.id, {"succeeded"})
        other.close()
        assert done.result["stdout"] == "after the lock\n"
    finally:
        await db.close()


async def test_a_final_failure_is_a_warning_and_a_retry_stays_info(live_queue):
    from structlog.testing import capture_logs

    retried, _ = await live_queue.enqueue(shell("false", max_attempts=2))
    with capture_logs() as logs:
        async with running(Worker(live_queue, live_queue.settings)):
            await until(live_queue, retried.id, {"failed"})
    about = [e for e in logs if e.get("task_id") == retried.id and "failed" in e["event"]]
    assert [(e["event"], e["log_level"], e["attempt"]) for e in about] == [
        ("task attempt failed", "info", 1), ("task failed", "warning", 2)]


async def test_an_outcome_refused_by_a_locked_database_is_written_later_not_run_twice(
    db_path, tmp_path
):
    """The write lock is held by another process while a task finishes, past the task's lease:
    the worker keeps the outcome (StorageBusy is retried), its rescuer does not hand the task
    out again, and once the lock is gone the task is `succeeded` after one attempt."""
    import sqlite3

    db = await SQLiteStore.open(str(db_path), busy_seconds=0.2)
    settings = Settings(db=str(db_path), workers=2, lease=1, poll=0.1)
    queue = Queue(db, settings=settings)
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    runs.mkdir()
    try:
        script = f"touch {runs}/run-$$; while [ ! -e {gate} ]; do sleep 0.02; done"
        task, _ = await queue.enqueue(shell("sh", "-c", script))
        worker = Worker(queue, settings)
        async with running(worker):
            await until(queue, task.id, {"running"})
            other = sqlite3.connect(db_path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            gate.touch()
            reader = sqlite3.connect(db_path)
            deadline = time.monotonic() + 30
            # Until the lease in the database has run out while the outcome waits: the moment
            # a rescue would run the finished command again.
            while not (task.id in worker.pending_outcomes and reader.execute(
                    "SELECT lease_until < ? FROM tasks WHERE id = ?",
                    (time.time(), task.id)).fetchone()[0]):
                assert time.monotonic() < deadline, "the lease never ran out"
                await asyncio.sleep(0.02)
            other.execute("COMMIT")
            # The worker's own rescuer, run the moment writes resume (before the outcome's next
            # retry): it must leave the task alone, or the finished command runs again.
            await worker.rescue_once()
            done = await until(queue, task.id, {"succeeded", "failed", "queued"})
            reader.close()
            other.close()
        assert done.status == "succeeded" and done.attempts == 1
        assert [a.outcome for a in await queue.attempts(task.id)] == ["succeeded"]
        assert len(list(runs.iterdir())) == 1
    finally:
        await db.close()
async def test_a_handler_that_ignores_its_timeout_is_stopped_by_the_backstop(live_queue):
    # A handler that never looks at its timeout: the worker stops it (timeout + 1 s) and
    # records a timed-out attempt; the next task still runs.
    release = asyncio.Event()

    async def stubborn(payload, ctx):
        if payload.command == "hang":
            await asyncio.Event().wait()
        await release.wait()
        return {"ok": True}

    hung, _ = await live_queue.enqueue(shell("hang", timeout=0.3, max_attempts=1))
    after, _ = await live_queue.enqueue(shell("fine", timeout=60))
    worker = Worker(live_queue, live_queue.settings, handlers={"shell": stubborn})
    async with running(worker):
        failed = await until(live_queue, hung.id, {"failed"})
        release.set()
        done = await until(live_queue, after.id, {"succeeded"})
    assert "timed out after 0.3s" in failed.last_error
    assert [a.outcome for a in await live_queue.attempts(hung.id)] == ["timeout"]
    assert done.result == {"ok": True}
    assert len(worker._deadlines) <= 64  # bounded: entries of finished tasks are dropped


class Gate:
    """A handler whose tasks end at once, except those whose payload command is "block":
    these wait for `release`. Records which tasks' handlers started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, payload, ctx) -> dict:
        self.started.append(ctx.task_id)
        if payload.command == "block":
            await self.release.wait()
        return {}


async def _worker_claiming_ahead(queue: Queue, gate: Gate, quick: int = 6):
    """A 2-slot worker with `quick` short tasks queued: once they ran, it claims ahead."""
    queue.settings.workers = 2
    for _ in range(quick):
        await queue.enqueue(shell("quick"))
    worker = Worker(queue, queue.settings, handlers={"shell": gate})
    return worker


async def _until_count(queue: Queue, status: str, n: int) -> None:
    async with asyncio.timeout(60):
        while (await queue.counts())[status] != n:
            await asyncio.sleep(0.01)


async def _until_claimed_ahead(worker: Worker, n: int) -> None:
    async with asyncio.timeout(60):
        while len(worker._ready) < n:
            await asyncio.sleep(0.01)


async def test_tasks_claimed_ahead_wait_for_a_slot_and_go_back_unspent_at_stop(
    live_queue, monkeypatch
):
    monkeypatch.setattr("worker.pool.PREFETCH_MAX", 2)  # as many ahead as slots
    gate = Gate()
    worker = await _worker_claiming_ahead(live_queue, gate)
    seen_running: list[int] = []
    async with running(worker):
        await _until_count(live_queue, "succeeded", 6)
        blocking = [(await live_queue.enqueue(shell("block")))[0].id for _ in range(6)]
        live_queue.store.notify()
        await _until_claimed_ahead(worker, 2)
        for _ in range(20):
            seen_running.append((await live_queue.counts())["running"])
            await asyncio.sleep(0.01)
        ahead = [c.id for c, _ in worker._ready]
        live_queue.settings.grace = 0.1
    # Never more than the slots plus as many ahead; those ahead never ran, and went back to
    # the queue as if never claimed: attempt unspent, no attempt in their history.
    assert max(seen_running) == 4
    assert not set(ahead) & set(gate.started)
    for task_id in ahead:
        task = await live_queue.get(task_id)
        assert task.status == "queued" and task.attempts == 0 and task.started_at is None
        assert await live_queue.attempts(task_id) == []
    assert len([t for t in blocking if t in gate.started]) == 2
    assert worker.inflight == {} and not worker._ready


async def test_how_many_are_claimed_ahead_follows_recent_handler_times(live_queue):
    # None while handlers are long (or none ended yet); while they are short, as many as would
    # all start within PREFETCH_WAIT on the recent average, up to PREFETCH_MAX (and never
    # fewer than the slots).
    live_queue.settings.workers = 8
    worker = Worker(live_queue, live_queue.settings, handlers={"shell": Gate()})
    assert worker._ahead() == 0
    for seconds, ahead in [(0.2, 0), (0.05, 0), (0.049, 16), (0.02, 40), (0.004, 200),
                           (0.001, 448), (0.00005, 448)]:
        worker._handler_seconds = seconds
        assert worker._ahead() == ahead, seconds
        assert worker._room() == 8 + ahead


async def test_a_task_claimed_ahead_is_cancelled_without_running(live_queue):
    gate = Gate()
    worker = await _worker_claiming_ahead(live_queue, gate)
    async with running(worker):
        await _until_count(live_queue, "succeeded", 6)
        for _ in range(4):
            await live_queue.enqueue(shell("block"))
        live_queue.store.notify()
        await _until_claimed_ahead(worker, 2)
        target = worker._ready[0][0].id
        await live_queue.cancel(target)
        cancelled = await until(live_queue, target, {"cancelled"})
        gate.release.set()
    assert target not in gate.started
    assert cancelled.finished_at is not None and cancelled.last_error == "cancelled"
    # It never ran: no attempt spent and none in its history (as if cancelled while queued).
    assert cancelled.attempts == 0 and cancelled.started_at is None
    assert await live_queue.attempts(target) == []


async def test_tasks_claimed_ahead_go_back_when_the_slots_stay_busy(live_queue, monkeypatch):
    monkeypatch.setattr("worker.pool.PREFETCH_HOLD", 0.2)
    gate = Gate()
    worker = await _worker_claiming_ahead(live_queue, gate)
    async with running(worker):
        await _until_count(live_queue, "succeeded", 6)
        blocking = [(await live_queue.enqueue(shell("block")))[0].id for _ in range(4)]
        live_queue.store.notify()
        await _until_claimed_ahead(worker, 2)
        ahead = [c.id for c, _ in worker._ready]
        # Held past PREFETCH_HOLD while both slots stay busy: back to the queue, and the
        # worker stops claiming ahead (no back and forth) until a handler ends quickly.
        for task_id in ahead:
            await until(live_queue, task_id, {"queued"})
        await _until_count(live_queue, "running", 2)
        # Three more turns of the worker's claim loop (counted, not timed): a churning worker
        # would claim the returned tasks again in them.
        calls = 0
        claim_once = worker.claim_once

        async def counted_claim_once() -> int:
            nonlocal calls
            calls += 1
            return await claim_once()

        monkeypatch.setattr(worker, "claim_once", counted_claim_once)
        async with asyncio.timeout(60):
            while calls < 3:
                await asyncio.sleep(0.01)
        assert (await live_queue.counts())["running"] == 2 and not worker._ready
        gate.release.set()
        for task_id in blocking:
            await until(live_queue, task_id, {"succeeded"})
    for task_id in ahead:  # the wait for a slot left no attempt behind: it never ran then
        assert [a.outcome for a in await live_queue.attempts(task_id)] == ["succeeded"]
