"""Contract of the audit trail on every backend: each operator action writes its entry in its
own transaction (and only when it changed something), listing is newest first and keyset-paged
with filters, retention prunes by age, and a copy carries the entries (docs/audit.md)."""

from __future__ import annotations

import pytest

from shared import audit
from shared.audit import Actor, acting_as
from shared.errors import Conflict, NotFound, ScheduleNotFound
from shared.queue import Queue
from shared.queue_schemas import QueueUpdate
from shared.queues import Queues
from shared.retention import Pruner
from shared.schedule_schemas import ScheduleCreate, ScheduleUpdate
from shared.schedules import Schedules
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store.base import Store

DAY = 86400.0
CLI = Actor(channel="cli", identity="token 0badf00d")


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


async def everything(store: Store, **filters) -> list[audit.AuditEntry]:
    page = await store.list_audit(action=filters.get("action"), target=filters.get("target"),
                                  cursor=None, limit=500)
    assert page.next_cursor is None
    return page.items


async def test_task_actions_record_who_did_what_only_when_something_changed(
    queue: Queue, store: Store, clock
):
    a, _ = await queue.enqueue(shell("a"))
    b, _ = await queue.enqueue(shell("b", max_attempts=1))
    with acting_as(CLI):
        await queue.cancel(a.id)
        clock.advance(1)
        await queue.retry(a.id, 2)
        clock.advance(1)
        await queue.cancel(a.id)
        clock.advance(1)
        await queue.delete(a.id)
        clock.advance(1)
        # Refused or unknown: nothing done, nothing recorded.
        [claimed] = await queue.claim("w", 1, lease=30)
        assert claimed.id == b.id
        await queue.complete(claimed, {"ok": True})
        with pytest.raises(Conflict):
            await queue.cancel(b.id)
        with pytest.raises(Conflict):
            await queue.retry(b.id)
        with pytest.raises(NotFound):
            await queue.delete(a.id)
    entries = await everything(store)
    assert [(e.action, e.target_kind, e.target_id, e.count) for e in entries] == [
        ("task.delete", "task", a.id, 1),
        ("task.cancel", "task", a.id, 1),
        ("task.retry", "task", a.id, 1),
        ("task.cancel", "task", a.id, 1),
    ]
    assert {(e.channel, e.actor) for e in entries} == {("cli", "token 0badf00d")}
    assert entries[2].details == {"attempts": 2}
    assert entries[0].at.timestamp() == pytest.approx(clock.now() - 1)
    # Outside any request the actor is the process itself.
    c, _ = await queue.enqueue(shell("c"))
    await queue.cancel(c.id)
    [newest] = (await store.list_audit(action=None, target=None, cursor=None, limit=1)).items
    assert (newest.target_id, newest.channel, newest.actor) == (c.id, "internal", "process")


async def test_cancelling_a_running_task_records_the_request(queue: Queue, store: Store):
    t, _ = await queue.enqueue(shell("busy"))
    await queue.claim("w", 1, lease=30)
    await queue.cancel(t.id)
    assert [e.action for e in await everything(store, target=t.id)] == ["task.cancel"]


async def test_the_record_is_in_the_actions_transaction(queue: Queue, store: Store, clock):
    """An entry that cannot be written (here: an id already taken) undoes its action."""
    t, _ = await queue.enqueue(shell("keep me"))
    taken = audit.entry("task.delete", "task", "X", clock.now())
    await store.record_audit([taken])
    with pytest.raises(Exception):  # noqa: B017 - each engine's own integrity error
        await store.delete(t.id, audit=[taken])
    assert (await queue.get(t.id)).status == "queued"
    with pytest.raises(Exception):  # noqa: B017
        await store.cancel(t.id, clock.now(), audit=[taken])
    assert (await queue.get(t.id)).status == "queued"
    assert len(await everything(store)) == 1


async def test_schedule_actions(queue: Queue, store: Store, clock):
    schedules = Schedules(queue)
    with acting_as(Actor(channel="dashboard", identity="session 12345678")):
        s = await schedules.create(ScheduleCreate(
            name="nightly", cron_expr="0 3 * * *", task_type="shell",
            payload={"command": "echo", "args": ["secret-ish"]}))
        clock.advance(1)
        await schedules.update(s.id, ScheduleUpdate(enabled=False))
        clock.advance(1)
        await schedules.update(s.id, ScheduleUpdate(enabled=True))
        clock.advance(1)
        await schedules.update(s.id, ScheduleUpdate(cron_expr="0 4 * * *", priority=3))
        clock.advance(1)
        await schedules.update(s.id, ScheduleUpdate(name="n2", enabled=False))
        clock.advance(1)
        task = await schedules.run_now(s.id)
        clock.advance(1)
        await schedules.delete(s.id)
        with pytest.raises(ScheduleNotFound):
            await schedules.delete(s.id)
    entries = list(reversed(await everything(store, target=s.id)))
    assert [e.action for e in entries] == [
        "schedule.create", "schedule.pause", "schedule.resume", "schedule.update",
        "schedule.update", "schedule.pause", "schedule.run", "schedule.delete",
    ]
    assert entries[0].details == {"name": "nightly", "cron_expr": "0 3 * * *",
                                  "queue": "default", "enabled": True}
    # Field names, never values: a payload is nobody's business here.
    assert entries[3].details == {"fields": ["cron_expr", "priority"]}
    assert entries[6].details == {"task_id": task.id}
    assert all(e.channel == "dashboard" and e.target_kind == "schedule" for e in entries)
    assert "secret-ish" not in str([e.details for e in entries])


