"""Contract of the queue operations, with a clock the test moves, on every backend (a real
SQLite file and a real PostgreSQL database: tests/contract/conftest.py).

Written against the Queue's public methods only, so every backend runs the same suite.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from shared.clock import FakeClock
from shared.queue import Conflict, InvalidTask, NotFound, Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store.base import NewTask, Store


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


async def test_enqueued_task_is_claimed_once_and_recorded(queue: Queue):
    task, created = await queue.enqueue(shell("a"))
    assert created and task.status == "queued" and task.attempts == 0

    claimed = await queue.claim("w1", 10, lease=30)
    assert [c.id for c in claimed] == [task.id]
    assert claimed[0].attempt == 1
    assert await queue.claim("w2", 10, lease=30) == []

    running = await queue.get(task.id)
    assert running.status == "running" and running.attempts == 1
    attempts = await queue.attempts(task.id)
    assert [(a.attempt, a.worker_id, a.outcome) for a in attempts] == [(1, "w1", None)]


async def test_claim_orders_by_priority_then_run_at_and_respects_limit(queue, clock):
    low, _ = await queue.enqueue(shell("low", priority=-5))
    clock.advance(1)
    first_normal, _ = await queue.enqueue(shell("n1"))
    clock.advance(1)
    second_normal, _ = await queue.enqueue(shell("n2"))
    high, _ = await queue.enqueue(shell("high", priority=10))

    claimed = await queue.claim("w", 3, lease=30)
    assert [c.id for c in claimed] == [high.id, first_normal.id, second_normal.id]
    assert [c.id for c in await queue.claim("w", 3, lease=30)] == [low.id]


async def test_delayed_task_is_claimable_exactly_from_run_at(queue, clock):
    task, _ = await queue.enqueue(shell("later", delay=60))
    clock.advance(59.999)
    assert await queue.claim("w", 1, lease=30) == []
    assert await queue.next_run_at() == pytest.approx(clock.now() + 0.001)
    clock.advance(0.001)
    assert [c.id for c in await queue.claim("w", 1, lease=30)] == [task.id]


async def test_run_at_in_the_past_runs_now(queue, clock):
    past = datetime.fromtimestamp(clock.now() - 3600, UTC)
    task, _ = await queue.enqueue(shell("x", run_at=past))
    assert [c.id for c in await queue.claim("w", 1, lease=30)] == [task.id]


async def test_complete_records_result_and_closes_attempt(queue):
    await queue.enqueue(shell("a"))
    (c,) = await queue.claim("w", 1, lease=30)
    assert await queue.complete(c, {"exit_code": 0, "stdout": "a\n"})
    task = await queue.get(c.id)
    assert task.status == "succeeded" and task.result == {"exit_code": 0, "stdout": "a\n"}
    assert task.finished_at is not None
    (attempt,) = await queue.attempts(c.id)
    assert attempt.outcome == "succeeded" and attempt.output == {"exit_code": 0, "stdout": "a\n"}


async def test_failures_back_off_exponentially_with_jitter_then_fail(queue, clock, settings):
    task, _ = await queue.enqueue(shell("x", max_attempts=4))
    expected_bases = [2.0, 4.0, 8.0]
    for attempt, base in enumerate(expected_bases, start=1):
        (c,) = await queue.claim("w", 1, lease=30)
        assert c.attempt == attempt
        assert await queue.fail(c, f"boom {attempt}") == "queued"
        queued = await queue.get(task.id)
        delay = queued.run_at.timestamp() - clock.now()
        assert 0.75 * base <= delay <= 1.25 * base, (attempt, delay)
        assert queued.last_error == f"boom {attempt}"
        assert await queue.claim("w", 1, lease=30) == []  # not before its backoff
        clock.advance(delay + 0.001)  # run_at is shown to the microsecond
    (c,) = await queue.claim("w", 1, lease=30)
    assert await queue.fail(c, "boom 4", {"exit_code": 1}) == "failed"
    final = await queue.get(task.id)
    assert final.status == "failed" and final.attempts == 4 and final.result == {"exit_code": 1}
    outcomes = [(a.attempt, a.outcome, a.error) for a in await queue.attempts(task.id)]
    assert outcomes == [(n, "failed", f"boom {n}") for n in range(1, 5)]


async def test_backoff_is_capped(queue, settings):
    settings.retry_max = 10.0
    for attempt in (5, 20, 60):
        assert 7.5 <= queue.backoff(attempt) <= 12.5


async def test_lease_expiry_boundary_and_rescue(queue, clock):
    task, _ = await queue.enqueue(shell("x"))
    (_c,) = await queue.claim("w1", 1, lease=30)
    clock.advance(30)  # lease_until == now: still held
    assert await queue.rescue_expired() == []
    clock.advance(0.001)
    assert await queue.rescue_expired() == [task.id]
    rescued = await queue.get(task.id)
    assert rescued.status == "queued" and rescued.attempts == 1
    assert "lease expired" in rescued.last_error
    (attempt,) = await queue.attempts(task.id)
    assert attempt.outcome == "lost"


async def test_heartbeat_extends_lease(queue, clock):
    await queue.enqueue(shell("x"))
    (c,) = await queue.claim("w1", 1, lease=30)
    clock.advance(25)
    beat = await queue.heartbeat([c], lease=30)
    assert beat.held == {c.id} and beat.cancel == set()
    clock.advance(25)
    assert await queue.rescue_expired() == []


async def test_stale_worker_cannot_overwrite_the_newer_attempt(queue, clock):
    task, _ = await queue.enqueue(shell("x"))
    (stale,) = await queue.claim("w1", 1, lease=30)
    clock.advance(31)
    await queue.rescue_expired()
    (fresh,) = await queue.claim("w2", 1, lease=30)
    assert fresh.attempt == 2 and fresh.token != stale.token

    assert not await queue.complete(stale, {"late": True})
    assert await queue.fail(stale, "late failure") is None
    assert not await queue.release(stale)
    assert not await queue.finish_cancelled(stale)
    assert (await queue.heartbeat([stale], lease=30)).held == set()

    current = await queue.get(task.id)
    assert current.status == "running" and current.result is None
    assert await queue.complete(fresh, {"ok": True})
    assert (await queue.get(task.id)).result == {"ok": True}


async def test_complete_many_fences_each_task_and_answers_in_order(queue, clock):
    """A worker's batch of successes in one call: each fenced by its own token (a stale claim
    and a task given twice change nothing more), one answer per item in the caller's order,
    each completed task's attempt row finished with its own result."""
    tasks = [(await queue.enqueue(shell(str(i))))[0] for i in range(4)]
    (stale,) = await queue.claim("old", 1, lease=5)
    clock.advance(6)
    await queue.rescue_expired()
    fresh = {c.id: c for c in await queue.claim("w", 4, lease=30)}
    mine = [fresh[t.id] for t in tasks]
    assert await queue.complete_many([]) == []
    answers = await queue.complete_many(
        [(mine[2], {"n": 2}), (stale, {"late": True}), (mine[0], {"n": 0}),
         (mine[1], {"n": 1})]
    )
    assert answers == [True, False, True, True]
    assert await queue.complete_many([(mine[3], {"n": 3}), (mine[3], {"n": 3})]) in (
        [True, False], [False, True])
    for i, t in enumerate(tasks):
        got = await queue.get(t.id)
        assert got.status == "succeeded" and got.result == {"n": i}
        attempts = await queue.attempts(t.id)
        assert attempts[-1].outcome == "succeeded" and attempts[-1].output == {"n": i}
        assert [a.outcome for a in attempts].count("succeeded") == 1


