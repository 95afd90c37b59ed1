"""Schedule operations shared by the API, the dashboard and the scheduler.

People create, edit, pause and delete schedules; the scheduler (worker/scheduler.py) calls
`fire_due`, which turns each due fire into a task. Exactly once is the database's job, not
this process's: a fire moves `next_fire_at` on with a compare-and-set in the same transaction
that inserts the task, and a unique index on tasks (schedule_id, fire_time) refuses a second
task for a fire time however it comes back (another scheduler, a restart, the clock going
back). Semantics, including daylight saving: docs/schedules.md. SQL: shared/sql/schedules.sql.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec
import structlog

from shared import cron
from shared.db import fetchall
from shared.ids import new_id
from shared.queue import InvalidTask, NotFound, Queue, QueueError
from shared.schedule_schemas import FireTimes, Schedule, ScheduleCreate, ScheduleUpdate
from shared.schemas import PAYLOAD_TYPES, Task, TaskCreate, to_datetime
from shared.settings import Settings
from shared.sql import Queries

S = Queries("schedules")
log = structlog.get_logger("localflow.schedules")

MAX_SCHEDULES_LISTED = 1000
FIRE_BATCH = 100  # due schedules handled per write transaction: keeps each one short

Outcome = Literal["fired", "missed", "overlap", "already fired", "error"]


class InvalidSchedule(QueueError):
    """A schedule we refuse to store; `field` names the culprit (for forms), the message too."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message if message.startswith(field) else f"{field}: {message}")
        self.field = field


class ScheduleNotFound(NotFound):
    pass


