"""The scheduler (worker/scheduler.py) on every backend (tests/contract/conftest.py) with a
fake clock: firing on time, exactly once with several schedulers and across restarts, clock
jumps both ways, the missed-run and overlap policies, daylight saving, pause, edit, delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedule_schemas import ScheduleCreate, ScheduleUpdate
from shared.schedules import Schedules
from shared.settings import Settings
from worker.scheduler import Scheduler

START = 1_800_000_000.0  # the FakeClock's start: Friday 2027-01-15 08:00:00 UTC


def body(**changes) -> ScheduleCreate:
    base = {"name": "job", "cron_expr": "*/5 * * * *", "task_type": "shell",
            "payload": {"command": "true"}}
    return msgspec.convert({**base, **changes}, ScheduleCreate)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def fired_tasks(rows) -> list[tuple[str, float]]:
    """(schedule_id, fire_time) of every task a cron fire made."""
    return rows(
        "SELECT schedule_id, fire_time FROM tasks WHERE fire_time IS NOT NULL ORDER BY fire_time"
    )


@pytest.fixture
def schedules(queue: Queue) -> Schedules:
    return Schedules(queue)


@pytest.fixture
def scheduler(schedules: Schedules, settings: Settings, clock: FakeClock) -> Scheduler:
    return Scheduler(schedules, settings, clock)


@pytest.fixture
async def second(another_store, clock, settings) -> Scheduler:
    """Another scheduler with its own connections to the same database: another process."""
    return Scheduler(Schedules(Queue(await another_store(), clock, settings)), settings, clock)


async def test_fires_when_due_links_the_task_and_moves_on(schedules, scheduler, clock, queue):
    s = await schedules.create(body())
    assert await scheduler.run_once() == []  # 08:00:00: the first fire is 08:05
    clock.set(START + 300)
    [fire] = await scheduler.run_once()
    assert fire.outcome == "fired" and fire.fire_time == START + 300 and fire.late == 0.0
    task = await queue.get(fire.task_id)
    assert task.schedule_id == s.id and task.status == "queued"
    assert task.type == "shell" and task.payload["command"] == "true"
    assert task.run_at == datetime.fromtimestamp(START + 300, UTC)
    after = await schedules.get(s.id)
    assert after.last_fire_at == datetime.fromtimestamp(START + 300, UTC)
    assert after.last_task_id == task.id and after.last_task_status == "queued"
    assert after.next_fire_at == datetime.fromtimestamp(START + 600, UTC)
    assert await scheduler.run_once() == []  # same instant again: nothing


async def test_sleeps_until_the_next_fire_bounded_by_the_interval(schedules, scheduler, clock):
    await scheduler.run_once()
    assert scheduler.sleep_for() == scheduler.settings.schedule_interval  # no schedules
    await schedules.create(body(cron_expr="* * * * *"))
    clock.set(START + 57.5)
    await scheduler.run_once()
    assert scheduler.sleep_for() == pytest.approx(2.5)
    clock.set(START + 20)
    await scheduler.run_once()
    assert scheduler.sleep_for() == scheduler.settings.schedule_interval
    clock.set(START + 60)
    assert len(await scheduler.run_once()) == 1
    assert scheduler.sleep_for() == scheduler.settings.schedule_interval  # next: 60 s away


async def test_two_schedulers_racing_fire_each_time_once(
    schedules, scheduler, second, clock, rows
):
    ids = [(await schedules.create(body(name=f"s{i}", cron_expr="* * * * *"))).id
           for i in range(5)]
    for minute in range(1, 21):
        clock.set(START + 60 * minute)
        a, b = await asyncio.gather(scheduler.run_once(), second.run_once())
        assert len(a) + len(b) == 5
    fired = fired_tasks(rows)
    assert len(fired) == len(set(fired)) == 5 * 20
    assert {sid for sid, _ in fired} == set(ids)


async def test_a_restarted_scheduler_does_not_fire_again(schedules, scheduler, clock, rows,
                                                         settings, another_store):
    await schedules.create(body())
    clock.set(START + 300)
    assert len(await scheduler.run_once()) == 1
    # "Restart": a new process with new connections and no memory, at the same instant.
    db = await another_store()
    fresh = Scheduler(Schedules(Queue(db, clock, settings)), settings, clock)
    assert await fresh.run_once() == []
    clock.set(START + 600)
    assert [f.outcome for f in await fresh.run_once()] == ["fired"]
    assert [t for _, t in fired_tasks(rows)] == [START + 300, START + 600]


async def test_clock_back_never_fires_a_time_twice_and_then_follows_the_clock(
    schedules, scheduler, clock, rows
):
    s = await schedules.create(body())
    for k in (1, 2, 3):  # 08:05, 08:10, 08:15
        clock.set(START + 300 * k)
        await scheduler.run_once()
    clock.set(START + 30)  # back to 08:00:30
    assert await scheduler.run_once() == []
    # The next fire follows the clock again instead of waiting for 08:20.
    assert (await schedules.get(s.id)).next_fire_at == datetime.fromtimestamp(START + 300, UTC)
    outcomes = []
    for k in (1, 2, 3, 4):  # 08:05..08:20 a second time
        clock.set(START + 300 * k)
        outcomes += [f.outcome for f in await scheduler.run_once()]
    assert outcomes == ["already fired", "already fired", "already fired", "fired"]
    times = [t for _, t in fired_tasks(rows)]
    assert times == [START + 300 * k for k in (1, 2, 3, 4)]
    assert (await schedules.get(s.id)).last_skip_reason == "already fired"


async def test_clock_back_seen_by_a_scheduler_that_restarts(schedules, scheduler, second, clock,
                                                            rows):
    await schedules.create(body())
    clock.set(START + 600)
    await scheduler.run_once()  # fires 08:10; the next would be 08:15
    clock.set(START + 100)
    # A scheduler that was not running when the clock moved resyncs on its first pass.
    await second.run_once()
    clock.set(START + 300)
    assert [f.outcome for f in await second.run_once()] == ["fired"]  # 08:05 never fired
    assert [t for _, t in fired_tasks(rows)] == [START + 300, START + 600]


@pytest.mark.parametrize(("missed", "expected"), [("skip", "missed"), ("run_once", "fired")])
async def test_clock_forward_runs_at_most_the_latest_fire(
    schedules, scheduler, clock, rows, missed, expected
):
    s = await schedules.create(body(missed=missed))
    clock.set(START + 3 * 3600 + 7 * 60)  # 11:07: 08:05 .. 11:05 all passed
    fires = await scheduler.run_once()
    assert [(f.outcome, f.fire_time) for f in fires] == [(expected, START + 3 * 3600 + 300)]
    assert len(fired_tasks(rows)) == (1 if missed == "run_once" else 0)
    after = await schedules.get(s.id)
    assert after.next_fire_at == datetime.fromtimestamp(START + 3 * 3600 + 600, UTC)
    assert after.last_skip_reason == "missed"  # 08:05 .. 11:00 were skipped either way


async def test_a_fire_a_little_late_is_not_missed(schedules, scheduler, clock, rows):
    await schedules.create(body(missed="skip"))
    clock.set(START + 300 + 45)  # 45 s late: within the grace of a minute
    assert [f.outcome for f in await scheduler.run_once()] == ["fired"]


@pytest.mark.parametrize(("missed", "tasks"), [("skip", 0), ("run_once", 1)])
async def test_downtime_over_a_daily_fire(schedules, scheduler, clock, rows, missed, tasks):
    """Machine off from 01:00 to 08:00 over a 02:00 daily job."""
    clock.set(at("2027-01-15T01:00:00+00:00"))
    s = await schedules.create(body(cron_expr="0 2 * * *", missed=missed))
    clock.set(at("2027-01-15T08:00:00+00:00"))
    await scheduler.run_once()
    fired = fired_tasks(rows)
    assert len(fired) == tasks
    if tasks:
        assert fired[0][1] == at("2027-01-15T02:00:00+00:00")  # made for the missed fire
    after = await schedules.get(s.id)
    assert after.next_fire_at == datetime(2027, 1, 16, 2, 0, tzinfo=UTC)
    await scheduler.run_once()
    assert len(fired_tasks(rows)) == tasks  # and only once


async def test_overlap_skip_waits_for_the_previous_task(schedules, scheduler, clock, queue):
    s = await schedules.create(body(cron_expr="* * * * *", overlap="skip"))
    free = await schedules.create(body(name="free", cron_expr="* * * * *"))
    outcomes: dict[str, list[str]] = {s.id: [], free.id: []}

    async def tick(minute: int) -> None:
        clock.set(START + 60 * minute)
        for f in await scheduler.run_once():
            outcomes[f.schedule_id].append(f.outcome)

    await tick(1)
    await tick(2)  # the first task is still queued
    [claimed] = [c for c in await queue.claim("w", 10, 30) if c.payload and
                 (await queue.get(c.id)).schedule_id == s.id]
    await tick(3)  # ... and now running
    await queue.complete(claimed, {"ok": True})
    await tick(4)
    assert outcomes[s.id] == ["fired", "overlap", "overlap", "fired"]
    assert outcomes[free.id] == ["fired"] * 4
    assert (await schedules.get(s.id)).last_skip_reason == "overlap"


async def test_pause_stops_firing_and_resume_does_not_replay(schedules, scheduler, clock,
                                                             rows):
    s = await schedules.create(body(missed="run_once"))
    await schedules.update(s.id, ScheduleUpdate(enabled=False))
    clock.set(START + 3600)
    assert await scheduler.run_once() == []
    await schedules.update(s.id, ScheduleUpdate(enabled=True))
    clock.set(START + 3600 + 300)
    assert [f.fire_time for f in await scheduler.run_once()] == [START + 3600 + 300]
    assert len(fired_tasks(rows)) == 1


async def test_edit_takes_effect_at_the_next_pass(schedules, scheduler, clock, queue):
    s = await schedules.create(body(cron_expr="0 * * * *"))
    await schedules.update(s.id, ScheduleUpdate(cron_expr="*/10 * * * *",
                                                payload={"command": "echo", "args": ["v2"]}))
    clock.set(START + 600)
    [fire] = await scheduler.run_once()
    assert (await queue.get(fire.task_id)).payload["args"] == ["v2"]


async def test_delete_stops_firing_and_keeps_tasks(schedules, scheduler, clock, queue, rows):
    s = await schedules.create(body())
    clock.set(START + 300)
    [fire] = await scheduler.run_once()
    await schedules.delete(s.id)
    clock.set(START + 600)
    assert await scheduler.run_once() == []
    assert (await queue.get(fire.task_id)).schedule_id == s.id
    assert len(fired_tasks(rows)) == 1


async def test_daylight_saving_days_in_berlin(schedules, scheduler, clock, rows):
    """02:30 every day: once at 03:00 CEST on spring-forward day, once at the first 02:30 on
    fall-back day."""
    clock.set(at("2026-03-28T12:00:00+01:00"))
    spring = await schedules.create(body(cron_expr="30 2 * * *", timezone="Europe/Berlin"))
    assert spring.next_fire_at == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    clock.set(at("2026-03-29T03:00:00+02:00"))
    assert [f.outcome for f in await scheduler.run_once()] == ["fired"]
    assert (await schedules.get(spring.id)).next_fire_at == datetime(2026, 3, 30, 0, 30,
                                                                       tzinfo=UTC)
    await schedules.delete(spring.id)

    clock.set(at("2026-10-24T12:00:00+02:00"))
    fall = await schedules.create(body(cron_expr="30 2 * * *", timezone="Europe/Berlin"))
    fired = []
    # Walk the fall-back night minute by minute: 02:00 CEST .. 03:00 CET is two hours.
    t = at("2026-10-25T01:50:00+02:00")
    while t <= at("2026-10-25T03:10:00+01:00"):
        clock.set(t)
        fired += [f for f in await scheduler.run_once() if f.outcome == "fired"]
        t += 60
    assert [datetime.fromtimestamp(f.fire_time, UTC) for f in fired] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, not again at 02:30 CET
    ]
    assert (await schedules.get(fall.id)).next_fire_at == datetime(2026, 10, 26, 1, 30,
                                                                     tzinfo=UTC)


async def test_run_loop_wakes_for_a_fire_and_stops(schedules, queue, clock, rows, settings):
    """The real loop: it fires once the (fake) clock reaches the fire, and ends on stop."""
    settings = msgspec.structs.replace(settings, schedule_interval=0.02)
    scheduler = Scheduler(schedules, settings, clock)
    await schedules.create(body())
    stop = asyncio.Event()
    loop_task = asyncio.create_task(scheduler.run(stop))
    clock.set(START + 300)
    async with asyncio.timeout(60):  # polls the database, bounded
        while not fired_tasks(rows):
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(loop_task, 30)
    assert [t for _, t in fired_tasks(rows)] == [START + 300]
