"""The counts the database keeps per (queue, type, status) (migration 009, issue 12 item 6), on
every backend: after every kind of change (submit, claim, finish, fail and retry, cancel,
delete, rescue, prune, run now, copy) they equal a plain GROUP BY over the tasks; many stores
claiming and finishing at once (PostgreSQL's writers commit in parallel) leave them right; and
the derived ready / scheduled / retrying counts are exact under the cap and say "at least"
past it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedule_schemas import ScheduleUpdate
from shared.schedules import Schedules
from shared.schemas import QUEUED_VIEWS, STATUSES, TaskCreate
from shared.settings import Settings
from shared.store import is_postgres, open_store
from shared.store.base import TRANSFER_TABLES, Store
from tests.contract.test_schedules_scheduler import body

Rows = Callable[..., list[tuple[Any, ...]]]


def shell(name: str, **fields: Any) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": [name]}, **fields)


def http(**fields: Any) -> TaskCreate:
    return TaskCreate(type="http", payload={"url": "http://127.0.0.1:1/"}, **fields)


async def assert_counts_true(store: Store, rows: Rows) -> None:
    """The kept counts equal what a full GROUP BY over the tasks says, in every reading."""
    truth = sorted((q, t, s, int(n)) for q, t, s, n in rows(
        "SELECT queue, type, status, count(*) FROM tasks GROUP BY queue, type, status"))
    assert sorted(await store.task_counts()) == truth
    totals = dict.fromkeys(STATUSES, 0)
    for _, _, status, n in truth:
        totals[status] += n
    assert await store.counts() == totals
    for queue in await store.queues():
        expect = dict.fromkeys(STATUSES, 0)
        for q, _, status, n in truth:
            if q == queue.name:
                expect[status] += n
        assert queue.counts == expect, queue.name


async def test_counts_follow_every_change(queue: Queue, store: Store, clock: FakeClock,
                                          rows: Rows):
    await assert_counts_true(store, rows)  # empty
    await queue.enqueue(shell("a"))
    await queue.enqueue_many([shell("b"), http(), shell("c", queue="mail"), http(queue="mail")])
    delayed = (await queue.enqueue(shell("d", delay=600)))[0]
    await queue.enqueue(shell("a"))  # a second one with the same body is still a task
    await queue.enqueue(shell("k", idempotency_key="k1"))
    await queue.enqueue(shell("k", idempotency_key="k1"))  # the same key: no new task
    await assert_counts_true(store, rows)

    claimed = await queue.claim("w1", 3, lease=30)
    assert len(claimed) == 3
    await assert_counts_true(store, rows)
    assert await queue.complete(claimed[0], {"ok": True})
    assert await queue.fail(claimed[1], "boom") == "queued"  # retrying: queued again
    assert await queue.fail(claimed[2], "bad", retry=False) == "failed"
    await assert_counts_true(store, rows)

    failed = claimed[2].id
    await queue.retry(failed)  # failed -> queued
    await assert_counts_true(store, rows)
    assert await store.run_waiting_now(delayed.id, clock.now())  # no status change
    await assert_counts_true(store, rows)

    victim = (await queue.enqueue(shell("cancel me")))[0]
    await queue.cancel(victim.id)  # queued -> cancelled
    await queue.delete(victim.id)
    await assert_counts_true(store, rows)

    everything = await queue.claim("w2", 100, lease=30)
    running = everything[0]
    await queue.cancel(running.id)  # running: asks the worker, status stays running
    assert await queue.finish_cancelled(running, None)
    await assert_counts_true(store, rows)
    assert await queue.release(everything[1])  # shut down: back to queued, not spent
    await assert_counts_true(store, rows)
    clock.advance(31)  # the rest's leases run out: rescued (queued again or failed)
    assert await queue.rescue_expired()
    await assert_counts_true(store, rows)

    for claimed_one in await queue.claim("w3", 100, lease=30):
        await queue.complete(claimed_one, None)
    clock.advance(86400)
    assert await store.prune("succeeded", clock.now() - 3600, 100) > 0
    assert await store.prune("cancelled", clock.now() - 3600, 100) > 0
    await assert_counts_true(store, rows)


async def test_a_copy_arrives_counted(queue: Queue, store: Store, clock: FakeClock,
                                      backend: str, tmp_path: Path,
                                      request: pytest.FixtureRequest):
    await queue.enqueue_many([shell(str(i)) for i in range(5)] + [http(queue="q2")])
    for claimed in await queue.claim("w", 2, lease=30):
        await queue.complete(claimed, None)
    if backend == "sqlite":
        target = await open_store(Settings(db=str(tmp_path / "copy.db")))
        await _copy_and_compare(store, target)
        return
    with request.getfixturevalue("pg_server").database() as url:
        target = await open_store(Settings(db=url), migrate_first=False)
        await _copy_and_compare(store, target)


async def _copy_and_compare(source: Store, target: Store) -> None:
    try:
        for table in TRANSFER_TABLES:
            after = ""
            while page := await source.export_rows(table, after, 2):
                await target.import_rows(table, page)
                after = page[-1]["id"]
        assert sorted(await target.task_counts()) == sorted(await source.task_counts())
        assert await target.counts() == await source.counts()
    finally:
        await target.close()


async def test_many_stores_claiming_at_once_keep_counts_right(
    queue: Queue, store: Store, clock: FakeClock, rows: Rows,
    another_store: Callable[[], Awaitable[Store]], settings: Settings,
):
    """Four stores (four processes' worth of connections) claim and finish 400 tasks
    concurrently: on PostgreSQL their transactions commit in parallel, and none of them may
    lose another's count (nor wait on a shared counter row)."""
    await queue.enqueue_many([shell(str(i), queue=f"q{i % 3}") for i in range(400)])
    others = [Queue(await another_store(), clock, settings) for _ in range(4)]

    async def work(q: Queue, name: str) -> int:
        done = 0
        while claimed := await q.claim(name, 7, lease=60):
            for i, c in enumerate(claimed):
                if i % 5 == 0:
                    await q.fail(c, "no", retry=False)
                else:
                    await q.complete(c, None)
                done += 1
        return done

    assert sum(await asyncio.gather(*(work(q, f"w{i}") for i, q in enumerate(others)))) == 400
    await assert_counts_true(store, rows)
    totals = await store.counts()
    assert totals["succeeded"] + totals["failed"] == 400 and totals["queued"] == 0
    if is_postgres(settings.db):
        # The deltas fold into task_counts (a writer does so now and then; here, at once)
        # and the sums stay what they were.
        rows("SELECT localflow_fold_task_counts()")
        assert rows("SELECT count(*) FROM task_count_deltas") == [(0,)]
        await assert_counts_true(store, rows)


async def test_derived_counts_are_exact_under_the_cap_and_lower_bounds_past_it(
    queue: Queue, store: Store, clock: FakeClock
):
    for i in range(5):
        await queue.enqueue(shell(f"due{i}"))
        await queue.enqueue(shell(f"later{i}", delay=600))
    await queue.enqueue(shell("flaky", priority=9, max_attempts=3))
    (flaky,) = await queue.claim("w", 1, lease=30)
    assert await queue.fail(flaky, "boom") == "queued"  # waits out its backoff: retrying

    exact = await store.count_tasks(clock.now(), cap=100)
    assert (exact["queued"], exact["ready"], exact["scheduled"], exact["retrying"]) == (
        11, 5, 5, 1)
    assert exact.at_least == frozenset()
    assert sum(exact[v] for v in QUEUED_VIEWS) == exact["queued"]

    # Past the cap on one side only: the other side is counted and the rest follows exactly.
    for i in range(3):
        await queue.enqueue(shell(f"more later{i}", delay=900))
    one_side = await store.count_tasks(clock.now(), cap=6)
    assert (one_side["ready"], one_side["scheduled"], one_side["retrying"]) == (5, 8, 1)
    assert one_side.at_least == frozenset()

    # Past it on both sides: lower bounds, and said so.
    for i in range(3):
        await queue.enqueue(shell(f"more due{i}"))
    both = await store.count_tasks(clock.now(), cap=4)
    assert both.at_least == {"ready", "scheduled"}
    assert both["ready"] == 4 and 4 <= both["scheduled"] <= 8 and both["retrying"] == 1
    assert both["queued"] == 17  # stored statuses stay exact

    by_type = await store.count_tasks(clock.now(), type="http", cap=4)
    assert by_type["queued"] == 0 and by_type.at_least == frozenset()

    clock.advance(3600)  # every delay and backoff is over
    later = await store.count_tasks(clock.now(), cap=100)
    assert (later["ready"], later["scheduled"], later["retrying"]) == (17, 0, 0)


async def test_a_queue_filter_counts_from_the_kept_counts_and_the_cap_within_that_queue(
    queue: Queue, store: Store, clock: FakeClock
):
    """The task list's queue filter (main's queuesui) on the cheap counts (dashperf): stored
    statuses are the kept rows of that queue; ready / scheduled / retrying are counted in that
    queue's index ranges only, so a busy queue past the cap leaves a quiet one exact."""
    for i in range(5):
        await queue.enqueue(shell(f"busy due{i}", queue="busy"))
        await queue.enqueue(shell(f"busy later{i}", queue="busy", delay=600))
    await queue.enqueue(http(queue="busy"))
    await queue.enqueue(shell("quiet due", queue="quiet"))
    await queue.enqueue(shell("quiet later", queue="quiet", delay=600))
    await queue.enqueue(shell("flaky", queue="quiet", priority=9, max_attempts=3))
    (flaky,) = await queue.claim("w", 1, lease=30)
    assert flaky.queue == "quiet"
    assert await queue.fail(flaky, "boom") == "queued"  # retrying, in quiet
    await queue.cancel((await queue.enqueue(shell("gone", queue="quiet")))[0].id)

    quiet = await store.count_tasks(clock.now(), queue="quiet", cap=4)
    assert {s: quiet[s] for s in STATUSES} == {
        "queued": 3, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert (quiet["ready"], quiet["scheduled"], quiet["retrying"]) == (1, 1, 1)
    assert quiet.at_least == frozenset()  # exact: the busy queue's backlog is not counted

    busy = await store.count_tasks(clock.now(), queue="busy", cap=4)
    assert busy["queued"] == 11 and busy["cancelled"] == 0  # stored statuses stay exact
    assert busy.at_least == {"ready", "scheduled"}
    assert busy["ready"] == 4 and busy["retrying"] == 0
    exact_busy = await store.count_tasks(clock.now(), queue="busy", cap=100)
    assert (exact_busy["ready"], exact_busy["scheduled"]) == (6, 5)

    busy_http = await store.count_tasks(clock.now(), queue="busy", type="http", cap=4)
    assert (busy_http["queued"], busy_http["ready"], busy_http["scheduled"]) == (1, 1, 0)
    assert busy_http.at_least == frozenset()
    nobody = await store.count_tasks(clock.now(), queue="nobody", cap=4)
    assert all(nobody[k] == 0 for k in (*STATUSES, *QUEUED_VIEWS)) and not nobody.at_least


async def assert_schedule_counts_true(store: Store, rows: Rows, clock: FakeClock,
                                      schedule_ids: list[str]) -> None:
    """count_tasks under a schedule filter (migration 010's kept counts, alone or with a type
    or queue filter) equals a GROUP BY over that schedule's tasks, views included."""
    now = clock.now()
    for sid in schedule_ids:
        for type_, queue_name in ((None, None), ("shell", None), ("http", None),
                                  (None, "default"), (None, "mail"), ("shell", "mail")):
            expect = dict.fromkeys((*STATUSES, *QUEUED_VIEWS), 0)
            for status, run_at, attempts, t, q in rows(
                    "SELECT status, run_at, attempts, type, queue FROM tasks"
                    " WHERE schedule_id = ?", sid):
                if (type_ is None or t == type_) and (queue_name is None or q == queue_name):
                    expect[status] += 1
                    if status == "queued":
                        view = ("ready" if run_at <= now
                                else "retrying" if attempts > 0 else "scheduled")
                        expect[view] += 1
            got = await store.count_tasks(now, schedule_id=sid, type=type_, queue=queue_name)
            assert dict(got) == expect, (sid, type_, queue_name)
            assert got.at_least == frozenset()


async def test_a_schedules_counts_are_kept_through_every_change(
    queue: Queue, store: Store, clock: FakeClock, rows: Rows
):
    """Issue 12 item 6: the task list under ?schedule= reads kept counts (migration 010), not
    the schedule's tasks; they stay equal to a GROUP BY through run now, claim, finish, fail
    and retry, cancel, delete, prune, and an edit of the schedule's queue and type."""
    schedules = Schedules(queue)
    one = await schedules.create(body(name="one"))
    two = await schedules.create(body(name="two"))
    ids = [one.id, two.id]
    await assert_schedule_counts_true(store, rows, clock, ids)  # nothing yet
    for _ in range(4):
        await schedules.run_now(one.id)
        clock.advance(0.002)
    await schedules.run_now(two.id)
    await queue.enqueue(shell("by hand"))  # no schedule: counted nowhere here
    await assert_schedule_counts_true(store, rows, clock, ids)

    claimed = await queue.claim("w", 4, lease=30)
    assert await queue.complete(claimed[0], None)
    assert await queue.fail(claimed[1], "boom") == "queued"  # retrying
    assert await queue.fail(claimed[2], "bad", retry=False) == "failed"
    await assert_schedule_counts_true(store, rows, clock, ids)  # one still running

    await queue.retry(claimed[2].id)
    clock.advance(0.002)
    fresh = await schedules.run_now(one.id)
    await queue.cancel(fresh.id)
    await assert_schedule_counts_true(store, rows, clock, ids)
    await queue.delete(fresh.id)
    await schedules.update(one.id, msgspec.convert(
        {"task_type": "http", "payload": {"url": "http://127.0.0.1:1/"}, "queue": "mail"},
        ScheduleUpdate))
    await schedules.run_now(one.id)  # an http task in queue mail, same schedule
    await assert_schedule_counts_true(store, rows, clock, ids)

    for task in await queue.claim("w2", 10, lease=30):
        await queue.complete(task, None)
    clock.advance(86400)
    assert await store.prune("succeeded", clock.now() - 3600, 100) > 0
    await assert_schedule_counts_true(store, rows, clock, ids)

    await schedules.delete(two.id)  # its tasks keep their schedule id, and their counts
    await assert_schedule_counts_true(store, rows, clock, ids)


async def test_a_schedules_queued_views_past_the_cap_are_lower_bounds(
    queue: Queue, store: Store, clock: FakeClock
):
    schedules = Schedules(queue)
    made = await schedules.create(body(name="busy", overlap="allow"))
    for _ in range(3):
        await schedules.run_now(made.id)
        clock.advance(0.002)
    exact = await store.count_tasks(clock.now(), schedule_id=made.id, cap=3)
    assert (exact["queued"], exact["ready"]) == (3, 3) and exact.at_least == frozenset()
    capped = await store.count_tasks(clock.now(), schedule_id=made.id, cap=2)
    assert capped["queued"] == 3  # the stored status stays exact
    assert capped.at_least == set(QUEUED_VIEWS) and capped["ready"] >= 2

async def test_a_batch_with_keys_taken_before_and_within_it_counts_and_logs_each_new_task(
    queue: Queue, store: Store, rows: Rows,
):
    """The keyed batch insert (every row at once, then the rows a key kept out answered from
    the task holding it): answers in order, counts equal to a GROUP BY, and one 'queued'
    event for each task that went in, none for the ones that did not."""
    earlier, _ = await queue.enqueue(shell("x", idempotency_key="before"))
    results = await queue.enqueue_many([
        shell("a"), shell("x", idempotency_key="before"), shell("n", idempotency_key="new"),
        http(queue="mail"), shell("n", idempotency_key="new"), shell("b", queue="mail"),
    ])
    assert [created for _, created in results] == [True, False, True, True, False, True]
    assert results[1][0].id == earlier.id and results[4][0].id == results[2][0].id
    assert [t.payload["args"] for t, _ in results if t.type == "shell"] == [
        ["a"], ["x"], ["n"], ["n"], ["b"]]
    await assert_counts_true(store, rows)
    new_ids = {t.id for t, created in results if created} | {earlier.id}
    logged = [task_id for (task_id,) in rows("SELECT task_id FROM task_events")]
    assert sorted(logged) == sorted(new_ids)
