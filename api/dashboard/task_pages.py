"""Tasks: the filtered list, one task's detail with its attempts, actions, and the submit form."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, Parameter, QueryParameter
from litestar.response import Response

from api.dashboard import bulk as bulk_jobs
from api.dashboard.common import go, is_htmx, render
from api.dashboard.forms import HTTP_METHODS, FormInvalid, SubmitForm, check_payload
from api.dashboard.snapshots import snapshots
from api.deps import QueueDep
from api.errors import status_of
from shared.ids import is_valid_id
from shared.queue import NotFound, Queue, QueueError
from shared.schedules import Schedules
from shared.schemas import QUEUED_VIEWS, STATUSES, TERMINAL, Task, TaskPage

PAGE_SIZES = (25, 50, 100, 200)
BULK_ACTIONS = bulk_jobs.ACTIONS
LIST_STATUSES = (*STATUSES, *QUEUED_VIEWS)
# The chips over the list: queued, then the three ways of being queued, then the rest.
CHIPS = (None, "queued", *QUEUED_VIEWS, "running", "succeeded", "failed", "cancelled")
BULK_MAX = 500  # ticked tasks in one request
BULK_MATCHING_MAX = 5000  # tasks one "every task matching the filter" action may touch


def _query(**params: str | int | None) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


class TaskPages(Controller):
    path = "/dashboard"
    include_in_schema = False

    @get("/tasks", name="dashboard-tasks")
    async def tasks(
        self, request: Request, queue: QueueDep,
        status: FromQuery[str | None] = None,
        task_type: Annotated[str | None, QueryParameter(name="type", max_length=64)] = None,
        schedule: Annotated[str | None, Parameter(max_length=64)] = None,
        q: Annotated[str | None, Parameter(max_length=255)] = None,
        cursor: Annotated[str | None, Parameter(max_length=26)] = None,
        limit: FromQuery[int] = 50,
        notice: Annotated[str | None, Parameter(max_length=300)] = None,
    ) -> Response:
        """The list page, or for htmx (filter changes and the 2-second poll) just the table."""
        if not 1 <= limit <= PAGE_SIZES[-1]:  # a hand-typed ?limit=5000: the nearest size
            clamped = min(max(limit, 1), PAGE_SIZES[-1])
            notice = notice or f"Showing {clamped} tasks a page: {PAGE_SIZES[-1]} at most."
            limit = clamped
        status = status if status in LIST_STATUSES else None
        task_type = (task_type or "").strip() or None
        q = (q or "").strip() or None
        if q and not cursor:
            found = await _find(queue, q)
            if found:
                return go(request, f"/dashboard/tasks/{found}")
        schedule = (schedule or "").strip() or None
        now = queue.clock.now()
        if status in QUEUED_VIEWS:
            page = await _view_page(queue, status, now, task_type, schedule, cursor, limit)
        elif schedule:
            page = await _schedule_page(queue, schedule, status, task_type, cursor, limit)
        else:
            page = await queue.list(status=status, type=task_type, cursor=cursor, limit=limit)
        filters = {"status": status, "type": task_type, "schedule": schedule,
                   "limit": limit if limit != 50 else None}
        counts = await snapshots(request).counts(queue, task_type, schedule)
        known = all(counts[s] is not None for s in STATUSES)
        counts["all"] = sum(counts[s] or 0 for s in STATUSES) if known else None
        context = {
            "now": now, "page": page, "status": status, "task_type": task_type,
            "q": q, "cursor": cursor, "limit": limit, "statuses": STATUSES,
            "views": QUEUED_VIEWS,
            "schedule": schedule, "schedules": await Schedules(queue).list(),
            "page_sizes": PAGE_SIZES, "not_found": q, "notice": notice,
            "self_query": _query(**filters, cursor=cursor),
            "filter_query": _query(**filters),
            "next_query": _query(**filters, cursor=page.next_cursor) if page.next_cursor else None,
            "counts": counts, "matching": counts.get(status or "all"),
            "worked": await queue.store.attempt_seconds([t.id for t in page.items], now),
            "bulk_max": BULK_MATCHING_MAX,
            "status_links": [
                (s, _query(status=s, type=task_type, schedule=schedule, limit=filters["limit"]))
                for s in CHIPS
            ],
        }
        if is_htmx(request) and request.headers.get("hx-target") == "tasks-live":
            return render("_tasks.html", **context)
        return render("tasks.html", section="tasks", title="Tasks", **context)

    @get("/tasks/{task_id:str}", name="dashboard-task")
    async def task(self, request: Request, queue: QueueDep, task_id: FromPath[str]) -> Response:
        task = await _get(queue, task_id)
        if task is None:
            return render("not_found.html", section="tasks", title="No such task", status_code=404,
                          what=f"No task with id {task_id!r}. It may have been deleted.")
        context = await _detail(queue, task)
        if is_htmx(request):
            return render("_task_live.html", **context)
        return render("task.html", section="tasks", title=f"Task {task.id}", **context)

    @get("/tasks/{task_id:str}/badge")
    async def badge(self, queue: QueueDep, task_id: FromPath[str]) -> Response:
        """A submitted task's card on the submit page, re-polled until the task finishes."""
        task = await _get(queue, task_id)
        if task is None:
            return render("_submitted.html", gone=task_id, task=None, now=queue.clock.now())
        return render("_submitted.html", task=task, now=queue.clock.now(), gone=None)

    @post("/tasks/{task_id:str}/cancel", status_code=200)
    async def cancel(self, queue: QueueDep, task_id: FromPath[str]) -> Response:
        return await _act(queue, task_id, queue.cancel, "Cancel requested.")

    @post("/tasks/{task_id:str}/retry", status_code=200)
    async def retry(self, queue: QueueDep, task_id: FromPath[str]) -> Response:
        return await _act(queue, task_id, queue.retry, "Queued to run again now.")

    @post("/tasks/{task_id:str}/delete", status_code=200)
    async def delete(self, request: Request, queue: QueueDep, task_id: FromPath[str]) -> Response:
        try:
            await queue.delete(task_id)
        except QueueError as exc:
            return await _act_failed(queue, task_id, exc)
        return go(request, "/dashboard/tasks?" + _query(notice=f"Deleted task {task_id}."))

    @post("/tasks/bulk", status_code=200)
    async def bulk(self, request: Request, queue: QueueDep) -> Response:
        """Retry, cancel or delete the ticked tasks of the current list, or every task that
        matches the list's filter (the filtered selection), each on its own, in the background:
        the answer is a progress line the page polls (see api/dashboard/bulk.py)."""
        form = await request.form()
        action = str(form.get("action", ""))
        back = "/dashboard/tasks?" + _query(
            status=form.get("status"), type=form.get("type"), schedule=form.get("schedule"),
            cursor=form.get("cursor"), limit=form.get("limit"),
        )
        if action not in BULK_ACTIONS:
            return render("_bulk_status.html", job=None, message=f"Unknown action {action!r}.")
        if form.get("scope") == "matching":
            ids = await _matching_ids(
                queue, _text(form.get("status")), _text(form.get("type")),
                _text(form.get("schedule")),
            )
            cap = BULK_MATCHING_MAX
        else:
            ids = [i for i in form.getall("ids", []) if isinstance(i, str)][:BULK_MAX]
            cap = BULK_MAX
        if not ids:
            return render("_bulk_status.html", job=None, message="Tick at least one task first.")
        job = bulk_jobs.start(request, queue, action, ids, back, cap)
        return render("_bulk_status.html", job=job, message=None)

    @get("/tasks/bulk/{job_id:str}")
    async def bulk_progress(self, request: Request, job_id: FromPath[str]) -> Response:
        """How far a bulk action got; once done, back to the list with what happened."""
        job = bulk_jobs.find(request, job_id)
        if job is None:
            return render("_bulk_status.html", job=None,
                          message="That bulk action is unknown here: was the server restarted?")
        if job.finished:
            return go(request, job.back + "&" + _query(notice=job.notice()))
        return render("_bulk_status.html", job=job, message=None)

    @post("/tasks/{task_id:str}/run-now", status_code=200)
    async def run_now(self, queue: QueueDep, task_id: FromPath[str]) -> Response:
        """A task waiting for its delay or its retry backoff: make it due now."""
        if await queue.store.run_waiting_now(task_id, queue.clock.now()):
            queue.on_runnable()
            task = await queue.get(task_id)
            return render("_task_live.html", **await _detail(queue, task, flash="Due now: "
                          "the next free worker runs it."))
        task = await _get(queue, task_id)
        if task is None:
            return render("not_found.html", title="No such task", status_code=404,
                          what=f"No task with id {task_id!r}.")
        context = await _detail(queue, task, flash=f"Task {task_id} is {task.status} and not "
                                "waiting: nothing to bring forward.", flash_error=True)
        return render("_task_live.html", status_code=409, **context)

    @get("/submit", name="dashboard-submit")
    async def submit_page(
        self, queue: QueueDep,
        task_type: Annotated[str | None, QueryParameter(name="type", max_length=16)] = None,
        clone: Annotated[str | None, Parameter(max_length=26)] = None,
    ) -> Response:
        form = SubmitForm(values={"type": task_type or "shell"})
        cloned = None
        if clone:
            source = await _get(queue, clone)
            if source is not None:
                form, cloned = SubmitForm.from_task(source), source.id
        return render("submit.html", section="submit", title="Submit a task", form=form,
                      methods=HTTP_METHODS, cloned=cloned, now=queue.clock.now(), submitted=None)

    @post("/submit", status_code=200)
    async def submit(self, request: Request, queue: QueueDep) -> Response:
        """Validate with the API's own rules; every error goes beside its field in one round,
        nothing is queued."""
        form = SubmitForm.from_form(await request.form())
        task = created = None
        try:
            create = form.to_create()
        except FormInvalid:
            create = None
        check_payload(queue, form)  # the payload's own rules, whatever else was wrong
        if create is not None and not form.errors and not form.general:
            try:
                task, created = await queue.enqueue(create)
            except QueueError as exc:
                form.fail(str(exc))
        if task is not None:
            fresh = SubmitForm(values={"type": form.type})
            return render("_submit_area.html", form=fresh, methods=HTTP_METHODS,
                          submitted=task, created=created, now=queue.clock.now(),
                          status_code=201 if created else 200)
        return render("_submit_area.html", form=form, methods=HTTP_METHODS, submitted=None,
                      now=queue.clock.now(), status_code=422)