async def test_complete_many_with_one_lease_lost_completes_only_the_others(queue, clock):
    """A batch of successes, all of different tasks, one of them from a claim whose lease
    was lost (the task re-claimed since): the others are completed with their attempt rows,
    that one changes nothing, and its new claim still completes afterwards. (The SQLite store
    first tries the whole batch as one UPDATE and takes it back when it falls short.)"""
    a, b, c = [(await queue.enqueue(shell(str(i))))[0] for i in range(3)]
    (stale,) = await queue.claim("old", 1, lease=5)
    clock.advance(6)
    await queue.rescue_expired()
    fresh = {x.id: x for x in await queue.claim("w", 3, lease=30)}
    assert set(fresh) == {a.id, b.id, c.id}
    others = [fresh[t] for t in (a.id, b.id, c.id) if t != stale.id]
    answers = await queue.complete_many(
        [(others[0], {"n": 0}), (stale, {"late": True}), (others[1], {"n": 1})])
    assert answers == [True, False, True]
    for i, x in enumerate(others):
        got = await queue.get(x.id)
        assert got.status == "succeeded" and got.result == {"n": i}
        attempts = await queue.attempts(x.id)
        assert [(t.outcome, t.output) for t in attempts] == [("succeeded", {"n": i})]
    still = await queue.get(stale.id)
    assert still.status == "running" and still.result is None
    assert [t.outcome for t in await queue.attempts(stale.id)] == ["lost", None]
    assert await queue.complete_many([(fresh[stale.id], {"n": 9})]) == [True]
    assert (await queue.get(stale.id)).result == {"n": 9}
    assert [t.outcome for t in await queue.attempts(stale.id)] == ["lost", "succeeded"]


