"""Schedule operations shared by the API, the dashboard and the scheduler.

People create, edit, pause and delete schedules; the scheduler (worker/scheduler.py) calls
`fire_due`, which turns each due fire into a task. Exactly once is the database's job, not
this process's: a fire moves `next_fire_at` on with a compare-and-set in the same transaction
that inserts the task, and a unique index on tasks (schedule_id, fire_time) refuses a second
task for a fire time however it comes back (another scheduler, a restart, the clock going
back). Semantics, including daylight saving: docs/schedules.md.
The data is behind the Store (shared/store/base.py); the cron decisions are plan_fire's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import structlog

from shared import audit, cron
from shared.errors import InvalidSchedule, InvalidTask, ScheduleNotFound
from shared.ids import new_id
from shared.queue import Queue
from shared.schedule_schemas import FireTimes, Schedule, ScheduleCreate, ScheduleUpdate
from shared.schemas import DEFAULT_QUEUE, PAYLOAD_TYPES, Task, TaskCreate
from shared.settings import Settings
from shared.store.base import (
    DueSchedule,
    Fire,
    FirePlan,
    NewTask,
    Outcome,
    ScheduleFields,
    ScheduleTiming,
)

__all__ = ["FIRE_BATCH", "Fire", "InvalidSchedule", "Outcome", "ScheduleNotFound", "Schedules",
           "missed_grace", "plan_fire", "preview"]

log = structlog.get_logger("localflow.schedules")

MAX_SCHEDULES_LISTED = 1000
FIRE_BATCH = 100  # due schedules handled per write transaction: keeps each one short


def missed_grace(settings: Settings) -> float:
    """How late a fire may be handled and still count as on time (not "missed").

    A scheduler sleeps until the next fire, so on a healthy system fires are milliseconds
    late; a minute (or two scheduler intervals, if longer) tells downtime from a busy moment.
    """
    return max(60.0, 2.0 * settings.schedule_interval)


def preview(cron_expr: str, timezone: str = "UTC", n: int = 5,
            after: float | None = None, *, saved: bool = False) -> list[datetime]:
    """Next `n` fire times of an expression in a timezone, before anything is saved (or, with
    `saved`, of a stored schedule, read as the scheduler reads it: see cron.validate).

    Raises InvalidSchedule naming "cron_expr", "timezone" or "n".
    """
    try:
        return cron.preview(cron_expr, timezone, after, n, saved=saved)
    except cron.CronError as exc:
        raise InvalidSchedule(exc.field, str(exc)) from None


class Schedules:
    """Every schedule operation. Cheap to construct: it holds only the queue it works on."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.store = queue.store
        self.clock = queue.clock
        self.settings = queue.settings

    # -- people ----------------------------------------------------------------------------

    async def create(self, data: ScheduleCreate) -> Schedule:
        """Validate and store; 422 (InvalidSchedule) names the bad field and writes nothing."""
        fields = self._validated(msgspec.structs.asdict(data))
        now = self.clock.now()
        schedule_id = new_id(now)
        await self.store.insert_schedule(
            schedule_id, fields, self._first_fire(fields, now), now,
            audit=[audit.entry("schedule.create", "schedule", schedule_id, now, details={
                "name": fields.name, "cron_expr": fields.cron_expr, "queue": fields.queue,
                "enabled": fields.enabled})],
        )
        self.queue.on_runnable()  # wakes schedulers (they share the workers' wake-ups)
        log.info("schedule created", schedule_id=schedule_id, cron=fields.cron_expr,
                 timezone=fields.timezone)
        return await self.get(schedule_id)

    async def get(self, schedule_id: str) -> Schedule:
        schedule = await self.store.get_schedule(schedule_id)
        if schedule is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return schedule

    async def list(self, limit: int = MAX_SCHEDULES_LISTED) -> list[Schedule]:
        """All schedules by name, each with its last fire, last task (and status), next fire."""
        return await self.store.list_schedules(limit)

    async def update(self, schedule_id: str, data: ScheduleUpdate) -> Schedule:
        """Replace the given fields. A changed cron_expr or timezone, or resuming, recomputes
        the next fire from now; pausing (enabled=false) clears it."""
        current = await self.get(schedule_id)
        given = {k: v for k, v in msgspec.structs.asdict(data).items()
                 if v is not msgspec.UNSET}
        merged = {**_editable(current), **given}
        fields = self._validated(merged)
        now = self.clock.now()
        timing_changed = (
            fields.cron_expr != current.cron_expr
            or fields.timezone != current.timezone
            or (fields.enabled and not current.enabled)
            or (fields.enabled and current.next_fire_at is None)
        )
        recompute = timing_changed or not fields.enabled
        # next_fire_at is written only when recomputed, so a fire that a scheduler committed
        # since we read `current` is never undone by this edit.
        updated = await self.store.update_schedule(
            schedule_id, fields, recompute=recompute,
            next_fire_at=self._first_fire(fields, now) if recompute else None, now=now,
            audit=_update_entries(schedule_id, current, fields, set(given), now),
        )
        if not updated:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        self.queue.on_runnable()
        log.info("schedule updated", schedule_id=schedule_id, fields=sorted(given))
        return await self.get(schedule_id)

    async def delete(self, schedule_id: str) -> None:
        """Delete the schedule. Its tasks stay, keeping their schedule_id; queued ones still
        run (cancel them through /api/tasks if they should not)."""
        entry = audit.entry("schedule.delete", "schedule", schedule_id, self.clock.now())
        if not await self.store.delete_schedule(schedule_id, audit=[entry]):
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        log.info("schedule deleted", schedule_id=schedule_id)

    async def run_now(self, schedule_id: str) -> Task:
        """Make one task from the schedule now, paused or not, whatever the overlap policy:
        a person asked for it. It has no fire_time, so it never collides with a cron fire."""
        current = await self.get(schedule_id)
        now = self.clock.now()
        new = self._task_for(current.task_type, current.payload, current.priority,
                             current.max_attempts, current.timeout, current.queue,
                             current.callback_url)
        entry = audit.entry("schedule.run", "schedule", schedule_id, now,
                            details={"task_id": new.id})
        if not await self.store.run_schedule_now(schedule_id, new, now, audit=[entry]):
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        self.queue.on_runnable()
        log.info("schedule run by hand", schedule_id=schedule_id, task_id=new.id)
        return await self.queue.get(new.id)

    async def next_fire_times(self, schedule_id: str, n: int = 5) -> FireTimes:
        """The schedule's next `n` fire times (1..100), in its timezone. A paused schedule
        answers what it would do if resumed now."""
        current = await self.get(schedule_id)
        start = self.clock.now()
        if current.enabled and current.next_fire_at is not None:
            # From the stored next fire, so the first time shown is the one that will happen.
            start = min(start, current.next_fire_at.timestamp() - 0.001)
        times = preview(current.cron_expr, current.timezone, n, start, saved=True)
        return FireTimes(schedule_id=schedule_id, cron_expr=current.cron_expr,
                         timezone=current.timezone, times=times)

    def validate(self, data: ScheduleCreate) -> None:
        """Raise InvalidSchedule (with .field) if `data` could not be created; writes nothing.
        For forms that want errors before submitting."""
        self._validated(msgspec.structs.asdict(data))

    # -- the scheduler ---------------------------------------------------------------------

    async def next_due(self) -> float | None:
        """The earliest next fire of any enabled schedule (a read: no write lock)."""
        return await self.store.next_due()

    async def fire_due(self, now: float | None = None, grace: float | None = None) -> list[Fire]:
        """Turn every due fire into a task (or a recorded skip), exactly once.

        Of the fires due since a schedule's next_fire_at, only the latest is considered:
        a scheduler that was down does not replay a backlog. That fire runs if it is at most
        `grace` seconds late, or if the schedule's missed policy is run_once; the others are
        skipped. Overlap=skip skips a fire while an earlier task of the schedule is queued or
        running.
        """
        now = self.clock.now() if now is None else now
        grace = missed_grace(self.settings) if grace is None else grace

        def plan(due: DueSchedule, at: float) -> FirePlan:
            return plan_fire(due, at, grace, self._task_for_fields)

        fires: list[Fire] = []
        while True:
            batch = await self.store.fire_due(now, FIRE_BATCH, plan)
            fires += batch
            if len(batch) < FIRE_BATCH:
                break
        for fire in fires:
            if fire.outcome == "error":
                log.error("schedule cannot fire; see its last skip reason",
                          schedule_id=fire.schedule_id, fire_time=fire.fire_time)
        if any(f.outcome == "fired" for f in fires):
            self.queue.on_runnable()
        return fires

    async def resync(self, now: float | None = None) -> int:
        """After the clock went back: pull next fires that lie further ahead than the cron
        says back to the cron's next fire after now. Returns how many moved.

        Without this a schedule would stay silent until the clock caught up with the fire
        it had computed before the jump. Fire times already fired stay fired: the unique
        index refuses their second task.
        """
        now = self.clock.now() if now is None else now
        moved = await self.store.resync(now, next_fire_after)
        if moved:
            log.warning("clock went back: moved next fire times earlier", schedules=moved)
        return moved

    # -- helpers ---------------------------------------------------------------------------

    def _validated(self, fields: dict[str, Any]) -> ScheduleFields:
        """Every check, for create and update alike; returns what the store keeps."""
        try:
            # Re-checks ranges and types when a caller (the dashboard) built the struct in
            # Python, where msgspec does not validate constraints.
            data = msgspec.convert(fields, ScheduleCreate)
        except msgspec.ValidationError as exc:
            raise InvalidSchedule(_field_of(exc), str(exc)) from None
        try:
            cron.validate(data.cron_expr, data.timezone)  # the rules for saving, not firing
        except cron.CronError as exc:
            raise InvalidSchedule(exc.field, str(exc)) from None
        new = self._task_for(data.task_type, data.payload, data.priority, data.max_attempts,
                             data.timeout, callback_url=data.callback_url)
        return ScheduleFields(
            name=data.name, cron_expr=data.cron_expr.strip(), timezone=data.timezone,
            task_type=data.task_type, payload=new.payload, enabled=data.enabled,
            priority=data.priority, max_attempts=data.max_attempts, timeout=data.timeout,
            overlap=data.overlap, missed=data.missed, queue=data.queue,
            callback_url=data.callback_url,
        )

    def _task_for(self, task_type: str, payload: Any, priority: int,
                  max_attempts: int | None, timeout: float | None,
                  queue: str = DEFAULT_QUEUE, callback_url: str | None = None) -> NewTask:
        """The task a fire makes, through the queue's own validation and defaults."""
        if task_type not in PAYLOAD_TYPES:
            known = ", ".join(sorted(PAYLOAD_TYPES))
            raise InvalidSchedule("task_type",
                                  f"unknown task type {task_type!r}: expected one of {known}")
        try:
            return self.queue.prepare(TaskCreate(
                type=task_type, payload=payload, priority=priority,
                max_attempts=max_attempts, timeout=timeout, queue=queue,
                callback_url=callback_url,
            ))
        except InvalidTask as exc:
            field = "callback_url" if exc.field == "callback_url" else "payload"
            raise InvalidSchedule(field, str(exc)) from None

    def _task_for_fields(self, fields: ScheduleFields) -> NewTask:
        return self._task_for(fields.task_type, fields.payload, fields.priority,
                              fields.max_attempts, fields.timeout, fields.queue,
                              fields.callback_url)

    def _first_fire(self, fields: ScheduleFields, now: float) -> float | None:
        if not fields.enabled:
            return None
        return cron.parse(fields.cron_expr, fields.timezone).next_after(now)[0]