async def _get(queue: Queue, task_id: str) -> Task | None:
    try:
        return await queue.get(task_id)
    except NotFound:
        return None


async def _schedule_page(
    queue: Queue, schedule_id: str, status: str | None, task_type: str | None,
    cursor: str | None, limit: int,
) -> TaskPage:
    """Like Queue.list, for the tasks one schedule made."""
    ids = await queue.store.task_ids_of_schedule(
        schedule_id, status=status, type=task_type, cursor=cursor, limit=limit + 1
    )
    items = await queue.store.get_many(ids[:limit])
    return TaskPage(items=items, next_cursor=ids[limit - 1] if len(ids) > limit else None)


async def _view_page(
    queue: Queue, view: str, now: float, task_type: str | None, schedule_id: str | None,
    cursor: str | None, limit: int,
) -> TaskPage:
    """Like Queue.list, for one derived view of the queued tasks (ready, scheduled, retrying).
    A page may be short: each looks at a bounded window of the queued tasks."""
    ids, next_cursor = await queue.store.queued_view_ids(
        view, now, type=task_type, schedule_id=schedule_id, cursor=cursor,
        limit=limit,
    )
    return TaskPage(items=await queue.store.get_many(ids), next_cursor=next_cursor)


async def _find(queue: Queue, q: str) -> str | None:
    """A task id (any case), or an idempotency key."""
    if is_valid_id(q.upper()) and await _get(queue, q.upper()) is not None:
        return q.upper()
    return await queue.store.task_id_by_key(q)


