"""What the dashboard asks of the store beyond the queue's own reads (issue 12), on every
backend: counts under every filter with the queued tasks split into ready / scheduled /
retrying, the pages of those derived views, "longest waiting" past a delayed backlog, the
attempts' own time, "run now" for a waiting task, the bounded text search, and the running
tasks by worker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shared.queue import Queue
from shared.schedules import Schedules
from shared.schemas import QUEUED_VIEWS, STATUSES, TaskCreate
from shared.store.base import Store
from tests.contract.test_schedules_scheduler import body


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


def http(**fields) -> TaskCreate:
    return TaskCreate(type="http", payload={"url": "http://127.0.0.1:1/"}, **fields)


def clock_step(queue: Queue) -> None:
    """Ids are ULIDs: only ids made in different milliseconds sort by time."""
    queue.clock.advance(0.002)


async def _retrying(queue: Queue, n: int) -> list[str]:
    """n tasks whose first attempt failed, now in their backoff (queued, not due, attempts 1).
    Urgent, so the claim takes them before any other due task."""
    made = []
    for i in range(n):
        clock_step(queue)
        made.append((await queue.enqueue(shell(f"r{i}", max_attempts=3, priority=50)))[0].id)
    for claimed in await queue.claim("w", n, lease=30):
        assert await queue.fail(claimed, "boom") == "queued"
    return made


async def test_counts_split_queued_and_honour_every_filter(queue: Queue, clock):
    empty = await queue.store.count_tasks(clock.now())
    assert empty == dict.fromkeys((*STATUSES, *QUEUED_VIEWS), 0)
    retrying = await _retrying(queue, 2)
    for i in range(3):
        await queue.enqueue(shell(f"d{i}", delay=600))
    for _ in range(4):
        await queue.enqueue(http())
    schedule = await Schedules(queue).create(body())
    scheduled_task = await Schedules(queue).run_now(schedule.id)  # a shell task, due now
    cancelled = (await queue.enqueue(shell("c")))[0]
    await queue.cancel(cancelled.id)

    counts = await queue.store.count_tasks(clock.now())
    assert {k: counts[k] for k in STATUSES} == {
        "queued": 10, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert (counts["ready"], counts["scheduled"], counts["retrying"]) == (5, 3, 2)
    assert sum(counts[v] for v in QUEUED_VIEWS) == counts["queued"]

    by_type = await queue.store.count_tasks(clock.now(), type="http")
    assert (by_type["queued"], by_type["ready"], by_type["cancelled"]) == (4, 4, 0)
    shells = await queue.store.count_tasks(clock.now(), type="shell")
    assert (shells["queued"], shells["cancelled"]) == (6, 1)
    assert (shells["ready"], shells["scheduled"], shells["retrying"]) == (1, 3, 2)

    of_schedule = await queue.store.count_tasks(clock.now(), schedule_id=schedule.id)
    assert (of_schedule["queued"], of_schedule["ready"], of_schedule["cancelled"]) == (1, 1, 0)
    both = await queue.store.count_tasks(clock.now(), type="http", schedule_id=schedule.id)
    assert both["queued"] == 0 and scheduled_task.type == "shell"

    clock.advance(3600)  # the delays and the backoffs are over: everything queued is ready
    later = await queue.store.count_tasks(clock.now())
    assert (later["ready"], later["scheduled"], later["retrying"]) == (10, 0, 0)
    assert retrying


async def test_queued_views_page_newest_first_through_a_bounded_window(queue: Queue, clock):
    retrying = await _retrying(queue, 3)
    delayed, ready = [], []
    for i in range(5):
        clock_step(queue)
        delayed.append((await queue.enqueue(shell(f"d{i}", delay=600)))[0].id)
    for _ in range(2):
        clock_step(queue)
        ready.append((await queue.enqueue(http()))[0].id)
    store, now = queue.store, clock.now()

    ids, cursor = await store.queued_view_ids("retrying", now)
    assert ids == retrying[::-1] and cursor is None  # the window held every queued task
    ids, cursor = await store.queued_view_ids("ready", now, limit=1)
    assert ids == [ready[-1]] and cursor == ready[-1]  # a full page goes on from its last id
    ids, cursor = await store.queued_view_ids("ready", now, cursor=cursor)
    assert ids == [ready[0]] and cursor is None
    assert (await store.queued_view_ids("scheduled", now, type="http")) == ([], None)

    # A window of 4 queued tasks a call: the newest four are 2 ready and 2 delayed, so the
    # retrying ones (the oldest) come only from the next window, and a call may find none.
    seen: list[str] = []
    cursor = None
    calls = 0
    while True:
        ids, cursor = await store.queued_view_ids("retrying", now, cursor=cursor, scan=4)
        seen += ids
        calls += 1
        if cursor is None:
            break
    assert seen == retrying[::-1] and calls >= 2
    first, after = await store.queued_view_ids("retrying", now, scan=4)
    assert first == [] and after == delayed[-2]  # the end of the window looked at

    schedule = await Schedules(queue).create(body())
    made = (await Schedules(queue).run_now(schedule.id)).id
    assert await store.queued_view_ids("ready", now, schedule_id=schedule.id) == ([made], None)


async def test_oldest_runnable_is_the_longest_due_across_priorities(queue: Queue, clock):
    # Every priority has delayed tasks that sort before its due ones by id and by priority.
    start = clock.now()
    for p in (-5, 0, 7):
        for _ in range(3):
            await queue.enqueue(shell("later", priority=p, delay=3600))
    clock.advance(5)
    high, _ = await queue.enqueue(shell("h", priority=7))
    clock.advance(5)
    low, _ = await queue.enqueue(shell("l", priority=-5))
    assert (await queue.store.oldest_runnable(clock.now())).id == high.id
    await queue.delete(high.id)
    oldest = await queue.store.oldest_runnable(clock.now())
    assert oldest is not None and (oldest.id, oldest.priority) == (low.id, -5)
    # The delayed ones were created first but fall due later: `low` has been due longer.
    clock.advance(3600)
    assert (await queue.store.oldest_runnable(clock.now())).id == low.id
    await queue.delete(low.id)
    oldest = await queue.store.oldest_runnable(clock.now())
    assert oldest is not None and oldest.run_at == pytest.approx(start + 3600)


async def test_attempt_seconds_is_the_attempts_own_time(queue: Queue, clock):
    task, _ = await queue.enqueue(shell("x", max_attempts=3))
    idle, _ = await queue.enqueue(shell("never claimed", delay=600))
    (claimed,) = await queue.claim("w", 1, lease=30)
    clock.advance(2)
    assert await queue.fail(claimed, "boom") == "queued"
    clock.advance(500)  # the backoff and then some: not work
    (claimed,) = await queue.claim("w", 1, lease=30)
    assert claimed.id == task.id
    clock.advance(3)  # the second attempt is still running: it counts up to now
    took = await queue.store.attempt_seconds([task.id, idle.id], clock.now())
    assert took == {task.id: pytest.approx(5.0)}
    await queue.complete(claimed, {})
    clock.advance(100)
    assert (await queue.store.attempt_seconds([task.id], clock.now()))[task.id] == \
        pytest.approx(5.0)
    assert await queue.store.attempt_seconds([], clock.now()) == {}


async def test_run_waiting_now_brings_a_waiting_task_forward_and_wakes_listeners(
    queue: Queue, clock, another_store: Callable[[], Awaitable[Store]]
):
    delayed, _ = await queue.enqueue(shell("d", delay=600))
    due, _ = await queue.enqueue(shell("due"))
    store = queue.store
    # Another process's listener hears about it (the worker there claims at once).
    other = await another_store()
    listener = other.listener()
    woken = asyncio.Event()
    unsubscribe = listener.subscribe(woken.set)
    try:
        connected = getattr(listener, "connected", None)
        if connected is not None:  # PostgreSQL: LISTEN is issued on a connection of its own
            await asyncio.wait_for(connected.wait(), 30)
        assert await store.run_waiting_now(delayed.id, clock.now()) is True
        await asyncio.wait_for(woken.wait(), 30)
    finally:
        unsubscribe()
    after = await store.get(delayed.id)
    assert after is not None and after.status == "queued"
    assert after.run_at.timestamp() == pytest.approx(clock.now())
    claimed = await queue.claim("w", 5, lease=30)
    assert {c.id for c in claimed} == {delayed.id, due.id}
    # Nothing else is "waiting": a due task, a running one, a finished one, an unknown id.
    assert await store.run_waiting_now(delayed.id, clock.now()) is False  # running now
    late, _ = await queue.enqueue(shell("now"))
    assert await store.run_waiting_now(late.id, clock.now()) is False  # already due
    assert await store.run_waiting_now("01ARZ3NDEKTSV4RRFFQ69G5FAV", clock.now()) is False
    await queue.complete(claimed[0], {})
    assert await store.run_waiting_now(claimed[0].id, clock.now()) is False
    # A task in its retry backoff is waiting too.
    (retrying,) = await _retrying(queue, 1)
    before = await store.get(retrying)
    assert before is not None and before.run_at.timestamp() > clock.now()
    assert await store.run_waiting_now(retrying, clock.now()) is True
    counts = await store.count_tasks(clock.now())
    assert counts["retrying"] == 0


async def test_every_dashboard_read_narrows_by_queue(queue: Queue, clock):
    """The task list's queue filter (issue 13 item 6): counts, the derived queued views and a
    schedule's tasks all narrow by queue, alone and with the other filters."""
    schedule = await Schedules(queue).create(body(queue="reports"))
    made = {"reports": [], "default": []}
    for i in range(3):
        clock_step(queue)
        made["reports"].append((await queue.enqueue(shell(f"r{i}", queue="reports")))[0].id)
    clock_step(queue)
    delayed = (await queue.enqueue(shell("later", queue="reports", delay=600)))[0].id
    for _ in range(2):
        clock_step(queue)
        made["default"].append((await queue.enqueue(http()))[0].id)
    clock_step(queue)
    fired = await Schedules(queue).run_now(schedule.id)  # a reports task of the schedule
    cancelled = (await queue.enqueue(shell("c", queue="reports")))[0].id
    await queue.cancel(cancelled)

    reports = await queue.store.count_tasks(clock.now(), queue="reports")
    assert {k: reports[k] for k in STATUSES} == {
        "queued": 5, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert (reports["ready"], reports["scheduled"], reports["retrying"]) == (4, 1, 0)
    default = await queue.store.count_tasks(clock.now(), queue="default")
    assert (default["queued"], default["ready"], default["cancelled"]) == (2, 2, 0)
    assert (await queue.store.count_tasks(clock.now(), queue="nobody"))["queued"] == 0
    http_reports = await queue.store.count_tasks(clock.now(), queue="reports", type="http")
    assert http_reports["queued"] == 0
    of_schedule = await queue.store.count_tasks(
        clock.now(), queue="reports", schedule_id=schedule.id)
    assert (of_schedule["queued"], of_schedule["ready"]) == (1, 1)
    assert (await queue.store.count_tasks(
        clock.now(), queue="default", schedule_id=schedule.id))["queued"] == 0

    ready, _ = await queue.store.queued_view_ids("ready", clock.now(), queue="reports")
    assert ready == [fired.id, *reversed(made["reports"])]
    ready_default, _ = await queue.store.queued_view_ids("ready", clock.now(), queue="default")
    assert ready_default == list(reversed(made["default"]))
    waiting, _ = await queue.store.queued_view_ids("scheduled", clock.now(), queue="reports")
    assert waiting == [delayed]
    assert (await queue.store.queued_view_ids(
        "scheduled", clock.now(), queue="default"))[0] == []

    assert await queue.store.task_ids_of_schedule(schedule.id, queue="reports") == [fired.id]
    assert await queue.store.task_ids_of_schedule(schedule.id, queue="default") == []


async def test_search_finds_command_arguments_and_error_text_in_a_bounded_window(
    queue: Queue, clock
):
    """The dashboard's search: a substring of the command, an argument or the error (last
    error or stderr in the result), any ASCII case, newest first, narrowed by status and
    type, between a floor and a cursor, looking at a window of `scan` tasks per call."""
    from shared.ids import id_at

    clock_step(queue)
    before = clock.now()  # the backup's creation time
    backup = (await queue.enqueue(TaskCreate(
        type="shell", payload={"command": "pg_dump", "args": ["--dbname", "Orders"]})))[0]
    for i in range(5):
        clock_step(queue)
        await queue.enqueue(shell(f"noise{i}"))
    clock_step(queue)
    failing = (await queue.enqueue(shell("x", max_attempts=1)))[0]
    clock_step(queue)
    cause = (await queue.enqueue(shell("y", max_attempts=1)))[0]
    for claimed in await queue.claim("w", 10, lease=30):
        if claimed.id == failing.id:
            assert await queue.fail(claimed, "ERROR: connection refused to db-1:5432") == "failed"
        elif claimed.id == cause.id:
            assert await queue.fail(claimed, "sh exited with status 3",
                                    {"stderr": "Disk Quota exceeded on /srv\n"}) == "failed"
        else:
            await queue.complete(claimed, {"stdout": "ok"})
    store = queue.store

    async def search(needle: str, **kw) -> list[str]:
        ids, _ = await store.search_task_ids(needle, **kw)
        return ids

    assert await search("pg_dump") == [backup.id]  # the command
    assert await search("orders") == [backup.id]  # an argument, in another case
    assert await search("connection refused") == [failing.id]  # the last error
    assert await search("disk quota") == [cause.id]  # stderr in the result
    assert await search("noise") == [t.id for t in (await queue.list(type="shell", limit=50))
                                     .items if t.id not in (backup.id, failing.id, cause.id)]
    assert await search("connection refused", status="succeeded") == []
    assert await search("pg_dump", type="http") == []
    assert await search("nothing like this") == []
    # A floor at a time after the backup leaves it out; one before keeps it.
    assert await search("pg_dump", floor=id_at(before + 0.001)) == []
    assert await search("pg_dump", floor=id_at(before)) == [backup.id]

    # Paging: two at a time, the cursor carries on; a window of 3 tasks finds only what is in
    # it and hands back where to go on.
    first, cursor = await store.search_task_ids("noise", limit=2)
    assert len(first) == 2 and cursor == first[-1]
    rest, _ = await store.search_task_ids("noise", limit=10, cursor=cursor)
    assert len(rest) == 3 and not set(rest) & set(first)
    window, end = await store.search_task_ids("pg_dump", limit=10, scan=3)
    assert window == [] and end is not None  # the backup is older than the 3 newest tasks
    found = []
    while end is not None:
        page, end = await store.search_task_ids("pg_dump", limit=10, scan=3, cursor=end)
        found += page
    assert found == [backup.id]


async def test_running_task_ids_by_the_worker_that_holds_them(queue: Queue, clock):
    assert await queue.store.running_task_ids() == {}
    made = []
    for i in range(5):
        clock_step(queue)
        made.append((await queue.enqueue(shell(f"w{i}")))[0].id)
    first = [c.id for c in await queue.claim("worker-a", 2, lease=30)]
    second = [c.id for c in await queue.claim("worker-b", 1, lease=30)]
    held = await queue.store.running_task_ids()
    assert held == {"worker-a": sorted(first, reverse=True), "worker-b": second}
    assert sum(len(v) for v in (await queue.store.running_task_ids(limit=2)).values()) == 2


async def test_get_many_reads_tasks_in_the_order_asked(queue: Queue):
    made = [(await queue.enqueue(shell(str(i))))[0] for i in range(4)]
    wanted = [made[2].id, "01ARZ3NDEKTSV4RRFFQ69G5FAV", made[0].id, made[3].id]
    got = await queue.store.get_many(wanted)
    assert [t.id for t in got] == [made[2].id, made[0].id, made[3].id]  # unknown one left out
    assert got[0] == await queue.store.get(made[2].id)
    assert await queue.store.get_many([]) == []
