"""Schedules: the list (live), create and edit with a live cron preview, pause/resume, run now,
delete. Every check and change goes through shared.schedules, as /api/schedules does."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from functools import cache
from typing import Annotated, TypeVar
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.params import FromPath, Parameter
from litestar.response import Response

from api.dashboard.common import go, is_htmx, render
from api.dashboard.forms import HTTP_METHODS, FormInvalid, ScheduleForm, check_payload
from api.dashboard.snapshots import queue_names
from api.deps import QueueDep
from shared.queue import Queue, QueueError
from shared.schedule_schemas import Schedule, ScheduleUpdate
from shared.schedules import InvalidSchedule, ScheduleNotFound, Schedules, preview

T = TypeVar("T")
PREVIEW_COUNT = 5
RECENT_TASKS = 10
LIST_TARGET = "schedules-live"
STATUS_TARGET = "schedule-status"


@cache
def timezones() -> list[str]:
    # "localtime" and "Factory" are tz database artefacts, not places.
    return sorted(zoneinfo.available_timezones() - {"localtime", "Factory"})


def _notice(text: str) -> str:
    return "/dashboard/schedules?" + urlencode({"notice": text})


class SchedulePages(Controller):
    path = "/dashboard/schedules"
    include_in_schema = False

    @get("/", name="dashboard-schedules")
    async def schedules(
        self, request: Request, queue: QueueDep,
        notice: Annotated[str | None, Parameter(max_length=300)] = None,
    ) -> Response:
        """The list page, or for htmx (the 2-second poll) just the table."""
        context = await _list_context(queue, notice if not is_htmx(request) else None)
        if is_htmx(request) and request.headers.get("hx-target") == LIST_TARGET:
            return render("_schedules.html", **context)
        return render("schedules.html", section="schedules", title="Schedules", **context)

    @get("/new", name="dashboard-schedule-new")
    async def new(self, request: Request, queue: QueueDep) -> Response:
        form = ScheduleForm(values={
            "task_type": "shell", "timezone": "UTC", "enabled": "on", "overlap": "allow",
            "missed": "skip",
        })
        return await _form_page(request, queue, form, None)

    @post("/", status_code=200)
    async def create(self, request: Request, queue: QueueDep) -> Response:
        form = ScheduleForm.from_form(await request.form())
        data = _checked(queue, form, form.to_schedule)
        if data is None:
            return await _form(request, queue, form, None)
        try:
            created = await Schedules(queue).create(data)
        except QueueError as exc:
            _fail(form, exc)
            return await _form(request, queue, form, None)
        return go(request, _notice(f"Created schedule “{created.name}”."))

    @get("/preview")
    async def preview_times(
        self, queue: QueueDep,
        cron_expr: Annotated[str, Parameter(max_length=400)] = "",
        timezone: Annotated[str, Parameter(max_length=100)] = "UTC",
    ) -> Response:
        """The next fire times of what is typed so far, or what is wrong with it. Reads only."""
        times, error = [], None
        if cron_expr.strip():
            try:
                times = preview(cron_expr, timezone.strip() or "UTC", PREVIEW_COUNT,
                                queue.clock.now())
            except InvalidSchedule as exc:
                error = str(exc).removeprefix(f"{exc.field}: ")
        return render("_cron_preview.html", times=times, error=error, cron_expr=cron_expr,
                      timezone=timezone.strip() or "UTC", now=queue.clock.now())

    @get("/{schedule_id:str}", name="dashboard-schedule")
    async def edit(
        self, request: Request, queue: QueueDep, schedule_id: FromPath[str]
    ) -> Response:
        schedule = await _get(queue, schedule_id)
        if schedule is None:
            return render("not_found.html", section="schedules", title="No such schedule",
                          status_code=404, what=f"No schedule with id {schedule_id!r}.")
        return await _form_page(request, queue, ScheduleForm.from_schedule(schedule), schedule,
                          await _recent_tasks(queue, schedule.id))

    @post("/{schedule_id:str}", status_code=200)
    async def update(
        self, request: Request, queue: QueueDep, schedule_id: FromPath[str]
    ) -> Response:
        schedule = await _get(queue, schedule_id)
        if schedule is None:
            return go(request, _notice(f"Schedule {schedule_id} no longer exists."))
        form = ScheduleForm.from_form(await request.form())
        data = _checked(queue, form, form.to_update)
        if data is None:
            return await _form(request, queue, form, schedule)
        try:
            saved = await Schedules(queue).update(schedule_id, data)
        except QueueError as exc:
            _fail(form, exc)
            return await _form(request, queue, form, schedule)
        return go(request, _notice(f"Saved schedule “{saved.name}”."))

    @post("/{schedule_id:str}/pause", status_code=200)
    async def pause(
        self, request: Request, queue: QueueDep, schedule_id: FromPath[str]
    ) -> Response:
        return await _act(request, queue, schedule_id, "pause")

    @post("/{schedule_id:str}/resume", status_code=200)
    async def resume(
        self, request: Request, queue: QueueDep, schedule_id: FromPath[str]
    ) -> Response:
        return await _act(request, queue, schedule_id, "resume")

    @post("/{schedule_id:str}/run", status_code=200)
    async def run(self, request: Request, queue: QueueDep, schedule_id: FromPath[str]) -> Response:
        return await _act(request, queue, schedule_id, "run")

    @post("/{schedule_id:str}/delete", status_code=200)
    async def delete(
        self, request: Request, queue: QueueDep, schedule_id: FromPath[str]
    ) -> Response:
        return await _act(request, queue, schedule_id, "delete")


async def _get(queue: Queue, schedule_id: str) -> Schedule | None:
    try:
        return await Schedules(queue).get(schedule_id)
    except ScheduleNotFound:
        return None


async def _list_context(queue: Queue, notice: str | None, error: bool = False) -> dict:
    return {
        "now": queue.clock.now(), "schedules": await Schedules(queue).list(),
        "notice": notice, "notice_error": error,
    }


async def _recent_tasks(queue: Queue, schedule_id: str) -> list:
    ids = await queue.store.task_ids_of_schedule(schedule_id, limit=RECENT_TASKS)
    tasks = []
    for task_id in ids:
        try:
            tasks.append(await queue.get(task_id))
        except QueueError:  # deleted between the two reads
            continue
    return tasks


def _fail(form: ScheduleForm, exc: Exception) -> None:
    form.fail(str(exc), getattr(exc, "field", None))


def _checked(queue: Queue, form: ScheduleForm, build: Callable[[], T]) -> T | None:
    """The request the form means, or None with every mistake noted beside its field: the
    request's shape, the cron expression and the timezone each on their own (so a bad cron and
    a bad timezone are both reported), and the payload's rules."""
    try:
        data = build()
    except FormInvalid:
        data = None
    now = queue.clock.now()
    cron_expr, tz = form.get("cron_expr").strip(), form.get("timezone").strip() or "UTC"
    for name, expr, zone in (("cron_expr", cron_expr, "UTC"), ("timezone", "* * * * *", tz)):
        if name in form.errors or (name == "cron_expr" and not expr):
            continue
        try:
            preview(expr, zone, 1, now)
        except InvalidSchedule as exc:
            _fail(form, exc)
    check_payload(queue, form)
    return None if form.errors or form.general else data