async def _detail(queue: Queue, task: Task, flash: str | None = None,
                  flash_error: bool = False) -> dict:
    attempts = await queue.attempts(task.id)
    now = queue.clock.now()
    return {
        "now": now, "task": task, "attempts": attempts,
        "worked": sum(
            (a.finished_at.timestamp() if a.finished_at else now) - a.started_at.timestamp()
            for a in attempts
        ) if attempts else None,
        "terminal": task.status in TERMINAL, "flash": flash, "flash_error": flash_error,
    }


async def _act(
    queue: Queue, task_id: str, action: Callable[[str], Awaitable[object]], done: str
) -> Response:
    try:
        await action(task_id)
    except QueueError as exc:
        return await _act_failed(queue, task_id, exc)
    task = await queue.get(task_id)
    return render("_task_live.html", **await _detail(queue, task, flash=done))


async def _act_failed(queue: Queue, task_id: str, exc: QueueError) -> Response:
    task = await _get(queue, task_id)
    if task is None:
        return render("not_found.html", title="No such task", status_code=404, what=str(exc))
    context = await _detail(queue, task, flash=str(exc), flash_error=True)
    return render("_task_live.html", status_code=status_of(exc), **context)


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


async def _matching_ids(
    queue: Queue, status: str | None, task_type: str | None, schedule: str | None
) -> list[str]:
    """Ids of the tasks the list's filter shows, newest first, up to BULK_MATCHING_MAX."""
    status = status if status in LIST_STATUSES else None
    ids: list[str] = []
    cursor = None
    while len(ids) < BULK_MATCHING_MAX:
        limit = min(500, BULK_MATCHING_MAX - len(ids))
        if status in QUEUED_VIEWS:
            page, cursor = await queue.store.queued_view_ids(
                status, queue.clock.now(), type=task_type, schedule_id=schedule,
                cursor=cursor, limit=limit,
            )
            ids += page
        elif schedule:
            page = await queue.store.task_ids_of_schedule(
                schedule, status=status, type=task_type, cursor=cursor, limit=limit
            )
            ids += page
            cursor = page[-1] if len(page) == limit else None
        else:
            listed = await queue.list(status=status, type=task_type, cursor=cursor, limit=limit)
            ids += [t.id for t in listed.items]
            cursor = listed.next_cursor
        if cursor is None:
            break
    return ids
