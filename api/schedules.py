"""/api/schedules: cron schedules (create, read, list, update, delete, preview, run now)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import Provide
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.conditional import (
    ETAG_OPT,
    IF_MATCH_OPT,
    check_if_match,
    none_match,
    schedule_etag,
    write_lock,
)
from api.deps import QueueDep, SchedulesDep
from api.errors import problem
from api.openapi import LOCATION_OPT
from api.request_rules import before_api_request
from shared.cron import MAX_PREVIEW
from shared.schedule_schemas import FireTimes, Schedule, ScheduleCreate, ScheduleUpdate
from shared.schedules import InvalidSchedule, Schedules
from shared.schemas import Task

ScheduleId = Annotated[str, Parameter(max_length=64)]


def provide_schedules(queue: QueueDep) -> Schedules:
    return Schedules(queue)


def _invalid(request: Request, exc: InvalidSchedule) -> Response[dict[str, Any]]:
    # The same shape as a body that failed msgspec's checks: detail plus errors[].field.
    return problem(422, str(exc), [{"field": exc.field, "message": str(exc)}])


class ScheduleController(Controller):
    path = "/api/schedules"
    tags = ["schedules"]
    dependencies = {"schedules": Provide(provide_schedules, sync_to_thread=False)}
    exception_handlers = {InvalidSchedule: _invalid}
    # Repeated query parameters, conditions an operation ignores: 400 (api/request_rules.py).
    before_request = before_api_request

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Create a schedule",
        description="422 naming the field when the cron expression, timezone or payload (for "
        "its task_type) is invalid; nothing is stored then.",
        opt={LOCATION_OPT: "the new schedule, /api/schedules/{id}"},
    )
    async def create(
        self, data: JSONBody[ScheduleCreate], schedules: SchedulesDep
    ) -> Response[Schedule]:
        schedule = await schedules.create(data)
        return Response(schedule, status_code=HTTP_201_CREATED, headers={
            "Location": f"/api/schedules/{schedule.id}", "ETag": schedule_etag(schedule),
        })

    @get("/", summary="List schedules with their last fire, last task and next fire")
    async def list_schedules(self, schedules: SchedulesDep) -> list[Schedule]:
        return await schedules.list()

    @get("/{schedule_id:str}", summary="Get a schedule",
         description="With its ETag (the version of its definition; fires do not change it): "
         "send it in If-Match with PUT or DELETE so a change made meanwhile is not overwritten.",
         opt={ETAG_OPT: True})
    async def get_schedule(
        self, request: Request, schedule_id: ScheduleId, schedules: SchedulesDep
    ) -> Response[Schedule]:
        schedule = await schedules.get(schedule_id)
        etag = schedule_etag(schedule)
        if none_match(request, etag):
            return Response(None, status_code=304, headers={"ETag": etag})  # type: ignore[arg-type]
        return Response(schedule, headers={"ETag": etag})

    @put(
        "/{schedule_id:str}",
        summary="Update a schedule",
        description="Send any subset of the fields; the ones sent replace the stored ones. "
        "{\"enabled\": false} pauses, {\"enabled\": true} resumes. Changing cron_expr or "
        "timezone recomputes the next fire. With If-Match: only if the schedule is still that "
        "version, else 412 and nothing changes.",
        opt={IF_MATCH_OPT: True},
    )
    async def update(
        self, request: Request, schedule_id: ScheduleId, data: JSONBody[ScheduleUpdate],
        schedules: SchedulesDep,
    ) -> Response[Schedule]:
        async with write_lock(request):
            if "if-match" in request.headers:
                check_if_match(request, schedule_etag(await schedules.get(schedule_id)))
            schedule = await schedules.update(schedule_id, data)
        return Response(schedule, headers={"ETag": schedule_etag(schedule)})

    @delete(
        "/{schedule_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a schedule",
        description="Tasks it made stay, with their schedule_id. With If-Match: only if the "
        "schedule is still that version, else 412.",
        opt={IF_MATCH_OPT: True},
    )
    async def delete_schedule(
        self, request: Request, schedule_id: ScheduleId, schedules: SchedulesDep
    ) -> None:
        async with write_lock(request):
            if "if-match" in request.headers:
                check_if_match(request, schedule_etag(await schedules.get(schedule_id)))
            await schedules.delete(schedule_id)

    @get("/{schedule_id:str}/next", summary="The next fire times, in the schedule's timezone")
    async def next_times(
        self,
        schedule_id: ScheduleId,
        schedules: SchedulesDep,
        n: Annotated[int, Parameter(ge=1, le=MAX_PREVIEW)] = 5,
    ) -> FireTimes:
        return await schedules.next_fire_times(schedule_id, n)

    @post(
        "/{schedule_id:str}/run",
        status_code=HTTP_201_CREATED,
        summary="Run now",
        description="Makes one task from the schedule at once, even if it is paused. "
        "Location: the new task's URL.",
        opt={LOCATION_OPT: "the new task, /api/tasks/{id}"},
    )
    async def run_now(self, schedule_id: ScheduleId, schedules: SchedulesDep) -> Response[Task]:
        task = await schedules.run_now(schedule_id)
        return Response(task, status_code=HTTP_201_CREATED,
                        headers={"Location": f"/api/tasks/{task.id}"})
