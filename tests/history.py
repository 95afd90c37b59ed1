"""A database with a past: tasks in every state with their attempt histories, schedules that
fired, skipped and were paused, workers seen and stopped. Built through the Queue and
Schedules (so every row is one LocalFlow itself would write) with a fake clock; used by the
copy tests, which check that all of it arrives unchanged."""

from __future__ import annotations

import msgspec

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedule_schemas import ScheduleCreate, ScheduleUpdate
from shared.schedules import Schedules
from shared.schemas import TaskCreate

LEASE = 30.0


def shell(name: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": [name]}, **fields)


async def make_history(queue: Queue, schedules: Schedules, clock: FakeClock) -> dict[str, str]:
    """Fill the queue's database; returns the task ids by what happened to them."""
    ids: dict[str, str] = {}

    async def claim_one(name: str):
        (claimed,) = await queue.claim("worker-a", 1, lease=LEASE)
        assert claimed.id == ids[name], (claimed.id, name)
        return claimed

    await queue.worker_seen("worker-a", "host-a", 101, 4)
    await queue.worker_seen("worker-b", "host-b", 202, 2)

    # Each task is claimed right after it is submitted (nothing else is runnable then).
    ids["succeeded"] = (await queue.enqueue(shell("ok", idempotency_key="key-ok")))[0].id
    await queue.complete(await claim_one("succeeded"), {"exit_code": 0, "stdout": "ok\n"})
    clock.advance(1)

    ids["failed"] = (await queue.enqueue(shell("bad", max_attempts=1)))[0].id
    await queue.fail(await claim_one("failed"), "exit 1", {"exit_code": 1}, retry=False)
    clock.advance(1)

    # Failed once, retried after its backoff, then succeeded: two attempts.
    ids["retried"] = (await queue.enqueue(shell("flaky", priority=5)))[0].id
    assert await queue.fail(await claim_one("retried"), "exit 3", {"exit_code": 3}) == "queued"
    clock.advance(3600)
    await queue.complete(await claim_one("retried"), {"exit_code": 0})

    # Its worker vanished: the lease ran out and the rescuer recorded the attempt as lost.
    ids["lost"] = (await queue.enqueue(shell("lost", timeout=12.5)))[0].id
    await claim_one("lost")
    clock.advance(LEASE + 1)
    assert await queue.rescue_expired() == [ids["lost"]]
    await queue.complete(await claim_one("lost"), {"exit_code": 0})

    ids["cancelled"] = (await queue.enqueue(shell("never", delay=600)))[0].id
    await queue.cancel(ids["cancelled"])

    # Running at copy time, one of them with a cancel asked for.
    ids["running"] = (await queue.enqueue(shell("busy")))[0].id
    await claim_one("running")
    ids["cancelling"] = (await queue.enqueue(shell("stop me")))[0].id
    await claim_one("cancelling")
    await queue.cancel(ids["cancelling"])

    # In named queues (docs/queues.md): a copy keeps every task's and schedule's queue.
    ids["queued"] = (await queue.enqueue(
        shell("waiting", idempotency_key="key-q", queue="reports")))[0].id
    ids["delayed"] = (await queue.enqueue(
        shell("later", delay=3600, priority=-3, queue="emails")))[0].id

    # Schedules: one fired by the scheduler (a task with a fire time), then run by hand; one
    # paused; one whose fire was skipped because its previous task was still queued.
    every5 = await schedules.create(msgspec.convert(
        {"name": "every five", "cron_expr": "*/5 * * * *", "task_type": "shell",
         "payload": {"command": "date"}, "timezone": "Europe/Paris", "max_attempts": 2},
        ScheduleCreate))
    paused = await schedules.create(msgspec.convert(
        {"name": "paused", "cron_expr": "0 3 * * *", "task_type": "http",
         "payload": {"url": "http://127.0.0.1:9/x"}, "enabled": False,
         "queue": "nightly"}, ScheduleCreate))
    single = await schedules.create(msgspec.convert(
        {"name": "one at a time", "cron_expr": "* * * * *", "task_type": "shell",
         "payload": {"command": "true"}, "overlap": "skip"}, ScheduleCreate))
    clock.advance(5 * 60)
    fires = await schedules.fire_due()
    assert {f.outcome for f in fires} == {"fired"}, fires
    ids["fired"] = next(f.task_id for f in fires if f.schedule_id == every5.id)
    ids["run_now"] = (await schedules.run_now(every5.id)).id
    clock.advance(60)
    fires = await schedules.fire_due()
    assert any(f.outcome == "overlap" for f in fires if f.schedule_id == single.id), fires
    await schedules.update(paused.id, msgspec.convert({"priority": 7}, ScheduleUpdate))

    await queue.worker_stopped("worker-b")
    return ids