async def _form_context(
    request: Request, queue: Queue, form: ScheduleForm, schedule: Schedule | None
) -> dict:
    return {
        "form": form, "schedule": schedule, "methods": HTTP_METHODS, "timezones": timezones(),
        "now": queue.clock.now(), "queue_names": await queue_names(request, queue),
    }


async def _form_page(request: Request, queue: Queue, form: ScheduleForm, schedule: Schedule | None,
               recent: list | None = None) -> Response:
    title = f"Schedule “{schedule.name}”" if schedule else "New schedule"
    return render("schedule.html", section="schedules", title=title, recent=recent or [],
                  **await _form_context(request, queue, form, schedule))


async def _form(
    request: Request, queue: Queue, form: ScheduleForm, schedule: Schedule | None
) -> Response:
    """The form again with its errors beside the fields; nothing was stored."""
    context = await _form_context(request, queue, form, schedule)
    return render("_schedule_form.html", status_code=422, **context)


async def _act(request: Request, queue: Queue, schedule_id: str, action: str) -> Response:
    schedules = Schedules(queue)
    error, task_id = False, None
    try:
        if action == "pause":
            s = await schedules.update(schedule_id, ScheduleUpdate(enabled=False))
            message = f"Paused “{s.name}”: it will not fire until resumed."
        elif action == "resume":
            s = await schedules.update(schedule_id, ScheduleUpdate(enabled=True))
            message = f"Resumed “{s.name}”."
        elif action == "run":
            task_id = (await schedules.run_now(schedule_id)).id
            message = f"Started task {task_id} from this schedule."
        else:
            await schedules.delete(schedule_id)
            message = "Deleted the schedule; the tasks it made are kept."
    except QueueError as exc:
        message, error = str(exc), True
    if request.headers.get("hx-target") == LIST_TARGET:
        return render("_schedules.html", **await _list_context(queue, message, error))
    if request.headers.get("hx-target") == STATUS_TARGET and action != "delete":
        # The edit page: redraw its heading and state only; the form keeps what is typed.
        return render("_schedule_status.html", schedule=await _get(queue, schedule_id),
                      now=queue.clock.now(), notice=message, notice_error=error,
                      started=task_id, follow_enabled=action in ("pause", "resume"))
    if task_id:
        return go(request, f"/dashboard/tasks/{task_id}")
    if action != "delete" and not error:
        return go(request, f"/dashboard/schedules/{schedule_id}")
    return go(request, _notice(message))