async def test_queue_actions_one_entry_per_setting(queue: Queue, store: Store, clock):
    queues = Queues(queue)
    await queues.update("heavy", QueueUpdate(concurrency=2))
    clock.advance(1)
    await queues.update("heavy", QueueUpdate(paused=True))
    clock.advance(1)
    await queues.update("heavy", QueueUpdate(concurrency=None, paused=False))
    entries = await everything(store, target="heavy")
    # Newest first; the two of one request in the order they were given.
    assert [(e.action, e.details) for e in entries] == [
        ("queue.resume", {}), ("queue.limit", {"concurrency": None}),
        ("queue.pause", {}), ("queue.limit", {"concurrency": 2})]
    assert all(e.target_kind == "queue" for e in entries)
    await queues.update("heavy", QueueUpdate())  # nothing given: nothing done, nothing recorded
    assert len(await everything(store, target="heavy")) == 4


async def test_list_is_newest_first_keyset_paged_and_filtered(store: Store, clock):
    made = []
    for i in range(7):
        action = ("task.cancel", "task.delete")[i % 2]
        made.append(audit.entry(action, "task", f"T{i % 3}", clock.now()))
        clock.advance(1)
    await store.record_audit(made)
    newest_first = [e.id for e in reversed(made)]
    seen, cursor = [], None
    while True:
        page = await store.list_audit(action=None, target=None, cursor=cursor, limit=3)
        assert len(page.items) <= 3
        seen += [e.id for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == newest_first
    only = await store.list_audit(action="task.delete", target=None, cursor=None, limit=2)
    assert [e.id for e in only.items] == [made[5].id, made[3].id]
    rest = await store.list_audit(action="task.delete", target=None, cursor=only.next_cursor,
                                  limit=2)
    assert [e.id for e in rest.items] == [made[1].id] and rest.next_cursor is None
    assert [e.id for e in await everything(store, target="T0")] == [
        made[6].id, made[3].id, made[0].id]
    assert [e.id for e in await everything(store, target="T0", action="task.cancel")] == [
        made[6].id, made[0].id]
    assert await everything(store, target="nobody") == []
    assert made[0] == (await everything(store, target="T0"))[-1]  # read back as written


async def test_prune_deletes_old_entries_in_batches_and_the_pruner_uses_retain_audit(
    store: Store, clock, settings: Settings
):
    old = [audit.entry("task.cancel", "task", f"O{i}", clock.now()) for i in range(5)]
    await store.record_audit(old)
    clock.advance(100 * DAY)
    new = audit.entry("task.cancel", "task", "N", clock.now())
    await store.record_audit([new])
    before = clock.now() - 90 * DAY
    assert await store.prune_audit(before, 3) == 3
    assert await store.prune_audit(before, 3) == 2
    assert await store.prune_audit(before, 3) == 0
    assert [e.id for e in await everything(store)] == [new.id]

    # The pruner: 0 keeps for ever; a period prunes (even with task retention off).
    clock.advance(100 * DAY)
    keep_tasks = {"retain_succeeded": 0.0, "retain_failed": 0.0, "retain_cancelled": 0.0}
    forever = Settings(db=settings.db, retain_audit=0.0, **keep_tasks)
    await Pruner(store, forever, "w1", clock).prune_once()
    assert [e.id for e in await everything(store)] == [new.id]
    pruner = Pruner(store, Settings(db=settings.db, retain_audit=90 * DAY, **keep_tasks),
                    "w1", clock)
    await pruner.prune_once()
    assert await everything(store) == [] and pruner.audit_pruned == 1


def test_retain_audit_defaults_to_90_days_flag_and_environment():
    from localflow.cli import build_parser
    from shared.settings import settings_from

    assert Settings().retain_audit == 90 * DAY
    assert settings_from({"LOCALFLOW_RETAIN_AUDIT": "forever"}).retain_audit == 0.0
    assert settings_from({"LOCALFLOW_RETAIN_AUDIT": "0"}).retain_audit == 0.0
    with pytest.raises(ValueError, match="LOCALFLOW_RETAIN_AUDIT"):
        settings_from({"LOCALFLOW_RETAIN_AUDIT": "a while"})
    args = build_parser().parse_args(["worker", "--retain-audit", "12h"])
    assert args.retain_audit == 12 * 3600.0
