"""Contract of a running attempt's live output (Store.save_live_output, Store.live_outputs;
migrations/*/008_live_output.sql) on every backend: stored per claim, fenced on it, cleared
by the worker's next flush once the attempt ended, never shown for a task that is not running
the claim it belongs to, and gone with its task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.store.base import Claimed, LiveOutput, Store


def shell(*args: str, **fields: Any) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


def output(c: Claimed, stdout: str, stderr: str = "", **fields: Any) -> LiveOutput:
    return LiveOutput(
        task_id=c.id, token=c.token, attempt=c.attempt, stdout=stdout, stderr=stderr,
        stdout_bytes=fields.pop("stdout_bytes", len(stdout.encode())),
        stderr_bytes=fields.pop("stderr_bytes", len(stderr.encode())), updated_at=0.0,
    )


async def _running(queue: Queue, n: int = 1, **fields: Any) -> list[Claimed]:
    await queue.enqueue_many([shell(str(i), **fields) for i in range(n)])
    claimed = await queue.claim("w1", n, 30.0)
    assert len(claimed) == n
    return claimed


async def test_stored_output_reads_back_and_counts_its_flushes(
    queue: Queue, store: Store, clock: FakeClock
):
    (c,) = await _running(queue)
    await store.save_live_output([output(c, "line 1\n", "warn ü\n")], [], clock.now())
    got = (await store.live_outputs([c.id]))[c.id]
    assert (got.stdout, got.stderr, got.attempt, got.token) == ("line 1\n", "warn ü\n", 1, c.token)
    assert (got.stdout_bytes, got.stderr_bytes, got.flushes) == (7, 8, 1)
    assert got.updated_at == clock.now()

    clock.advance(1.0)
    await store.save_live_output(
        [output(c, "line 2\n", stdout_bytes=1_000_000)], [], clock.now()
    )
    got = (await store.live_outputs([c.id]))[c.id]
    assert (got.stdout, got.stderr, got.stdout_bytes, got.flushes) == ("line 2\n", "", 1_000_000, 2)
    assert got.updated_at == clock.now()


async def test_many_tasks_in_one_call_and_unknown_ids_are_absent(
    queue: Queue, store: Store, clock: FakeClock
):
    claimed = await _running(queue, 40)
    await store.save_live_output([output(c, f"out {c.id}") for c in claimed], [], clock.now())
    got = await store.live_outputs([c.id for c in claimed] + ["01NOSUCHTASK0000000000000"])
    assert set(got) == {c.id for c in claimed}
    assert all(got[c.id].stdout == f"out {c.id}" for c in claimed)
    assert await store.live_outputs([]) == {}


async def test_an_ended_attempt_stores_nothing_and_its_row_is_never_shown(
    queue: Queue, store: Store, clock: FakeClock, rows: Callable[..., list[tuple[Any, ...]]]
):
    a, b = await _running(queue, 2)
    await store.save_live_output([output(a, "a"), output(b, "b")], [], clock.now())
    assert await queue.complete(a, {"exit_code": 0})
    # Left behind (say its worker died before clearing it): the read hides it all the same.
    assert await store.live_outputs([a.id]) == {}
    # A flush that raced the finish stores nothing.
    await store.save_live_output([output(a, "late")], [], clock.now())
    assert rows("SELECT stdout FROM task_live_output WHERE task_id = ?", a.id) == [("a",)]
    # The worker's next flush clears the claims that ended, and only those.
    await store.save_live_output([], [(a.id, a.token), (b.id, "not-its-token")], clock.now())
    assert rows("SELECT task_id FROM task_live_output") == [(b.id,)]
    assert set(await store.live_outputs([a.id, b.id])) == {b.id}


async def test_a_new_claim_supersedes_the_output_of_the_last_one(
    queue: Queue, store: Store, clock: FakeClock
):
    (first,) = await _running(queue, max_attempts=3)
    await store.save_live_output([output(first, "attempt 1")], [], clock.now())
    await store.save_live_output([output(first, "attempt 1, more")], [], clock.now())
    assert await queue.fail(first, "exited with status 1", retry=False) == "failed"
    await queue.retry(first.id)
    (second,) = await queue.claim("w2", 1, 30.0)
    assert second.id == first.id and second.token != first.token
    assert await store.live_outputs([first.id]) == {}  # the old claim's row is not this one's
    # The old claim's late flush cannot overwrite the new one's.
    await store.save_live_output([output(second, "attempt 2")], [], clock.now())
    await store.save_live_output([output(first, "attempt 1, late")], [], clock.now())
    got = (await store.live_outputs([first.id]))[first.id]
    assert (got.stdout, got.attempt, got.flushes) == ("attempt 2", second.attempt, 1)


async def test_the_output_goes_with_its_task(
    queue: Queue, store: Store, clock: FakeClock, rows: Callable[..., list[tuple[Any, ...]]]
):
    (c,) = await _running(queue)
    await store.save_live_output([output(c, "x" * 8192, "y" * 8192)], [], clock.now())
    assert (await store.live_outputs([c.id]))[c.id].stdout == "x" * 8192
    assert await queue.complete(c, None)
    await queue.delete(c.id)
    assert rows("SELECT count(*) FROM task_live_output") == [(0,)]
