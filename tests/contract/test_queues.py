"""Contract of named queues on every backend: the queue field, listing by queue, settings,
pause, global concurrency limits kept in the claim (also against concurrent claimers on
separately opened stores, as other processes or hosts would be), worker queue filters."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from shared.clock import FakeClock
from shared.queue import InvalidTask, Queue
from shared.queue_schemas import QueueUpdate
from shared.queues import InvalidQueue, Queues
from shared.schedule_schemas import ScheduleCreate
from shared.schedules import Schedules
from shared.schemas import TaskCreate


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


@pytest.fixture
def queues(queue: Queue) -> Queues:
    return Queues(queue)


async def test_tasks_carry_their_queue_default_default(queue: Queue):
    plain, _ = await queue.enqueue(shell("a"))
    mail, _ = await queue.enqueue(shell("b", queue="mail.v2-x_y"))
    assert plain.queue == "default" and mail.queue == "mail.v2-x_y"
    assert (await queue.get(mail.id)).queue == "mail.v2-x_y"
    [claimed_first, claimed_second] = await queue.claim("w", 2, lease=30)
    assert {claimed_first.queue, claimed_second.queue} == {"default", "mail.v2-x_y"}


async def test_list_filters_by_queue_with_status_type_and_cursor(queue: Queue, clock):
    mail = []
    for i in range(3):
        clock.advance(0.01)  # ids sort by creation time
        mail.append((await queue.enqueue(shell(str(i), queue="mail")))[0])
    await queue.enqueue(shell("other"))
    page = await queue.list(queue="mail", limit=2)
    assert [t.id for t in page.items] == [mail[2].id, mail[1].id]
    rest = await queue.list(queue="mail", cursor=page.next_cursor, limit=2)
    assert [t.id for t in rest.items] == [mail[0].id] and rest.next_cursor is None
    await queue.cancel(mail[1].id)
    assert [t.id for t in (await queue.list(queue="mail", status="cancelled")).items] == [
        mail[1].id]
    assert (await queue.list(queue="mail", type="http")).items == []
    assert (await queue.list(queue="nothing")).items == []
    with pytest.raises(InvalidTask) as err:
        await queue.list(queue="bad name")
    assert err.value.field == "queue"


async def test_queue_names_are_validated():
    for bad in ("", "has space", "x" * 65, "slash/no", "é"):
        with pytest.raises(Exception):  # noqa: B017 - msgspec's ValidationError, any field
            import msgspec
            msgspec.convert({"type": "shell", "payload": {"command": "x"}, "queue": bad},
                            TaskCreate)


async def test_overview_and_settings(queue: Queue, queues: Queues):
    await queue.enqueue(shell("a", queue="mail"))
    await queue.enqueue(shell("b", queue="mail"))
    await queue.enqueue(shell("c"))
    await queue.claim("w", 1, lease=30)
    listed = {q.name: q for q in await queues.list()}
    assert set(listed) == {"default", "mail"}
    assert sum(listed["mail"].counts.values()) == 2
    assert listed["mail"].concurrency is None and listed["mail"].paused is False

    info = await queues.update("reports", QueueUpdate(concurrency=2))
    assert (info.name, info.concurrency, info.paused) == ("reports", 2, False)
    assert info.counts["queued"] == 0
    info = await queues.update("reports", QueueUpdate(paused=True))
    assert (info.concurrency, info.paused) == (2, True)  # the limit kept
    info = await queues.update("reports", QueueUpdate(concurrency=None))
    assert (info.concurrency, info.paused) == (None, True)  # pause kept
    assert "reports" in {q.name for q in await queues.list()}  # settings alone list it
    fresh = await queues.get("never-used")
    assert fresh.concurrency is None and not fresh.paused and sum(fresh.counts.values()) == 0
    with pytest.raises(InvalidQueue) as err:
        await queues.update("bad name", QueueUpdate(paused=True))
    assert err.value.field == "name"


async def test_paused_queue_is_not_claimed_and_resume_wakes(queue: Queue, queues: Queues):
    woken = []
    queue.on_runnable = lambda: woken.append(1)
    await queues.update("mail", QueueUpdate(paused=True))
    held, _ = await queue.enqueue(shell("m", queue="mail", priority=10))
    other, _ = await queue.enqueue(shell("d"))
    assert [c.id for c in await queue.claim("w", 5, lease=30)] == [other.id]
    assert await queue.claim("w", 5, lease=30) == []
    # A worker must be able to idle: the paused queue's due task is no reason to look again.
    assert await queue.next_run_at() is None
    woken.clear()
    await queues.update("mail", QueueUpdate(paused=False))
    assert woken  # resume wakes workers at once
    assert await queue.next_run_at() is not None
    assert [c.id for c in await queue.claim("w", 5, lease=30)] == [held.id]


async def in_order(queue: Queue, clock: FakeClock, *creates: TaskCreate):
    """Enqueue one after the other, a little apart: run_at and ids sort as written."""
    made = []
    for create in creates:
        clock.advance(0.01)
        made.append((await queue.enqueue(create))[0])
    return made


async def test_limit_caps_running_tasks_across_claims_and_frees_room(queue, queues, clock):
    await queues.update("heavy", QueueUpdate(concurrency=2))
    heavy = await in_order(queue, clock, *(shell(str(i), queue="heavy", priority=5)
                                           for i in range(5)))
    light = await in_order(queue, clock, *(shell(str(i)) for i in range(3)))
    first = await queue.claim("w1", 10, lease=30)
    # Priority order within what may be taken: 2 heavy (the limit), then the light ones.
    assert [c.id for c in first] == [heavy[0].id, heavy[1].id, *[t.id for t in light]]
    assert await queue.claim("w2", 10, lease=30) == []
    assert await queue.next_run_at() is None  # full: nothing this worker could take
    assert await queue.complete(first[0], {"ok": True})
    [next_heavy] = await queue.claim("w2", 10, lease=30)
    assert next_heavy.id == heavy[2].id
    # Raising the limit makes room at once; removing it, for all.
    await queues.update("heavy", QueueUpdate(concurrency=3))
    assert [c.id for c in await queue.claim("w3", 10, lease=30)] == [heavy[3].id]
    await queues.update("heavy", QueueUpdate(concurrency=None))
    assert [c.id for c in await queue.claim("w3", 10, lease=30)] == [heavy[4].id]


async def test_limit_one_with_batches_takes_one(queue, queues):
    await queues.update("solo", QueueUpdate(concurrency=1))
    for i in range(4):
        await queue.enqueue(shell(str(i), queue="solo"))
    assert len(await queue.claim("w", 8, lease=30)) == 1
    assert await queue.claim("w", 8, lease=30) == []


async def test_worker_queue_filter_keeps_priority_order(queue: Queue, clock):
    a_low, b_high, c_top, a_high = await in_order(
        queue, clock, shell("a", queue="a", priority=1), shell("b", queue="b", priority=9),
        shell("c", queue="c", priority=100), shell("a2", queue="a", priority=10))
    claimed = await queue.claim("w", 10, lease=30, queues=("a", "b"))
    assert [c.id for c in claimed] == [a_high.id, b_high.id, a_low.id]
    assert await queue.next_run_at(("a", "b")) is None
    assert await queue.next_run_at(("c",)) is not None
    assert [c.id for c in await queue.claim("w", 10, lease=30, queues=("c",))] == [c_top.id]


async def test_limit_is_global_under_concurrent_claimers(
    settings, another_store, clock: FakeClock, queues: Queues
):
    """Eight claimers, each on its own store (another process or host), race for a queue
    limited to 3: never more than 3 running, and the limit is reached."""
    await queues.update("heavy", QueueUpdate(concurrency=3))
    stores = [await another_store() for _ in range(8)]
    claimers = [Queue(s, clock, settings) for s in stores]
    for i in range(40):
        await claimers[0].enqueue(shell(str(i), queue="heavy"))
    for _round in range(5):
        results = await asyncio.gather(*(q.claim(f"w{i}", 4, lease=30)
                                         for i, q in enumerate(claimers)))
        running = [c for got in results for c in got]
        counts = (await queues.get("heavy")).counts
        assert counts["running"] == 3 and len(running) == 3, (_round, counts, len(running))
        # Finish them all concurrently, then race again.
        await asyncio.gather(*(claimers[0].complete(c, None) for c in running))


async def test_schedule_tasks_go_to_the_schedule_queue(schedules: Schedules, queue: Queue):
    created = await schedules.create(ScheduleCreate(
        name="q", cron_expr="* * * * *", task_type="shell",
        payload={"command": "echo"}, queue="reports",
    ))
    assert created.queue == "reports"
    task = await schedules.run_now(created.id)
    assert task.queue == "reports"
    from shared.schedule_schemas import ScheduleUpdate
    updated = await schedules.update(created.id, ScheduleUpdate(queue="other"))
    assert updated.queue == "other"
    assert (await schedules.run_now(created.id)).queue == "other"


async def test_idempotency_hash_unchanged_for_default_queue():
    from shared.queue import request_hash
    base = shell("a", idempotency_key="k")
    explicit = shell("a", idempotency_key="k", queue="default")
    assert request_hash(base) == request_hash(explicit)
    assert request_hash(shell("a", idempotency_key="k", queue="x")) != request_hash(base)


async def test_per_queue_path_keeps_priority_order_past_a_paused_queue(queue, queues, clock):
    """With a queue closed the claim reads each open queue's head (shared/store/claiming.py):
    the order across open queues is still priority, run_at, id, and a limited queue's room
    is still kept."""
    await queues.update("stuck", QueueUpdate(paused=True))
    await queues.update("two", QueueUpdate(concurrency=2))
    await in_order(queue, clock, *(shell(str(i), queue="stuck", priority=100) for i in range(30)))
    a = await in_order(queue, clock, shell("a1", queue="a", priority=5),
                       shell("a2", queue="a", priority=1))
    b = await in_order(queue, clock, shell("b1", queue="b", priority=7),
                       shell("b2", queue="b", priority=1))
    two = await in_order(queue, clock, *(shell(str(i), queue="two", priority=6)
                                         for i in range(4)))
    first = await queue.claim("w", 4, lease=30)
    assert [c.id for c in first] == [b[0].id, two[0].id, two[1].id, a[0].id]
    rest = await queue.claim("w", 10, lease=30)
    assert [c.id for c in rest] == [a[1].id, b[1].id]
    assert all(c.queue != "stuck" for c in first + rest)


# The claim's ways to pick its tasks (shared/store/claiming.py): a walk over the runnable
# index, the same in rounds while a limited queue has room, or each open queue's head when a
# queue is paused; each also with on_claimed given (SQLite hands the tasks over before its
# COMMIT: docs/state_machine.md, "Started before the claim is durable").
CLAIM_PATHS = {
    "walk": {},
    "walk in rounds (a limit)": {"two": QueueUpdate(concurrency=2)},
    "per queue (a pause and a limit)": {"stuck": QueueUpdate(paused=True),
                                        "two": QueueUpdate(concurrency=2)},
}


@pytest.mark.parametrize("early", [False, True], ids=["after commit", "early start"])
@pytest.mark.parametrize("settings_of", list(CLAIM_PATHS.values()), ids=list(CLAIM_PATHS))
async def test_every_claim_path_takes_most_urgent_first_each_with_its_own_token(
    store, queue, queues, clock, settings_of, early
):
    for name, update in settings_of.items():
        await queues.update(name, update)
    if "stuck" in settings_of:
        await in_order(queue, clock, *(shell(str(i), queue="stuck", priority=100)
                                       for i in range(5)))
    # Made in another order than the urgent one (ids are ordered by creation).
    low, retried = await in_order(queue, clock, shell("low", queue="a", priority=1),
                                  shell("retried", queue="a", priority=3, max_attempts=2))
    (first,) = await queue.claim("w0", 1, lease=30)
    assert first.id == retried.id and await queue.fail(first, "boom") == "queued"
    clock.advance(60)  # past its backoff
    (mid,) = await in_order(queue, clock, shell("mid", queue="b", priority=5))
    two = await in_order(queue, clock, *(shell(str(i), queue="two", priority=4)
                                         for i in range(3)))
    seen: list[list] = []
    on_claimed = seen.append if early else None
    claimed = await queue.claim("w", 10, lease=30, on_claimed=on_claimed)

    # Most urgent first: priority, then run_at; a limited queue only up to its room.
    limit_two = "two" in settings_of
    expected = [mid, *(two[:2] if limit_two else two), retried, low]
    assert [c.id for c in claimed] == [t.id for t in expected]
    if early and store.engine == "sqlite":
        assert seen == [claimed]  # the same tasks, order and tokens, before the answer
    else:
        assert seen == []
    # A new token each (not the failed attempt's), the attempt counted and its row opened.
    tokens = [c.token for c in claimed]
    assert len(set(tokens)) == len(tokens) and first.token not in tokens
    assert {c.id: c.attempt for c in claimed} == {t.id: 2 if t.id == retried.id else 1
                                                  for t in expected}
    for c in claimed:
        task = await queue.get(c.id)
        assert (task.status, task.attempts) == ("running", c.attempt)
        rows = [(a.attempt, a.worker_id, a.outcome) for a in await queue.attempts(c.id)]
        assert rows == [(1, "w0", "failed")] * (c.attempt - 1) + [(c.attempt, "w", None)]
    # Each token fences its own task only: another task's token completes nothing.
    a, b = claimed[0], claimed[1]
    assert not await queue.complete(msgspec.structs.replace(a, token=b.token), None)
    assert all([await queue.complete(c, None) for c in claimed])