async def test_complete_many_leaves_the_open_attempt_of_a_stale_rows_task_alone(queue, clock):
    """A stale row in a batch whose attempt number is open again under a new claim (the
    task was unclaimed, its attempt row dropped, and claimed again: attempt 1 twice, new
    token): that attempt row belongs to the new claim and must stay open, the task running;
    the rest of the batch completes."""
    for i in range(2):
        await queue.enqueue(shell(str(i)))
    (old,) = await queue.claim("old", 1, lease=30)
    assert await queue.unclaim(old)
    fresh = {x.id: x for x in await queue.claim("w", 2, lease=30)}
    again = fresh[old.id]
    assert again.attempt == old.attempt == 1 and again.token != old.token
    (other,) = [x for x in fresh.values() if x.id != old.id]
    answers = await queue.complete_many([(old, {"late": True}), (other, {"n": 1})])
    assert answers == [False, True]
    still = await queue.get(old.id)
    assert still.status == "running" and still.result is None
    assert [(t.attempt, t.worker_id, t.outcome, t.finished_at) for t in
            await queue.attempts(old.id)] == [(1, "w", None, None)]
    assert [t.outcome for t in await queue.attempts(other.id)] == ["succeeded"]
    assert await queue.complete_many([(again, {"n": 0})]) == [True]
    assert [(t.outcome, t.output) for t in await queue.attempts(old.id)] == [
        ("succeeded", {"n": 0})]


async def test_outcomes_arriving_together_are_each_fenced_and_recorded(queue, clock):
    """A worker's slots finishing in the same moment (the PostgreSQL store writes such
    outcomes as one batch): every kind of outcome at once, stale claims and a claim
    completed twice among them. Each lands on its own task with its own attempt row, each
    caller learns its own answer, and nothing stale changes anything."""
    tasks = [(await queue.enqueue(shell(str(i))))[0] for i in range(10)]
    stale = await queue.claim("old", 4, lease=5)
    clock.advance(6)
    await queue.rescue_expired()
    fresh = {c.id: c for c in await queue.claim("w", 10, lease=30)}
    assert len(fresh) == 10
    # The four claimed twice first, then the others (ids made in one millisecond need not
    # sort in the order they were made).
    order = [c.id for c in stale] + [t.id for t in tasks if t.id not in {c.id for c in stale}]
    f = [fresh[task_id] for task_id in order]

    results = await asyncio.gather(
        queue.complete(f[0], {"n": 0}), queue.complete(f[1], {"n": 1}),
        queue.fail(f[2], "boom"), queue.fail(f[3], "never", retry=False),
        queue.fail(f[4], "slow", outcome="timeout"),
        queue.release(f[5]), queue.finish_cancelled(f[6], {"partial": 6}),
        queue.complete(f[7], {"n": 7}), queue.complete(f[7], {"n": 7}),  # twice: one wins
        queue.complete(stale[0], {"late": 0}), queue.fail(stale[1], "late"),
        queue.release(stale[2]), queue.finish_cancelled(stale[3]),
    )
    assert results[:7] == [True, True, "queued", "failed", "queued", True, True]
    assert sorted(results[7:9]) == [False, True]
    assert results[9:] == [False, None, False, False]

    got = [await queue.get(task_id) for task_id in order]
    assert [g.status for g in got] == ["succeeded", "succeeded", "queued", "failed", "queued",
                                       "queued", "cancelled", "succeeded", "running", "running"]
    assert [g.result for g in got[:2]] == [{"n": 0}, {"n": 1}]
    assert got[6].result == {"partial": 6} and got[7].result == {"n": 7}
    assert got[2].last_error == "boom" and got[3].last_error == "never"
    assert got[5].attempts == 0  # a release does not spend the attempt
    history = [[(a.attempt, a.worker_id, a.outcome) for a in await queue.attempts(task_id)]
               for task_id in order]
    # The four stale claims were rescued (lost), then claimed again by "w".
    assert history[0] == [(1, "old", "lost"), (2, "w", "succeeded")]
    assert history[2] == [(1, "old", "lost"), (2, "w", "failed")]
    assert history[4] == [(1, "w", "timeout")]
    assert history[5] == [(1, "w", "released")]
    assert history[6] == [(1, "w", "cancelled")]
    assert history[7] == [(1, "w", "succeeded")]
    assert history[9] == [(1, "w", None)]  # not in the gather: still running
    assert [a.output for a in await queue.attempts(order[1])] == [None, {"n": 1}]


