"""/api/schedules: cron schedules (create, read, list, update, delete, preview, run now)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import Provide
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.deps import QueueDep, SchedulesDep
from api.errors import problem
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

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Create a schedule",
        description="422 naming the field when the cron expression, timezone or payload (for "
        "its task_type) is invalid; nothing is stored then.",
    )
    async def create(self, data: JSONBody[ScheduleCreate], schedules: SchedulesDep) -> Schedule:
        return await schedules.create(data)

    @get("/", summary="List schedules with their last fire, last task and next fire")
    async def list_schedules(self, schedules: SchedulesDep) -> list[Schedule]:
        return await schedules.list()

    @get("/{schedule_id:str}", summary="Get a schedule")
    async def get_schedule(self, schedule_id: ScheduleId, schedules: SchedulesDep) -> Schedule:
        return await schedules.get(schedule_id)

    @put(
        "/{schedule_id:str}",
        summary="Update a schedule",
        description="Send any subset of the fields; the ones sent replace the stored ones. "
        "{\"enabled\": false} pauses, {\"enabled\": true} resumes. Changing cron_expr or "
        "timezone recomputes the next fire.",
    )
    async def update(
        self, schedule_id: ScheduleId, data: JSONBody[ScheduleUpdate], schedules: SchedulesDep
    ) -> Schedule:
        return await schedules.update(schedule_id, data)

    @delete(
        "/{schedule_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a schedule",
        description="Tasks it made stay, with their schedule_id.",
    )
    async def delete_schedule(self, schedule_id: ScheduleId, schedules: SchedulesDep) -> None:
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
        description="Makes one task from the schedule at once, even if it is paused.",
    )
    async def run_now(self, schedule_id: ScheduleId, schedules: SchedulesDep) -> Task:
        return await schedules.run_now(schedule_id)