def _update_entries(
    schedule_id: str, current: Schedule, fields: ScheduleFields, given: set[str], now: float,
) -> list[audit.AuditEntry]:
    """An edit is "schedule.update" naming the fields it changed (never their values: a
    payload may hold things that do not belong in an audit trail); flipping `enabled` is a
    pause or resume of its own, so ?action=schedule.pause finds it however it was done (the
    dashboard's edit form sends every field)."""
    before = _editable(current)
    changed = sorted(k for k in before if k != "enabled" and getattr(fields, k) != before[k])
    flipped = fields.enabled != current.enabled
    # Nothing changed: still what was asked (a pause of a paused schedule is a pause).
    only_enabled = given == {"enabled"}
    entries = []
    if changed or not (flipped or only_enabled):
        entries.append(audit.entry("schedule.update", "schedule", schedule_id, now,
                                   details={"fields": changed}))
    if flipped or (only_enabled and not changed):
        entries.append(audit.entry(
            "schedule.resume" if fields.enabled else "schedule.pause", "schedule",
            schedule_id, now))
    return audit.in_order(entries)


def plan_fire(
    due: DueSchedule, now: float, grace: float, make_task: Callable[[ScheduleFields], NewTask]
) -> FirePlan:
    """The cron decision for one due schedule (pure: no I/O; the store carries it out, see
    FirePlan). `make_task(fields) -> NewTask` may raise InvalidSchedule."""
    expected = due.next_fire_at
    fields = due.fields
    try:
        c = cron.parse(fields.cron_expr, fields.timezone)
        latest = c.latest_at_or_before(now)
        fire_time = expected if latest is None else max(expected, latest)
        next_fire = c.next_after(now)[0]
    except cron.CronError as exc:
        # Valid when saved, not now (a timezone gone from the tz database?): pause it
        # rather than fail every pass. The person sees why in last_skip_reason.
        return FirePlan(fire_time=expected, next_fire_at=None, late=0.0,
                        skip="error", skip_reason=f"error: {exc}")
    late = now - fire_time
    missed_fire_time = None
    if fire_time > expected:
        # Everything between the stored next fire and the latest due one was missed.
        missed_fire_time = c.latest_at_or_before(fire_time - 1.0) or expected
    if fields.missed == "skip" and late > grace:
        return FirePlan(fire_time=fire_time, next_fire_at=next_fire, late=late,
                        missed_fire_time=missed_fire_time, skip="missed")
    try:
        task = make_task(fields)
    except InvalidSchedule as exc:
        # Valid when saved, not under today's settings (say, a lower payload limit).
        return FirePlan(fire_time=fire_time, next_fire_at=next_fire, late=late,
                        missed_fire_time=missed_fire_time, task_error=f"error: {exc}")
    return FirePlan(fire_time=fire_time, next_fire_at=next_fire, late=late,
                    missed_fire_time=missed_fire_time, task=task)


def next_fire_after(timing: ScheduleTiming, now: float) -> float | None:
    """Where resync moves a schedule's next fire: the cron's next fire after now."""
    try:
        return cron.parse(timing.cron_expr, timing.timezone).next_after(now)[0]
    except cron.CronError:
        return None  # fire_due pauses it, with the reason, when it comes due


def _editable(s: Schedule) -> dict[str, Any]:
    return {
        "name": s.name, "cron_expr": s.cron_expr, "timezone": s.timezone,
        "task_type": s.task_type, "payload": s.payload, "enabled": s.enabled,
        "priority": s.priority, "max_attempts": s.max_attempts, "timeout": s.timeout,
        "overlap": s.overlap, "missed": s.missed, "queue": s.queue,
        "callback_url": s.callback_url,
    }


def _field_of(exc: msgspec.ValidationError) -> str:
    # msgspec ends its message with "- at `$.field`" (or names an unknown field).
    text = str(exc)
    if "at `$." in text:
        return text.rsplit("at `$.", 1)[1].split("`")[0].split(".")[0].split("[")[0]
    if "unknown field `" in text:
        return text.split("unknown field `", 1)[1].split("`")[0]
    return "body"