class Fire(msgspec.Struct, kw_only=True):
    """What one due schedule came to in one scheduler pass."""

    schedule_id: str
    fire_time: float
    outcome: Outcome
    task_id: str | None = None
    late: float = 0.0  # seconds between the fire time and the moment it was handled


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
        self.db = queue.db
        self.clock = queue.clock
        self.settings = queue.settings

    # -- people ----------------------------------------------------------------------------

    async def create(self, data: ScheduleCreate) -> Schedule:
        """Validate and store; 422 (InvalidSchedule) names the bad field and writes nothing."""
        fields = self._validated(msgspec.structs.asdict(data))
        now = self.clock.now()
        schedule_id = new_id(now)
        params = {
            **fields, "id": schedule_id, "now": now,
            "next_fire_at": self._first_fire(fields, now),
        }

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(S.insert_schedule, params)

        await self.db.write(op)
        self.queue.on_runnable()  # wakes schedulers (they share the workers' wake-ups)
        log.info("schedule created", schedule_id=schedule_id, cron=fields["cron_expr"],
                 timezone=fields["timezone"])
        return await self.get(schedule_id)

    async def get(self, schedule_id: str) -> Schedule:
        row = await self.db.fetch_one(S.get_schedule, (schedule_id,))
        if row is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return _schedule(row)

    async def list(self, limit: int = MAX_SCHEDULES_LISTED) -> list[Schedule]:
        """All schedules by name, each with its last fire, last task (and status), next fire."""
        rows = await self.db.fetch_all(S.list_schedules, {"limit": limit})
        return [_schedule(r) for r in rows]

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
            fields["cron_expr"] != current.cron_expr
            or fields["timezone"] != current.timezone
            or (fields["enabled"] and not current.enabled)
            or (fields["enabled"] and current.next_fire_at is None)
        )
        recompute = timing_changed or not fields["enabled"]
        params = {
            **fields, "id": schedule_id, "now": now, "recompute": int(recompute),
            "next_fire_at": self._first_fire(fields, now) if recompute else None,
        }

        def op(conn: sqlite3.Connection) -> int:
            # next_fire_at is written only when recomputed, so a fire that a scheduler
            # committed since we read `current` is never undone by this edit.
            cursor = conn.execute(S.update_schedule, params)
            return cursor.rowcount

        if await self.db.write(op) != 1:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        self.queue.on_runnable()
        log.info("schedule updated", schedule_id=schedule_id, fields=sorted(given))
        return await self.get(schedule_id)

    async def delete(self, schedule_id: str) -> None:
        """Delete the schedule. Its tasks stay, keeping their schedule_id; queued ones still
        run (cancel them through /api/tasks if they should not)."""

        def op(conn: sqlite3.Connection) -> int:
            return (conn.execute(S.delete_schedule, (schedule_id,))).rowcount

        if await self.db.write(op) != 1:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        log.info("schedule deleted", schedule_id=schedule_id)

    async def run_now(self, schedule_id: str) -> Task:
        """Make one task from the schedule now, paused or not, whatever the overlap policy:
        a person asked for it. It has no fire_time, so it never collides with a cron fire."""
        current = await self.get(schedule_id)
        now = self.clock.now()
        new = self._task_for(current.task_type, current.payload, current.priority,
                             current.max_attempts, current.timeout)
        task_id = new_id(now)
        params = {**new, "id": task_id, "schedule_id": schedule_id, "fire_time": None,
                  "run_at": now, "now": now}

        def op(conn: sqlite3.Connection) -> bool:
            rows = fetchall(conn, S.get_schedule, (schedule_id,))
            if not rows:
                return False  # deleted since we read it
            conn.execute(S.insert_scheduled_task, params)
            conn.execute(S.record_fire,
                               {"id": schedule_id, "fire_time": now, "task_id": task_id})
            return True

        if not await self.db.write(op):
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        self.queue.on_runnable()
        log.info("schedule run by hand", schedule_id=schedule_id, task_id=task_id)
        return await self.queue.get(task_id)

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
        row = await self.db.fetch_one(S.next_due)
        return None if row is None else row[0]

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
        fires: list[Fire] = []
        while True:

            def op(conn: sqlite3.Connection) -> list[Fire]:
                rows = fetchall(conn, S.due_schedules, {"now": now, "limit": FIRE_BATCH})
                batch = []
                for row in rows:
                    fire = self._fire_one(conn, row, now, grace)
                    if fire is not None:
                        batch.append(fire)
                return batch

            batch = await self.db.write(op)
            fires += batch
            if len(batch) < FIRE_BATCH:
                break
        if any(f.outcome == "fired" for f in fires):
            self.queue.on_runnable()
        return fires

    def _fire_one(
        self, conn: sqlite3.Connection, row: sqlite3.Row, now: float, grace: float
    ) -> Fire | None:
        schedule_id, expected = row["id"], row["next_fire_at"]
        try:
            c = cron.parse(row["cron_expr"], row["timezone"])
            latest = c.latest_at_or_before(now)
            fire_time = expected if latest is None else max(expected, latest)
            next_fire = c.next_after(now)[0]
        except cron.CronError as exc:
            # Valid when saved, not now (a timezone gone from the tz database?): pause it
            # rather than fail every pass. The person sees why in last_skip_reason.
            conn.execute(S.advance, {"id": schedule_id, "next": None, "expected": expected})
            conn.execute(S.record_skip, {"id": schedule_id, "fire_time": expected,
                                         "reason": f"error: {exc}"})
            log.error("schedule cannot be computed; it will not fire until edited",
                      schedule_id=schedule_id, error=str(exc))
            return Fire(schedule_id=schedule_id, fire_time=expected, outcome="error")
        advanced = conn.execute(
            S.advance, {"id": schedule_id, "next": next_fire, "expected": expected}
        )
        if advanced.rowcount != 1:
            return None  # another scheduler moved it on first: this fire is not ours
        if fire_time > expected:
            # Everything between the stored next fire and the latest due one was missed.
            newest_missed = c.latest_at_or_before(fire_time - 1.0)
            conn.execute(S.record_skip, {"id": schedule_id, "reason": "missed",
                                         "fire_time": newest_missed or expected})
        late = now - fire_time
        if row["missed"] == "skip" and late > grace:
            return self._skip(conn, schedule_id, fire_time, "missed", late=late)
        if row["overlap"] == "skip":
            active = fetchall(conn, S.has_active_task, (schedule_id,))
            if active:
                return self._skip(conn, schedule_id, fire_time, "overlap", late=late)
        try:
            new = self._task_for(row["task_type"], msgspec.json.decode(row["payload"]),
                                 row["priority"], row["max_attempts"], row["timeout"])
        except InvalidSchedule as exc:
            # Valid when saved, not under today's settings (say, a lower payload limit).
            return self._skip(conn, schedule_id, fire_time, "error", f"error: {exc}", late)
        task_id = new_id(now)
        inserted = conn.execute(S.insert_scheduled_task, {
            **new, "id": task_id, "schedule_id": schedule_id, "fire_time": fire_time,
            "run_at": fire_time, "now": now,
        })
        if inserted.rowcount != 1:
            # The unique index: this fire time already has its task (the clock went back).
            return self._skip(conn, schedule_id, fire_time, "already fired", late=late)
        conn.execute(S.record_fire,
                     {"id": schedule_id, "fire_time": fire_time, "task_id": task_id})
        return Fire(schedule_id=schedule_id, fire_time=fire_time, outcome="fired",
                    task_id=task_id, late=late)

    def _skip(self, conn: sqlite3.Connection, schedule_id: str, fire_time: float,
              outcome: Outcome, reason: str | None = None, late: float = 0.0) -> Fire:
        conn.execute(S.record_skip,
                     {"id": schedule_id, "fire_time": fire_time, "reason": reason or outcome})
        return Fire(schedule_id=schedule_id, fire_time=fire_time, outcome=outcome, late=late)

    async def resync(self, now: float | None = None) -> int:
        """After the clock went back: pull next fires that lie further ahead than the cron
        says back to the cron's next fire after now. Returns how many moved.

        Without this a schedule would stay silent until the clock caught up with the fire
        it had computed before the jump. Fire times already fired stay fired: the unique
        index refuses their second task.
        """
        now = self.clock.now() if now is None else now

        def op(conn: sqlite3.Connection) -> int:
            moved = 0
            for row in fetchall(conn, S.ahead_schedules, {"now": now}):
                try:
                    should = cron.parse(row["cron_expr"], row["timezone"]).next_after(now)[0]
                except cron.CronError:
                    continue  # fire_due pauses it, with the reason, when it comes due
                if should < row["next_fire_at"]:
                    cursor = conn.execute(S.advance, {
                        "id": row["id"], "next": should, "expected": row["next_fire_at"],
                    })
                    moved += cursor.rowcount
            return moved

        moved = await self.db.write(op)
        if moved:
            log.warning("clock went back: moved next fire times earlier", schedules=moved)
        return moved

    # -- helpers ---------------------------------------------------------------------------

    def _validated(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Every check, for create and update alike; returns the row's column values."""
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
                             data.timeout)
        return {
            "name": data.name, "cron_expr": data.cron_expr.strip(), "timezone": data.timezone,
            "task_type": data.task_type, "payload": new["payload"],
            "enabled": int(data.enabled), "priority": data.priority,
            "max_attempts": data.max_attempts, "timeout": data.timeout,
            "overlap": data.overlap, "missed": data.missed,
        }

    def _task_for(self, task_type: str, payload: Any, priority: int,
                  max_attempts: int | None, timeout: float | None) -> dict[str, Any]:
        """The task a fire makes, through the queue's own validation and defaults."""
        if task_type not in PAYLOAD_TYPES:
            known = ", ".join(sorted(PAYLOAD_TYPES))
            raise InvalidSchedule("task_type",
                                  f"unknown task type {task_type!r}: expected one of {known}")
        try:
            new = self.queue.prepare(TaskCreate(
                type=task_type, payload=payload, priority=priority,
                max_attempts=max_attempts, timeout=timeout,
            ))
        except InvalidTask as exc:
            raise InvalidSchedule("payload", str(exc)) from None
        return {
            "type": new.type, "payload": msgspec.json.encode(new.payload).decode(),
            "priority": new.priority, "max_attempts": new.max_attempts, "timeout": new.timeout,
        }

    def _first_fire(self, fields: Mapping[str, Any], now: float) -> float | None:
        if not fields["enabled"]:
            return None
        return cron.parse(fields["cron_expr"], fields["timezone"]).next_after(now)[0]


