"""/api/tasks: submit (one or a batch), read, list, cancel, retry, delete."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, JSONBody, Parameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.auth import BEARER_SECURITY
from api.conditional import (
    ETAG_OPT,
    IF_MATCH_OPT,
    check_if_match,
    none_match,
    task_etag,
    write_lock,
)
from api.deps import QueueDep, TaskWatchDep
from api.errors import problem_responses
from api.openapi import LOCATION_OPT
from api.request_rules import before_api_request
from shared.queue import InvalidTask, Queue
from shared.schemas import (
    QUEUE_NAME_PATTERN,
    STATUSES,
    TERMINAL,
    Attempt,
    Status,
    Task,
    TaskBatch,
    TaskBatchResult,
    TaskCreate,
    TaskOutput,
    TaskPage,
)
from shared.task_watch import MAX_WAIT
from shared.webhooks import Delivery

WAIT_HEADER = "LocalFlow-Wait"
TaskId = Annotated[str, Parameter(min_length=1, max_length=64, description="task id (ULID)")]
IdempotencyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key", min_length=1, max_length=255, required=False,
        description="Same meaning as the body field idempotency_key; give either, or both equal.",
    ),
]


def _with_header_key(data: TaskCreate, header_key: str | None) -> TaskCreate:
    """The Idempotency-Key header is another spelling of the body field."""
    if header_key is None:
        return data
    if data.idempotency_key is not None and data.idempotency_key != header_key:
        raise InvalidTask(
            "idempotency_key: the Idempotency-Key header and the body field idempotency_key "
            "differ; send one of them, or the same value in both",
            "idempotency_key",
        )
    return msgspec.structs.replace(data, idempotency_key=header_key)


def _located(task: Task, status_code: int) -> Response[Task]:
    return Response(task, status_code=status_code, headers={
        "Location": f"/api/tasks/{task.id}", "ETag": task_etag(task),
    })


async def _if_match(request: Request, queue: Queue, task_id: str) -> None:
    if "if-match" in request.headers:
        check_if_match(request, task_etag(await queue.get(task_id)))


class TaskController(Controller):
    path = "/api/tasks"
    tags = ["tasks"]
    security = BEARER_SECURITY
    # Repeated query parameters, conditions an operation ignores: 400 (api/request_rules.py).
    before_request = before_api_request

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Submit a task",
        description="201 with the new task (Location: its URL); 200 with the original task "
        "when the same idempotency key (body field or Idempotency-Key header) comes with the "
        "same request; 409 when it comes with another.",
        responses={**problem_responses(409), 200: ResponseSpec(
            data_container=Task, generate_examples=False,
            description="The same idempotency key came with the same request again: the task "
            "it made the first time (nothing new is queued)",
        )},
        opt={LOCATION_OPT: "the new task, /api/tasks/{id}"},
    )
    async def submit(
        self, data: JSONBody[TaskCreate], queue: QueueDep, idempotency_key: IdempotencyHeader = None
    ) -> Response[Task]:
        task, created = await queue.enqueue(_with_header_key(data, idempotency_key))
        return _located(task, HTTP_201_CREATED if created else HTTP_200_OK)

    @post(
        "/batch",
        status_code=HTTP_201_CREATED,
        summary="Submit many tasks at once",
        description="All tasks are queued in one transaction, or none is: any invalid task "
        "(422, `detail` says which, e.g. tasks[3]) or idempotency conflict (409) rejects the "
        "batch. Items may carry their own idempotency_key; a reused key returns the original "
        "task in its place.",
        responses=problem_responses(409),
    )
    async def submit_batch(self, data: JSONBody[TaskBatch], queue: QueueDep) -> TaskBatchResult:
        results = await queue.enqueue_many(data.tasks)
        tasks = [task for task, _ in results]
        return TaskBatchResult(ids=[t.id for t in tasks], tasks=tasks)

    @get(
        "/",
        summary="List tasks, newest first",
        description="422 for a `cursor` that is not a `next_cursor` this API handed out.",
        responses=problem_responses(422),
    )
    async def list_tasks(
        self,
        request: Request,
        queue: QueueDep,
        status: Annotated[Status | None, QueryParameter()] = None,
        task_type: Annotated[str | None, QueryParameter(name="type", max_length=64)] = None,
        cursor: Annotated[str | None, Parameter(
            max_length=26, description="next_cursor of the previous page"
        )] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        queue_name: Annotated[str | None, QueryParameter(
            name="queue", max_length=64, pattern=QUEUE_NAME_PATTERN, description="queue name",
        )] = None,
    ) -> TaskPage:
        raw_status = request.query_params.get("status")
        if raw_status is not None and raw_status not in STATUSES:
            # Litestar reads "?status=null" as no filter at all; it is a wrong value.
            raise ValidationException(
                detail=f"invalid request: status: {raw_status!r} is not one of "
                f"{', '.join(STATUSES)}",
                extra=[{"key": "status", "source": "query", "message": "not a task status"}],
            )
        return await queue.list(status=status, type=task_type, cursor=cursor, limit=limit,
                                queue=queue_name)

    @get(
        "/{task_id:str}",
        summary="Get a task, or wait until it finishes",
        description="With its ETag; If-None-Match with it answers 304. With `wait=S` "
        "(0 < S <= 60 seconds) the answer comes as soon as the task "
        "is succeeded, failed or cancelled, or after S seconds with the task as it is then; "
        "200 either way. The body's `status` says which (final or not), and so does the "
        f"`{WAIT_HEADER}` header: `final` or `timeout`. A waiting request is woken by the "
        "commit that finished the task, in any process (no polling): it answers within "
        "milliseconds. A client that wants longer waits repeats the request.",
        response_headers=[ResponseHeader(
            name=WAIT_HEADER, documentation_only=True, required=False,
            description="Only with ?wait=: `final` if the task is succeeded, failed or "
            "cancelled, `timeout` if the wait ended first.",
        )],
        opt={ETAG_OPT: True},
    )
    async def get_task(
        self, request: Request, task_id: TaskId, queue: QueueDep, task_watch: TaskWatchDep,
        wait: Annotated[float | None, QueryParameter(
            gt=0, le=MAX_WAIT,
            description="seconds to wait for a final status (succeeded, failed, cancelled)",
        )] = None,
    ) -> Response[Task]:
        if wait is None and request.query_params.get("wait") is not None:
            # Litestar reads "?wait=null" as no wait at all; it is a wrong value.
            raise ValidationException(
                detail="invalid request: wait: expected a number of seconds",
                extra=[{"key": "wait", "source": "query", "message": "not a number"}],
            )
        task = await queue.get(task_id)
        if wait is not None and task.status not in TERMINAL:
            await task_watch.wait_final(task_id, wait)
            task = await queue.get(task_id)  # 404 if it was deleted meanwhile
        etag = task_etag(task)
        headers = {"ETag": etag}
        if wait is not None:
            headers[WAIT_HEADER] = "final" if task.status in TERMINAL else "timeout"
        if none_match(request, etag):
            return Response(None, status_code=304, headers=headers)  # type: ignore[arg-type]
        return Response(task, headers=headers)

    @get(
        "/{task_id:str}/attempts",
        summary="Every attempt of a task, with error and output",
        description="One entry per claim, oldest first: worker, start and finish, outcome, "
        "error, and the handler's bounded output (exit code, stdout, stderr; or status, "
        "headers, body).",
    )
    async def attempts(self, task_id: TaskId, queue: QueueDep) -> list[Attempt]:
        return await queue.attempts(task_id)

    @get(
        "/{task_id:str}/deliveries",
        summary="A task's webhook deliveries, with every try",
        description="One delivery each time a task with a `callback_url` reached a final "
        "state (succeeded, failed, cancelled), oldest first: its state (pending, delivered, "
        "failed = given up), the next try's time, and every try made (when, how long, the "
        "receiver's status code or the error). Headers, signature and retry schedule: "
        "docs/webhooks.md.",
    )
    async def deliveries(self, task_id: TaskId, queue: QueueDep) -> list[Delivery]:
        return await queue.deliveries(task_id)

    @get(
        "/{task_id:str}/output",
        summary="A task's output: live while it runs",
        description="While the task runs (`live: true`): the last 8 KiB of the running "
        "attempt's stdout and stderr, as its worker last stored them: at most once a second "
        "(LOCALFLOW_LIVE_OUTPUT_INTERVAL) and only when they changed, so the answer may be "
        "that old; `stdout_bytes`/`stderr_bytes` count everything written so far, "
        "`updated_at` says when it was stored (null: nothing stored yet). Only `shell` tasks "
        "print; other types stay empty while they run. Once the task is not running "
        "(`live: false`): the last attempt's final output from its result (the kept head and "
        "tail), empty if none. For a stream of it, see `GET /api/events?output=ID`.",
        responses=problem_responses(404),
    )
    async def output(self, task_id: TaskId, queue: QueueDep) -> TaskOutput:
        return await queue.output(task_id)

    @post(
        "/{task_id:str}/cancel",
        status_code=HTTP_200_OK,
        summary="Cancel a task",
        description="A queued task is cancelled at once and never runs. A running task gets "
        "cancel_requested=true; its worker stops its process and marks it cancelled.",
        responses=problem_responses(409),
        opt={IF_MATCH_OPT: True},
    )
    async def cancel(self, request: Request, task_id: TaskId, queue: QueueDep) -> Response[Task]:
        async with write_lock(request):
            await _if_match(request, queue, task_id)
            task = await queue.cancel(task_id)
        return Response(task, headers={"ETag": task_etag(task)})

    @post(
        "/{task_id:str}/retry",
        status_code=HTTP_200_OK,
        summary="Run a failed or cancelled task again now",
        description="The task goes back to queued, runnable at once, with `attempts` more "
        "attempts (default 1) on top of those already spent; its attempt history is kept and "
        "numbering continues. 409 for a task that is queued, running or succeeded.",
        responses=problem_responses(409),
        opt={IF_MATCH_OPT: True},
    )
    async def retry(
        self,
        request: Request,
        task_id: TaskId,
        queue: QueueDep,
        attempts: Annotated[
            int, Parameter(ge=1, le=100, description="more attempts it may spend")
        ] = 1,
    ) -> Response[Task]:
        async with write_lock(request):
            await _if_match(request, queue, task_id)
            task = await queue.retry(task_id, attempts)
        return Response(task, headers={"ETag": task_etag(task)})

    @delete(
        "/{task_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a task and its attempts",
        description="Any task that is not running; a running one is 409 (cancel it first). "
        "Its idempotency key becomes free again.",
        responses=problem_responses(409),
        opt={IF_MATCH_OPT: True},
    )
    async def delete_task(self, request: Request, task_id: TaskId, queue: QueueDep) -> None:
        async with write_lock(request):
            await _if_match(request, queue, task_id)
            await queue.delete(task_id)