async def test_rescue_fails_task_without_attempts_left(queue, clock):
    task, _ = await queue.enqueue(shell("x", max_attempts=1))
    await queue.claim("w", 1, lease=5)
    clock.advance(6)
    await queue.rescue_expired()
    assert (await queue.get(task.id)).status == "failed"


async def test_cancel_queued_task_never_runs(queue):
    task, _ = await queue.enqueue(shell("x"))
    cancelled = await queue.cancel(task.id)
    assert cancelled.status == "cancelled"
    assert await queue.claim("w", 1, lease=30) == []
    assert (await queue.cancel(task.id)).status == "cancelled"  # cancelling twice is fine


async def test_cancel_running_task_is_requested_then_finished_by_its_worker(queue):
    task, _ = await queue.enqueue(shell("x"))
    (c,) = await queue.claim("w", 1, lease=30)
    requested = await queue.cancel(task.id)
    assert requested.status == "running" and requested.cancel_requested
    assert await queue.cancel_requests("w") == {task.id}
    assert (await queue.heartbeat([c], lease=30)).cancel == {task.id}
    assert await queue.finish_cancelled(c)
    assert (await queue.get(task.id)).status == "cancelled"


async def test_cancel_finished_or_unknown_task_is_refused(queue):
    task, _ = await queue.enqueue(shell("x"))
    (c,) = await queue.claim("w", 1, lease=30)
    await queue.complete(c, {})
    with pytest.raises(Conflict, match="already succeeded"):
        await queue.cancel(task.id)
    with pytest.raises(NotFound):
        await queue.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV")


async def test_release_returns_task_without_spending_an_attempt(queue):
    task, _ = await queue.enqueue(shell("x"))
    (c,) = await queue.claim("w", 1, lease=30)
    assert await queue.release(c)
    released = await queue.get(task.id)
    assert released.status == "queued" and released.attempts == 0
    (again,) = await queue.claim("w", 1, lease=30)
    assert again.attempt == 1
    assert [a.outcome for a in await queue.attempts(task.id)] == ["released", None]


async def test_unclaim_puts_a_task_back_as_if_never_claimed(queue: Queue, clock: FakeClock):
    """A task claimed ahead that never started (docs/state_machine.md, "Claimed ahead") goes
    back with no trace of the claim: attempt unspent, no attempt row, its place in line."""
    task, _ = await queue.enqueue(shell("x"))
    (c,) = await queue.claim("w", 1, lease=30)
    clock.advance(1)
    assert await queue.unclaim(c)
    back = await queue.get(task.id)
    assert back.status == "queued" and back.attempts == 0
    assert back.started_at is None and back.run_at == task.run_at
    assert await queue.attempts(task.id) == []
    assert not await queue.unclaim(c)  # fenced: the claim is gone
    (again,) = await queue.claim("w2", 1, lease=30)
    assert again.attempt == 1
    # A second claim after a real attempt: that attempt and the first start stay.
    assert await queue.fail(again, "boom") == "queued"
    clock.advance(3600)
    (third,) = await queue.claim("w3", 1, lease=30)
    assert third.attempt == 2
    assert await queue.unclaim(third)
    back = await queue.get(task.id)
    assert back.status == "queued" and back.attempts == 1 and back.started_at is not None
    assert [(a.attempt, a.outcome) for a in await queue.attempts(task.id)] == [(1, "failed")]
    assert (await queue.counts())["queued"] == 1


