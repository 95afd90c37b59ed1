"""The worker stores a running shell task's output tail (worker/live_output.py): bounded, at
most one transaction per interval whatever the task writes, cleared once the attempt ends.
The worker with its real shell handler, a real SQLite file and real programs, in this process.
Tasks block on a FIFO the test opens when it is done looking: no sleeps."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store.base import LiveOutput
from shared.store.sqlite import SQLiteStore
from worker.live_output import LIVE_TAIL
from worker.pool import Worker

T = TypeVar("T")
DEADLINE = 60.0  # generous: a busy 2-core machine
INTERVAL = 0.2  # seconds between flushes in these tests (1 s by default)
LINES = 100_000
# Blocks on the FIFO in argv[2] after printing; argv[1] lines go to stdout, each flushed on its
# own (a write per line, as a chatty program does), then a last line to each stream.
CHATTY = (
    "import sys\n"
    "for i in range(int(sys.argv[1])):\n"
    "    print(f'line {i}', flush=True)\n"
    "print('warning: nearly done', file=sys.stderr, flush=True)\n"
    "print('done printing', flush=True)\n"
    "open(sys.argv[2]).read()\n"
)


@pytest.fixture
async def live_queue(store: SQLiteStore, db_path: Path) -> Queue:
    settings = Settings(db=str(db_path), workers=4, lease=5, grace=2, poll=0.25,
                        live_output_interval=INTERVAL)
    return Queue(store, settings=settings)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def eventually(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str) -> T:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = await read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: never happened; last seen {value!r}")
        await asyncio.sleep(0.02)


def _rows(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT count(*) FROM task_live_output").fetchone()[0]


async def test_a_chatty_task_costs_one_small_write_per_interval_not_one_per_line(
    live_queue: Queue, db_path: Path, tmp_path: Path
):
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    task, _ = await live_queue.enqueue(TaskCreate(type="shell", payload={
        "command": sys.executable, "args": ["-c", CHATTY, str(LINES), str(fifo)]}))
    worker = Worker(live_queue, live_queue.settings)
    store = live_queue.store
    async with running(worker):
        began = time.monotonic()
        live: dict[str, LiveOutput] = await eventually(
            lambda: store.live_outputs([task.id]),
            lambda got: task.id in got and got[task.id].stdout.endswith("done printing\n"),
            "the last line stored while the task runs",
        )
        elapsed = time.monotonic() - began
        out = live[task.id]
        everything = "".join(f"line {i}\n" for i in range(LINES)) + "done printing\n"
        assert out.stdout_bytes == len(everything)  # every byte counted...
        assert len(out.stdout.encode()) == LIVE_TAIL  # ...the last 8 KiB kept
        assert everything.endswith(out.stdout)
        assert out.stderr == "warning: nearly done\n" and out.attempt == 1
        # One transaction per interval at most (plus the one in flight), never one per line.
        assert worker.live_output.flushes <= elapsed / INTERVAL + 2, (worker.live_output.flushes,
                                                                      elapsed)
        assert out.flushes <= worker.live_output.flushes
        assert (await live_queue.get(task.id)).status == "running"

        # Unchanged output is not written again.
        flushes = worker.live_output.flushes
        assert await worker.live_output.flush_once() == 0
        assert worker.live_output.flushes == flushes

        await asyncio.to_thread(fifo.write_text, "go")
        done = await eventually(lambda: live_queue.get(task.id),
                                lambda t: t.status != "running", "the task finishing")
        assert done.status == "succeeded", done
        assert done.result["stdout"].endswith("done printing\n")  # the final output, as before
        assert await store.live_outputs([task.id]) == {}  # hidden at once...
        await eventually(lambda: asyncio.to_thread(_rows, db_path), lambda n: n == 0,
                         "the row deleted by the next flush")  # ...and gone soon after


async def test_quiet_and_short_tasks_write_nothing(live_queue: Queue, db_path: Path):
    quiet, _ = await live_queue.enqueue(TaskCreate(type="shell", payload={
        "command": "sleep", "args": ["0.6"]}))
    worker = Worker(live_queue, live_queue.settings)
    async with running(worker):
        done = await eventually(lambda: live_queue.get(quiet.id),
                                lambda t: t.status == "succeeded", "the quiet task finishing")
        assert done.status == "succeeded"
    # It ran for several intervals and printed nothing: no flush had anything to store.
    assert worker.live_output.flushes == 0
    assert _rows(db_path) == 0


def test_the_recent_bytes_of_a_bounded_buffer():
    from worker.handlers.output import HeadTail

    small = HeadTail(64)
    small.add(b"abc")
    small.add(b"def\n")
    assert small.recent(5) == b"bcdef\n"[-5:] and small.recent(100) == b"abcdef\n"
    big = HeadTail(64)  # head 32, tail 32: bytes dropped between them
    big.add(b"h" * 32 + b"x" * 1000 + b"t" * 31 + b"\n")
    assert big.dropped and big.recent(8) == b"ttttttt\n" and big.recent(100) == b"t" * 31 + b"\n"
    # A cut inside a character: its continuation bytes are left out, never half a character.
    cut = HeadTail(1024)
    cut.add("aé€😀".encode())  # 1 + 2 + 3 + 4 bytes
    assert cut.recent(3) == b""  # only the last three bytes of the emoji: nothing whole
    assert cut.recent(4).decode() == "😀" and cut.recent(6).decode() == "😀"
    assert cut.recent(7).decode() == "€😀"
