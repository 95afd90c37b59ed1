"""Schedule operations (shared/schedules.py) on every backend (tests/contract/conftest.py)
with a fake clock: validation, create/read/update/delete, run now, next fire times."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from api.errors import status_of
from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedule_schemas import ScheduleCreate, ScheduleUpdate
from shared.schedules import InvalidSchedule, ScheduleNotFound, Schedules, preview
from shared.schemas import TaskCreate
from tests.seed import SEED_SCHEDULE

SEED = SEED_SCHEDULE  # the seed README's example


def body(**changes) -> ScheduleCreate:
    return msgspec.convert({**SEED, **changes}, ScheduleCreate)


@pytest.fixture
def schedules(queue: Queue) -> Schedules:
    return Schedules(queue)


def count_rows(rows, table: str) -> int:
    return rows(f"SELECT count(*) FROM {table}")[0][0]


async def test_seed_example_is_accepted_with_documented_defaults(schedules, clock):
    s = await schedules.create(body())
    assert (s.name, s.cron_expr, s.task_type, s.enabled) == ("Health Check", "*/5 * * * *",
                                                             "http", True)
    assert (s.timezone, s.priority, s.overlap, s.missed) == ("UTC", 0, "allow", "skip")
    assert s.max_attempts is None and s.timeout is None
    assert s.payload["url"] == "http://localhost:8080/health" and s.payload["method"] == "GET"
    # 08:00:00 on the fake clock: the next */5 fire is strictly after now.
    assert s.next_fire_at == datetime.fromtimestamp(clock.now() + 300, UTC)
    assert s.last_fire_at is None and s.last_task_id is None and s.last_task_status is None
    assert (await schedules.get(s.id)) == s
    assert [x.id for x in await schedules.list()] == [s.id]


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"cron_expr": "*/5 * * *"}, "cron_expr", "expected 5"),
        ({"cron_expr": "0 25 * * *"}, "cron_expr", "out of range"),
        ({"timezone": "Europe/Berlinn"}, "timezone", "unknown timezone"),
        ({"payload": {"url": "ftp://x", "method": "GET"}}, "payload", "http:// or https://"),
        ({"payload": {"method": "GET"}}, "payload", "url"),
        ({"task_type": "shell", "payload": {"args": ["x"]}}, "payload", "command"),
        ({"task_type": "shell", "payload": {"command": "echo", "shell": True}}, "payload",
         "shell"),
        ({"task_type": "carrier-pigeon"}, "task_type", "unknown task type"),
        ({"priority": 5000}, "priority", "<= 1000"),
        ({"overlap": "sometimes"}, "overlap", "overlap"),
        ({"missed": "all"}, "missed", "missed"),
        ({"name": ""}, "name", "length"),
    ],
)
async def test_invalid_schedule_names_the_field_and_writes_nothing(
    schedules, rows, changes, field, says
):
    # Built in Python, as the dashboard may: msgspec checks no constraints then, so the
    # service must catch everything itself.
    data = msgspec.structs.replace(body(), **changes)
    with pytest.raises(InvalidSchedule) as caught:
        await schedules.create(data)
    assert caught.value.field == field
    assert status_of(caught.value) == 422  # api/errors.py maps the domain error
    assert field in str(caught.value) and says in str(caught.value)
    assert count_rows(rows, "schedules") == 0


def test_unknown_fields_are_rejected():
    with pytest.raises(msgspec.ValidationError, match="unknown field `cron`"):
        msgspec.convert({**SEED, "cron": "* * * * *"}, ScheduleCreate)
    with pytest.raises(msgspec.ValidationError, match="unknown field `paused`"):
        msgspec.convert({"paused": True}, ScheduleUpdate)


async def test_timezone_and_options_are_stored(schedules, clock):
    clock.set(datetime(2026, 1, 5, 7, 0, tzinfo=UTC).timestamp())  # a Monday, 08:00 Berlin
    s = await schedules.create(body(
        cron_expr="0 9 * * MON-FRI", timezone="Europe/Berlin", priority=7, max_attempts=5,
        timeout=12.5, overlap="skip", missed="run_once",
    ))
    assert s.next_fire_at == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert (s.priority, s.max_attempts, s.timeout, s.overlap, s.missed) == (
        7, 5, 12.5, "skip", "run_once")


async def test_editing_cron_recomputes_next_fire_and_other_edits_keep_it(schedules, clock):
    s = await schedules.create(body())
    first_next = s.next_fire_at
    clock.advance(30)
    renamed = await schedules.update(s.id, ScheduleUpdate(name="renamed", priority=3))
    assert renamed.name == "renamed" and renamed.priority == 3
    assert renamed.next_fire_at == first_next
    assert renamed.cron_expr == "*/5 * * * *"  # fields not sent stay
    hourly = await schedules.update(s.id, ScheduleUpdate(cron_expr="0 * * * *"))
    assert hourly.next_fire_at == datetime.fromtimestamp(1_800_000_000 + 3600, UTC)
    berlin = await schedules.update(s.id, ScheduleUpdate(cron_expr="0 10 * * *",
                                                         timezone="Europe/Berlin"))
    assert berlin.next_fire_at == datetime(2027, 1, 15, 9, 0, tzinfo=UTC)


async def test_pause_clears_next_fire_and_resume_computes_it_from_now(schedules, clock):
    s = await schedules.create(body())
    paused = await schedules.update(s.id, ScheduleUpdate(enabled=False))
    assert paused.enabled is False and paused.next_fire_at is None
    clock.advance(3 * 3600 + 60)
    resumed = await schedules.update(s.id, ScheduleUpdate(enabled=True))
    assert resumed.next_fire_at == datetime.fromtimestamp(clock.now() + 240, UTC)


async def test_invalid_update_changes_nothing(schedules):
    s = await schedules.create(body())
    for update, field in [
        (ScheduleUpdate(cron_expr="every monday"), "cron_expr"),
        (ScheduleUpdate(timezone="Nowhere/Town"), "timezone"),
        # changing the type alone makes the stored http payload invalid for it
        (ScheduleUpdate(task_type="shell"), "payload"),
        (ScheduleUpdate(payload={"url": "not a url"}), "payload"),
    ]:
        with pytest.raises(InvalidSchedule) as caught:
            await schedules.update(s.id, update)
        assert caught.value.field == field
    assert await schedules.get(s.id) == s
    both = await schedules.update(s.id, ScheduleUpdate(
        task_type="shell", payload={"command": "echo", "args": ["hi"]}))
    assert both.task_type == "shell" and both.payload["command"] == "echo"


async def test_max_attempts_and_timeout_can_go_back_to_defaults(schedules):
    s = await schedules.create(body(max_attempts=4, timeout=9.0))
    back = await schedules.update(s.id, ScheduleUpdate(max_attempts=None, timeout=None))
    assert back.max_attempts is None and back.timeout is None


async def test_unknown_ids_are_not_found(schedules):
    for call in (
        schedules.get("nope"),
        schedules.update("nope", ScheduleUpdate(name="x")),
        schedules.delete("nope"),
        schedules.run_now("nope"),
        schedules.next_fire_times("nope"),
    ):
        with pytest.raises(ScheduleNotFound) as caught:
            await call
        assert status_of(caught.value) == 404


async def test_run_now_makes_a_linked_task_even_when_paused(schedules, queue, clock):
    s = await schedules.create(body(enabled=False, priority=4, max_attempts=2))
    clock.advance(10)
    task = await schedules.run_now(s.id)
    assert task.schedule_id == s.id and task.status == "queued"
    assert task.type == "http" and task.payload["url"] == SEED["payload"]["url"]
    assert (task.priority, task.max_attempts) == (4, 2)
    assert task.run_at == datetime.fromtimestamp(clock.now(), UTC)
    after = await schedules.get(s.id)
    assert after.last_task_id == task.id and after.last_task_status == "queued"
    assert after.last_fire_at == datetime.fromtimestamp(clock.now(), UTC)
    # Twice is twice: run now has no fire time to collide on.
    again = await schedules.run_now(s.id)
    assert again.id != task.id


async def test_delete_keeps_the_schedules_tasks(schedules, queue, rows):
    s = await schedules.create(body())
    task = await schedules.run_now(s.id)
    other, _ = await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}))
    await schedules.delete(s.id)
    with pytest.raises(ScheduleNotFound):
        await schedules.get(s.id)
    kept = await queue.get(task.id)
    assert kept.schedule_id == s.id  # kept, pointing at the deleted schedule's id
    assert (await queue.get(other.id)).schedule_id is None
    assert count_rows(rows, "tasks") == 2


async def test_list_shows_last_task_status_and_is_sorted_by_name(schedules, queue):
    b = await schedules.create(body(name="beta"))
    a = await schedules.create(body(name="Alpha"))
    task = await schedules.run_now(b.id)
    await queue.cancel(task.id)
    listed = await schedules.list()
    assert [s.name for s in listed] == ["Alpha", "beta"]
    assert listed[0].id == a.id and listed[0].last_task_status is None
    assert listed[1].last_task_id == task.id and listed[1].last_task_status == "cancelled"


async def test_next_fire_times_are_in_the_schedules_timezone(schedules, clock):
    clock.set(datetime(2026, 1, 2, 12, 0, tzinfo=UTC).timestamp())  # a Friday
    s = await schedules.create(body(cron_expr="0 9 * * MON-FRI", timezone="Europe/Berlin"))
    got = await schedules.next_fire_times(s.id, 3)
    assert [t.isoformat() for t in got.times] == [
        "2026-01-05T09:00:00+01:00", "2026-01-06T09:00:00+01:00", "2026-01-07T09:00:00+01:00",
    ]
    assert got.times[0] == s.next_fire_at


def test_preview_for_forms_validates_too():
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert [t.isoformat() for t in preview("30 14 * * 6", "UTC", 2, start)] == [
        "2026-01-03T14:30:00+00:00", "2026-01-10T14:30:00+00:00"]
    with pytest.raises(InvalidSchedule) as caught:
        preview("30 14 * * 6", "Atlantis/Capital")
    assert caught.value.field == "timezone"


async def test_a_payload_too_large_is_refused(schedules, settings):
    chunks = settings.max_payload_bytes // 60_000 + 1
    big = {"command": "echo", "args": ["x" * 60_000] * chunks}
    with pytest.raises(InvalidSchedule) as caught:
        await schedules.create(body(task_type="shell", payload=big))
    assert caught.value.field == "payload" and "limit" in str(caught.value)


async def test_fake_clock_is_used_for_timestamps(schedules, clock: FakeClock):
    s = await schedules.create(body())
    assert s.created_at == datetime.fromtimestamp(clock.now(), UTC)