async def test_a_task_cancelled_while_claimed_ahead_ends_as_if_cancelled_queued(
    queue: Queue, clock: FakeClock,
):
    """Claimed ahead, cancelled before it started: `cancelled` with no attempt spent and
    none in its history, as a queued task's cancel leaves it; fenced like unclaim."""
    task, _ = await queue.enqueue(shell("x"))
    (c,) = await queue.claim("w", 1, lease=30)
    assert await queue.cancel(task.id)  # running: the worker is asked to stop it
    clock.advance(1)
    assert await queue.cancel_unstarted(c)
    done = await queue.get(task.id)
    assert done.status == "cancelled" and done.attempts == 0 and done.started_at is None
    assert done.last_error == "cancelled" and done.finished_at is not None
    assert await queue.attempts(task.id) == []
    assert not await queue.cancel_unstarted(c)  # fenced: the claim is gone
    counts = await queue.counts()
    assert counts["cancelled"] == 1 and counts["running"] == 0


async def test_idempotency_same_request_returns_original(queue):
    first, created = await queue.enqueue(shell("x", idempotency_key="k1"))
    again, created_again = await queue.enqueue(shell("x", idempotency_key="k1"))
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict, match="different request"):
        await queue.enqueue(shell("y", idempotency_key="k1"))
    page = await queue.list()
    assert [t.id for t in page.items] == [first.id]


