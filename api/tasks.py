"""/api/tasks: submit, read, list, cancel."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from shared.queue import Queue
from shared.schemas import Attempt, Status, Task, TaskCreate, TaskPage


class TaskController(Controller):
    path = "/api/tasks"
    tags = ["tasks"]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Submit a task",
        description="201 with the new task; 200 with the original task when the same "
        "idempotency key comes with the same request; 409 when it comes with another.",
    )
    async def submit(self, data: TaskCreate, queue: Queue) -> Response[Task]:
        task, created = await queue.enqueue(data)
        return Response(task, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get("/", summary="List tasks, newest first")
    async def list_tasks(
        self,
        queue: Queue,
        status: Status | None = None,
        task_type: Annotated[str | None, Parameter(query="type", max_length=64)] = None,
        cursor: Annotated[str | None, Parameter(max_length=26)] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> TaskPage:
        return await queue.list(status=status, type=task_type, cursor=cursor, limit=limit)

    @get("/{task_id:str}", summary="Get a task")
    async def get_task(self, task_id: str, queue: Queue) -> Task:
        return await queue.get(task_id)

    @get("/{task_id:str}/attempts", summary="Every attempt of a task, with error and output")
    async def attempts(self, task_id: str, queue: Queue) -> list[Attempt]:
        return await queue.attempts(task_id)

    @post(
        "/{task_id:str}/cancel",
        status_code=HTTP_200_OK,
        summary="Cancel a task",
        description="A queued task is cancelled at once and never runs. A running task gets "
        "cancel_requested=true; its worker stops its process and marks it cancelled.",
    )
    async def cancel(self, task_id: str, queue: Queue) -> Task:
        return await queue.cancel(task_id)