def _editable(s: Schedule) -> dict[str, Any]:
    return {
        "name": s.name, "cron_expr": s.cron_expr, "timezone": s.timezone,
        "task_type": s.task_type, "payload": s.payload, "enabled": s.enabled,
        "priority": s.priority, "max_attempts": s.max_attempts, "timeout": s.timeout,
        "overlap": s.overlap, "missed": s.missed,
    }


def _field_of(exc: msgspec.ValidationError) -> str:
    # msgspec ends its message with "- at `$.field`" (or names an unknown field).
    text = str(exc)
    if "at `$." in text:
        return text.rsplit("at `$.", 1)[1].split("`")[0].split(".")[0].split("[")[0]
    if "unknown field `" in text:
        return text.split("unknown field `", 1)[1].split("`")[0]
    return "body"


def _schedule(row: sqlite3.Row) -> Schedule:
    return Schedule(
        id=row["id"], name=row["name"], cron_expr=row["cron_expr"], timezone=row["timezone"],
        task_type=row["task_type"], payload=msgspec.json.decode(row["payload"]),
        enabled=bool(row["enabled"]), priority=row["priority"],
        max_attempts=row["max_attempts"], timeout=row["timeout"], overlap=row["overlap"],
        missed=row["missed"], next_fire_at=to_datetime(row["next_fire_at"]),
        last_fire_at=to_datetime(row["last_fire_at"]), last_task_id=row["last_task_id"],
        last_task_status=row["last_task_status"], last_skip_at=to_datetime(row["last_skip_at"]),
        last_skip_reason=row["last_skip_reason"], created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
    )
