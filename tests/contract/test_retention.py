"""Contract of retention on every backend: what prune deletes and keeps, the pruner lease
(one pruner at a time, handed over when its holder stops), and the Pruner's settings."""

from __future__ import annotations

import pytest

from shared.queue import Queue
from shared.retention import Pruner
from shared.schedule_schemas import ScheduleCreate
from shared.schedules import Schedules
from shared.schemas import TaskCreate
from shared.settings import Settings

DAY = 86400.0


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


async def finish(queue: Queue, status: str, n: int = 1) -> list[str]:
    """n tasks brought to `status` now (with an attempt row each)."""
    ids = []
    for i in range(n):
        task, _ = await queue.enqueue(shell(str(i), max_attempts=1))
        if status == "cancelled":
            await queue.cancel(task.id)
        else:
            [c] = await queue.claim("w", 1, lease=30)
            if status == "succeeded":
                assert await queue.complete(c, {"ok": 1})
            else:
                assert await queue.fail(c, "boom") == "failed"
        ids.append(task.id)
    return ids


async def test_prune_deletes_old_finished_tasks_of_one_status_in_batches(queue, clock, store,
                                                                         rows):
    old_ok = await finish(queue, "succeeded", 5)
    old_failed = await finish(queue, "failed", 1)
    clock.advance(2 * DAY)
    new_ok = await finish(queue, "succeeded", 1)
    waiting, _ = await queue.enqueue(shell("w"))
    before = clock.now() - DAY
    assert await store.prune("succeeded", before, 3) == 3
    assert await store.prune("succeeded", before, 3) == 2
    assert await store.prune("succeeded", before, 3) == 0
    remaining = {r[0] for r in rows("SELECT id FROM tasks")}
    assert remaining == {*old_failed, *new_ok, waiting.id}
    # Their attempts went with them.
    assert {r[0] for r in rows("SELECT DISTINCT task_id FROM task_attempts")} == {
        *old_failed, *new_ok}
    assert not set(old_ok) & remaining


async def test_prune_keeps_a_schedules_last_task(queue: Queue, clock, store):
    schedules = Schedules(queue)
    s = await schedules.create(ScheduleCreate(name="s", cron_expr="* * * * *",
                                              task_type="shell", payload={"command": "echo"}))
    first = await schedules.run_now(s.id)
    clock.advance(1)
    last = await schedules.run_now(s.id)
    for _ in range(2):
        [c] = await queue.claim("w", 1, lease=30)
        await queue.complete(c, None)
    clock.advance(10 * DAY)
    assert await store.prune("succeeded", clock.now() - DAY, 100) == 1
    assert (await queue.store.get(first.id)) is None
    kept = await schedules.get(s.id)
    assert kept.last_task_id == last.id and kept.last_task_status == "succeeded"


async def test_lease_is_held_by_one_and_handed_over_when_it_expires(store, another_store):
    other = await another_store()
    assert await store.take_lease("pruner", "a", until=100.0, now=10.0)
    assert not await other.take_lease("pruner", "b", until=120.0, now=20.0)
    assert await store.take_lease("pruner", "a", until=130.0, now=30.0)  # renewed
    assert not await other.take_lease("pruner", "b", until=140.0, now=129.0)
    assert await other.take_lease("pruner", "b", until=200.0, now=131.0)  # expired: b's
    assert not await store.take_lease("pruner", "a", until=210.0, now=140.0)


async def test_pruner_honours_each_retention_and_forever(queue, clock, store, another_store,
                                                         settings):
    ok = await finish(queue, "succeeded", 2)
    bad = await finish(queue, "failed", 2)
    gone = await finish(queue, "cancelled", 2)
    clock.advance(8 * DAY)
    cfg = Settings(**{**_fields(settings), "retain_succeeded": 7 * DAY,
                      "retain_failed": 0.0, "retain_cancelled": 7 * DAY})
    first = Pruner(store, cfg, "w1", clock)
    second = Pruner(await another_store(), cfg, "w2", clock)
    assert await first.prune_once() == 4
    assert first.pruned == {"succeeded": 2, "cancelled": 2}
    left = {t.id for t in (await queue.list(limit=100)).items}
    assert left == set(bad)  # failed kept for ever (retain 0), the rest pruned
    assert not (set(ok) | set(gone)) & left
    # One pruner at a time: the other finds the lease held and does nothing.
    assert await second.prune_once() == 0 and second.passes == 0
    # Until the holder stops renewing it: after the lease runs out the other takes over.
    clock.advance(3 * cfg.prune_interval + 31)
    assert await second.prune_once() == 0 and second.passes == 1


def _fields(settings: Settings) -> dict:
    import msgspec
    return msgspec.structs.asdict(settings)


@pytest.mark.parametrize("text,seconds", [("7d", 7 * DAY), ("0", 0.0), ("forever", 0.0),
                                          ("36h", 36 * 3600.0)])
def test_retention_settings(text, seconds):
    from shared.settings import settings_from
    assert settings_from({"LOCALFLOW_RETAIN_FAILED": text}).retain_failed == seconds


def test_bad_retention_setting():
    from shared.settings import settings_from
    with pytest.raises(ValueError, match="LOCALFLOW_RETAIN_SUCCEEDED"):
        settings_from({"LOCALFLOW_RETAIN_SUCCEEDED": "a week"})
    with pytest.raises(ValueError, match="LOCALFLOW_PRUNE_INTERVAL"):
        settings_from({"LOCALFLOW_PRUNE_INTERVAL": "0"})