async def test_idempotency_race_yields_one_task_across_connections(
    another_store, clock, settings, rows
):
    """50 submissions with one key, from 5 separate stores (processes) at once: one task."""
    stores = [await another_store() for _ in range(5)]
    queues = [Queue(s, clock, settings) for s in stores]
    results = await asyncio.gather(
        *(queues[i % 5].enqueue(shell("x", idempotency_key="race")) for i in range(50))
    )
    assert len({task.id for task, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert rows("SELECT count(*) FROM tasks") == [(1,)]


async def test_enqueue_many_is_all_or_nothing(queue):
    with pytest.raises(InvalidTask, match="command"):
        await queue.enqueue_many([shell("ok"), TaskCreate(type="shell", payload={})])
    assert (await queue.counts())["queued"] == 0
    results = await queue.enqueue_many([shell("a"), shell("b")])
    assert [created for _, created in results] == [True, True]
    assert (await queue.counts())["queued"] == 2


async def test_invalid_payloads_are_refused_with_the_field_named(queue):
    cases = [
        (TaskCreate(type="nope", payload={}), "unknown task type 'nope'"),
        (TaskCreate(type="shell", payload={"args": []}), "command"),
        (TaskCreate(type="shell", payload={"command": "echo", "args": [1]}), "args[0]"),
        (TaskCreate(type="http", payload={"url": "ftp://x"}), "http:// or https://"),
        (TaskCreate(type="http", payload={"url": "http://x", "timeout": -1}), "timeout"),
    ]
    for create, message in cases:
        with pytest.raises(InvalidTask, match=message.replace("[", r"\[").replace("]", r"\]")):
            await queue.enqueue(create)
    assert sum((await queue.counts()).values()) == 0


async def test_oversize_payload_is_refused(queue, settings):
    settings.max_payload_bytes = 1000
    with pytest.raises(InvalidTask, match="limit is 1000"):
        await queue.enqueue(shell("x" * 2000))


async def test_list_filters_and_keyset_pagination(queue, clock):
    ids = []
    for i in range(7):
        clock.advance(0.01)
        kind = TaskCreate(type="http", payload={"url": "http://127.0.0.1:1/"}) if i % 2 else shell()
        task, _ = await queue.enqueue(kind)
        ids.append(task.id)
    (c,) = await queue.claim("w", 1, lease=30)  # the oldest task (a shell task) is now running

    seen, cursor = [], None
    while True:
        page = await queue.list(cursor=cursor, limit=3)
        seen += [t.id for t in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))

    http_ids = [t.id for t in (await queue.list(type="http")).items]
    assert http_ids == [ids[5], ids[3], ids[1]]
    assert [t.id for t in (await queue.list(status="running")).items] == [c.id]
    queued_shell = (await queue.list(status="queued", type="shell")).items
    assert [t.id for t in queued_shell] == [ids[6], ids[4], ids[2]]
    with pytest.raises(InvalidTask, match="unknown status"):
        await queue.list(status="done")
    assert await queue.counts() == {
        "queued": 6, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0,
    }


async def test_one_failing_write_does_not_fail_the_others_in_its_batch(queue):
    await queue.enqueue(shell("x", idempotency_key="k"))
    results = await asyncio.gather(
        queue.enqueue(shell("a")),
        queue.enqueue(shell("conflict", idempotency_key="k")),
        queue.enqueue(shell("b")),
        return_exceptions=True,
    )
    assert isinstance(results[1], Conflict)
    assert results[0][1] and results[2][1]
    assert (await queue.counts())["queued"] == 3


async def test_one_key_twice_in_one_batch_behaves_as_one_after_the_other(queue):
    """Within one enqueue_many, a key's second use is its first's task (same request), and
    a second use for another request refuses the whole batch, which inserts nothing."""
    results = await queue.enqueue_many([shell("x", idempotency_key="k"), shell("other"),
                                        shell("x", idempotency_key="k")])
    assert [created for _, created in results] == [True, True, False]
    assert results[2][0].id == results[0][0].id
    with pytest.raises(Conflict):
        await queue.enqueue_many([shell("y", idempotency_key="k2"), shell("fresh"),
                                  shell("z", idempotency_key="k2")])
    assert (await queue.counts())["queued"] == 2


async def test_submissions_arriving_together_each_get_their_own_answer(queue):
    """Many submissions in the same moment (an API under load; the PostgreSQL store writes
    them as one statement), keyed and not, a repeat and a conflict among them."""
    original, _ = await queue.enqueue(shell("x", idempotency_key="taken"))
    results = await asyncio.gather(
        *(queue.enqueue(shell(str(i))) for i in range(10)),
        queue.enqueue(shell("x", idempotency_key="taken")),
        queue.enqueue(shell("not x", idempotency_key="taken")),
        queue.enqueue_many([shell("m1"), shell("m2", idempotency_key="new")]),
        return_exceptions=True,
    )
    plain = results[:10]
    assert all(created for _, created in plain)
    assert len({task.id for task, _ in plain}) == 10
    assert [t.payload["args"] for t, _ in plain] == [[str(i)] for i in range(10)]
    assert (results[10][0].id, results[10][1]) == (original.id, False)
    assert isinstance(results[11], Conflict)
    assert [created for _, created in results[12]] == [True, True]
    assert (await queue.counts())["queued"] == 13


async def test_clock_is_injected(store, settings):
    clock = FakeClock(start=1_000_000.0)
    queue = Queue(store, clock, Settings(db=settings.db))
    task, _ = await queue.enqueue(shell("x"))
    assert task.created_at.timestamp() == pytest.approx(1_000_000.0)


async def test_fail_without_retry_fails_at_once(queue):
    task, _ = await queue.enqueue(shell("x", max_attempts=5))
    (c,) = await queue.claim("w", 1, lease=30)
    assert await queue.fail(c, "refused by policy", retry=False) == "failed"
    failed = await queue.get(task.id)
    assert failed.status == "failed" and failed.attempts == 1 and failed.finished_at is not None


async def test_change_token_moves_when_another_process_commits(
    queue, another_store, clock, settings
):
    """The idle worker's cheap check: a commit from elsewhere (here a completion, which wakes
    nobody) changes the token."""
    await queue.enqueue(shell("x"))
    other = Queue(await another_store(), clock, settings)
    (c,) = await other.claim("w", 1, lease=30)
    before = await queue.store.change_token()
    assert await other.complete(c, {"ok": True})
    assert await queue.store.change_token() != before


async def test_completions_arriving_together_with_a_stale_one_fence_only_it(queue, clock):
    """Completions written as one batch (the SQLite store groups a transaction's completions
    into one statement): a stale one among distinct tasks changes nothing, not even the
    attempt row of the worker that now holds its task, and the others are all recorded."""
    tasks = [(await queue.enqueue(shell(str(i))))[0] for i in range(6)]
    stale = {c.id: c for c in await queue.claim("old", 6, lease=5)}
    clock.advance(6)
    await queue.rescue_expired()
    fresh = {c.id: c for c in await queue.claim("w", 6, lease=30)}
    lost = tasks[0].id  # "old" still thinks it holds this one; "w" does
    results = await asyncio.gather(
        queue.complete(stale[lost], {"late": True}),
        *(queue.complete(fresh[t.id], {"n": i}) for i, t in enumerate(tasks) if t.id != lost),
    )
    assert results == [False] + [True] * 5
    got = await queue.get(lost)
    assert got.status == "running" and got.result is None
    assert [(a.attempt, a.worker_id, a.outcome) for a in await queue.attempts(lost)] == [
        (1, "old", "lost"), (2, "w", None)]
    for i, t in enumerate(tasks[1:], start=1):
        done = await queue.get(t.id)
        assert done.status == "succeeded" and done.result == {"n": i}
        history = await queue.attempts(t.id)
        assert [(a.worker_id, a.outcome, a.output) for a in history] == [
            ("old", "lost", None), ("w", "succeeded", {"n": i})]
        assert history[-1].finished_at is not None
    assert await queue.complete(fresh[lost], {"ok": True})
    assert (await queue.get(lost)).result == {"ok": True}


def _new_task(max_attempts: int = 3) -> NewTask:
    from shared.ids import new_id

    return NewTask(id=new_id(), type="shell", payload={"command": "true"}, priority=0,
                   max_attempts=max_attempts, timeout=30.0, run_at=1.0,
                   idempotency_key=None, request_hash=None)


async def test_submissions_written_together_fail_alone(store: Store):
    """Keyless submissions that reach the writer together may be written as one statement
    (SQLite); one whose row the database refuses fails alone, and the others are written."""
    good, bad, also_good = _new_task(), _new_task(max_attempts=0), [_new_task(), _new_task()]
    results = await asyncio.gather(
        store.insert_tasks([good], 10.0), store.insert_tasks([bad], 10.0),
        store.insert_tasks(also_good, 10.0), return_exceptions=True)
    assert isinstance(results[1], Exception), results[1]  # CHECK (max_attempts >= 1)
    assert [t.id for t, created in results[0]] == [good.id]
    assert [t.id for t, created in results[2]] == [t.id for t in also_good]
    for task in (good, *also_good):
        assert (await store.get(task.id)).status == "queued"
    assert await store.get(bad.id) is None


async def test_rows_written_together_keep_their_values(store: Store):
    """Every column of a keyless submission reads back as given, whatever way it was
    written (one statement over JSON on SQLite: its numbers must round-trip exactly)."""
    from shared.ids import new_id

    tasks = [NewTask(id=new_id(), type=f"t{i}", payload={"command": "true", "args": ["é", i]},
                     priority=-5 + i, max_attempts=1 + i, timeout=0.1 + i / 3,
                     run_at=1764547200.123456 + i / 7, idempotency_key=None,
                     request_hash=None, queue=f"q{i}",
                     callback_url=None if i % 2 else f"http://127.0.0.1:9/{i}")
             for i in range(5)]
    now = 1764547199.987654
    answers = await asyncio.gather(*(store.insert_tasks([t], now) for t in tasks[:3]),
                                   store.insert_tasks(tasks[3:], now))
    written = [task for answer in answers for task, created in answer]
    assert [t.id for t in written] == [t.id for t in tasks]
    for answer in written:  # what the submit answered is what the database holds
        assert await store.get(answer.id) == answer
    got = await store.get(tasks[3].id)
    assert (got.type, got.payload, got.priority, got.max_attempts, got.timeout, got.queue,
            got.callback_url, got.attempts, got.status) == (
        "t3", {"command": "true", "args": ["é", 3]}, -2, 4, 0.1 + 3 / 3, "q3", None, 0, "queued")
