"""Contract of webhook deliveries (shared/store/base.py WebhookStore, docs/webhooks.md) on
every backend: a delivery is recorded by the very transaction that finishes a task with a
callback_url, on every path into a final state; deliverers claim it under a lease; each try is
recorded, fenced by the lease's token; deliveries go with their task (delete, retention) and
with a copy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.clock import FakeClock
from shared.errors import InvalidSchedule
from shared.queue import InvalidTask, Queue
from shared.schedule_schemas import ScheduleCreate
from shared.schedules import Schedules
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import open_store
from shared.store.base import Store

URL = "https://hooks.example.com/localflow"


@pytest.fixture
def hooks(store: Store, clock: FakeClock, settings: Settings) -> Queue:
    """A queue on this backend whose server has a webhook secret."""
    with_secret = msgspec_replace(settings, webhook_secret="s3cret-for-tests")
    return Queue(store, clock, settings=with_secret)


def msgspec_replace(settings: Settings, **changes: object) -> Settings:
    import msgspec

    return msgspec.structs.replace(settings, **changes)


def shell(url: str | None = URL, **fields: object) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "true"}, callback_url=url,
                      **fields)  # type: ignore[arg-type]


async def pending(store: Store, task_id: str) -> list[dict]:
    return [d for d in await store.deliveries(task_id) if d["state"] == "pending"]


async def test_completing_a_task_records_one_due_delivery(hooks: Queue, store: Store,
                                                          clock: FakeClock):
    task, _ = await hooks.enqueue(shell())
    assert task.callback_url == URL
    assert (await hooks.get(task.id)).callback_url == URL
    plain, _ = await hooks.enqueue(shell(None))
    claimed = await hooks.claim("w", 2, lease=30)
    assert await store.deliveries(task.id) == []  # nothing before it is finished
    clock.advance(5)
    for c in claimed:
        assert await hooks.complete(c, {"ok": True})

    [delivery] = await store.deliveries(task.id)
    assert delivery["task_id"] == task.id and delivery["url"] == URL
    assert delivery["task_status"] == "succeeded" and delivery["state"] == "pending"
    assert delivery["tries"] == 0 and delivery["history"] == []
    assert delivery["next_try_at"] == pytest.approx(clock.now())
    assert delivery["created_at"] == pytest.approx(clock.now())
    assert await store.deliveries(plain.id) == []  # no callback_url, no delivery
    assert await store.next_delivery_at() == pytest.approx(clock.now())


async def test_every_path_into_a_final_state_records_a_delivery(hooks: Queue, store: Store,
                                                                clock: FakeClock):
    # failed for good (no attempts left), and a failure that will be retried (none yet)
    failing, _ = await hooks.enqueue(shell(max_attempts=2))
    [c] = await hooks.claim("w", 1, lease=30)
    assert await hooks.fail(c, "boom") == "queued"
    assert await store.deliveries(failing.id) == []
    clock.advance(3600)
    [c] = await hooks.claim("w", 1, lease=30)
    assert await hooks.fail(c, "boom again") == "failed"
    assert [d["task_status"] for d in await store.deliveries(failing.id)] == ["failed"]

    # cancelled while queued (API and dashboard both cancel through Queue.cancel)
    queued, _ = await hooks.enqueue(shell(delay=60))
    await hooks.cancel(queued.id)
    assert [d["task_status"] for d in await store.deliveries(queued.id)] == ["cancelled"]

    # cancelled while running: the worker stops it and records the cancel
    running, _ = await hooks.enqueue(shell())
    [c] = await hooks.claim("w", 1, lease=30)
    await hooks.cancel(running.id)
    assert await store.deliveries(running.id) == []  # only asked; not final yet
    assert await hooks.finish_cancelled(c)
    assert [d["task_status"] for d in await store.deliveries(running.id)] == ["cancelled"]

    # the worker died on its last attempt: rescue fails it
    lost, _ = await hooks.enqueue(shell(max_attempts=1))
    await hooks.claim("w", 1, lease=30)
    clock.advance(31)
    assert lost.id in await hooks.rescue_expired()
    assert [d["task_status"] for d in await store.deliveries(lost.id)] == ["failed"]

    # retried by a person and finished again: a second delivery, for the second outcome
    await hooks.retry(failing.id)
    [c] = await hooks.claim("w", 1, lease=30)
    assert await hooks.complete(c, None)
    assert [d["task_status"] for d in await store.deliveries(failing.id)] == [
        "failed", "succeeded"]
    ids = [d["id"] for d in await store.deliveries(failing.id)]
    assert len(set(ids)) == 2


async def test_a_claimed_delivery_is_held_by_one_deliverer_until_its_lease_ends(
    hooks: Queue, store: Store, another_store, clock: FakeClock
):
    task, _ = await hooks.enqueue(shell())
    [c] = await hooks.claim("w", 1, lease=30)
    await hooks.complete(c, None)
    other = await another_store()
    now = clock.now()

    [first] = await store.claim_deliveries(10, now + 40, now)
    assert first.task_id == task.id and first.url == URL and first.tries == 0
    assert first.task_status == "succeeded"
    assert await other.claim_deliveries(10, now + 40, now) == []  # leased
    assert await store.claim_deliveries(0, now + 40, now) == []

    # The first deliverer died: once its lease ran out, another takes the delivery over.
    later = now + 41
    [second] = await other.claim_deliveries(10, later + 40, later)
    assert second.id == first.id and second.token != first.token
    # The dead one's late write changes nothing; the new holder's counts.
    assert not await store.record_delivery_try(
        first.id, first.token, {"at": later, "duration": 0.1, "status_code": 200,
                                "error": None},
        next_try_at=None, delivered=True, now=later)
    assert await other.record_delivery_try(
        second.id, second.token, {"at": later, "duration": 0.2, "status_code": 200,
                                  "error": None},
        next_try_at=None, delivered=True, now=later + 1)
    [delivery] = await store.deliveries(task.id)
    assert delivery["state"] == "delivered" and delivery["tries"] == 1
    assert delivery["finished_at"] == pytest.approx(later + 1)
    assert delivery["next_try_at"] is None
    assert delivery["history"] == [{"at": later, "duration": 0.2, "status_code": 200,
                                    "error": None}]
    assert await store.next_delivery_at() is None
    assert await store.claim_deliveries(10, later + 100, later + 60) == []


async def test_failed_tries_are_kept_and_retried_until_given_up(hooks: Queue, store: Store,
                                                               clock: FakeClock):
    task, _ = await hooks.enqueue(shell())
    [c] = await hooks.claim("w", 1, lease=30)
    await hooks.complete(c, None)
    now = clock.now()

    [d] = await store.claim_deliveries(1, now + 40, now)
    assert await store.record_delivery_try(
        d.id, d.token, {"at": now, "duration": 1.5, "status_code": 500,
                        "error": "answered 500 Internal Server Error"},
        next_try_at=now + 10, delivered=False, now=now + 1.5)
    [row] = await pending(store, task.id)
    assert row["tries"] == 1 and row["next_try_at"] == pytest.approx(now + 10)
    assert row["finished_at"] is None
    assert await store.next_delivery_at() == pytest.approx(now + 10)
    assert await store.claim_deliveries(1, now + 45, now + 5) == []  # not due yet

    [d] = await store.claim_deliveries(1, now + 50, now + 10)
    assert d.tries == 1
    assert await store.record_delivery_try(
        d.id, d.token, {"at": now + 10, "duration": 10.0, "status_code": None,
                        "error": "timed out after 10s"},
        next_try_at=None, delivered=False, now=now + 20)
    [row] = await store.deliveries(task.id)
    assert row["state"] == "failed" and row["tries"] == 2
    assert row["finished_at"] == pytest.approx(now + 20) and row["next_try_at"] is None
    assert [h["status_code"] for h in row["history"]] == [500, None]
    assert row["history"][1]["error"] == "timed out after 10s"
    assert await store.claim_deliveries(5, now + 1000, now + 900) == []


async def test_deliveries_go_with_their_task(hooks: Queue, store: Store, clock: FakeClock,
                                             rows):
    kept, _ = await hooks.enqueue(shell())
    deleted, _ = await hooks.enqueue(shell())
    pruned, _ = await hooks.enqueue(shell(), )
    for c in await hooks.claim("w", 3, lease=30):
        await hooks.complete(c, None)
    assert rows("SELECT count(*) FROM webhook_deliveries") == [(3,)]

    await hooks.delete(deleted.id)
    assert await store.deliveries(deleted.id) == []
    clock.advance(86400)
    # Retention prunes oldest first: everything finished before now goes, with deliveries.
    await store.prune("succeeded", clock.now(), 1)
    left = {r[0] for r in rows("SELECT task_id FROM webhook_deliveries")}
    assert len(left) == 1 and left <= {kept.id, pruned.id}


async def test_a_schedules_tasks_carry_its_callback_url(hooks: Queue, clock: FakeClock):
    schedules = Schedules(hooks)
    schedule = await schedules.create(ScheduleCreate(
        name="nightly", cron_expr="* * * * *", task_type="shell",
        payload={"command": "true"}, callback_url=URL))
    assert schedule.callback_url == URL
    assert (await schedules.get(schedule.id)).callback_url == URL
    clock.advance(61)
    [fire] = await schedules.fire_due()
    assert fire.outcome == "fired"
    assert (await hooks.get(fire.task_id)).callback_url == URL
    by_hand = await schedules.run_now(schedule.id)
    assert by_hand.callback_url == URL

    with pytest.raises(InvalidSchedule) as refused:
        await schedules.create(ScheduleCreate(
            name="bad", cron_expr="* * * * *", task_type="shell",
            payload={"command": "true"}, callback_url="http://169.254.169.254/latest"))
    assert refused.value.field == "callback_url"


async def test_callback_url_is_refused_without_a_secret(queue: Queue):
    with pytest.raises(InvalidTask) as refused:
        await queue.enqueue(shell())
    assert refused.value.field == "callback_url"
    assert "LOCALFLOW_WEBHOOK_SECRET" in str(refused.value)
    assert (await queue.list()).items == []


@pytest.fixture
async def fresh(backend: str, tmp_path: Path, request: pytest.FixtureRequest
                ) -> AsyncIterator[Store]:
    """A second, empty, migrated database on the same engine."""
    if backend == "sqlite":
        opened = await open_store(Settings(db=str(tmp_path / "fresh.db")))
        yield opened
        await opened.close()
        return
    server = request.getfixturevalue("pg_server")
    with server.database() as url:
        opened = await open_store(Settings(db=url), migrate_first=False)
        yield opened
        await opened.close()


async def test_a_copy_carries_deliveries_with_their_tasks(hooks: Queue, store: Store,
                                                          fresh: Store, clock: FakeClock):
    task, _ = await hooks.enqueue(shell())
    [c] = await hooks.claim("w", 1, lease=30)
    await hooks.complete(c, None)
    now = clock.now()
    [d] = await store.claim_deliveries(1, now + 40, now)
    await store.record_delivery_try(
        d.id, d.token, {"at": now, "duration": 0.5, "status_code": 503, "error": "answered 503"},
        next_try_at=now + 10, delivered=False, now=now + 1)

    exported = await store.export_rows("tasks", "", 10)
    [row] = exported
    assert [r["id"] for r in row["delivery_rows"]] == [d.id]
    done = await fresh.import_rows("tasks", exported)
    assert (done.rows, done.deliveries) == (1, 1)
    assert await fresh.deliveries(task.id) == await store.deliveries(task.id)
    assert (await fresh.get(task.id)).callback_url == URL
    assert (await fresh.table_counts())["webhook_deliveries"] == 1
    again = await fresh.import_rows("tasks", exported)
    assert (again.rows, again.deliveries) == (0, 0)
