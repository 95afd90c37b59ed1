"""Tasks: the filtered list, one task's detail with its attempts, actions, and the submit form."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import Parameter
from litestar.response import Response

from api.dashboard.common import go, is_htmx, render
from api.dashboard.forms import HTTP_METHODS, FormError, SubmitForm
from api.dashboard.snapshots import snapshots
from api.deps import QueueDep
from api.errors import status_of
from shared.ids import is_valid_id
from shared.queue import NotFound, Queue, QueueError
from shared.schedules import Schedules
from shared.schemas import STATUSES, TERMINAL, Task, TaskCreate, TaskPage

PAGE_SIZES = (25, 50, 100, 200)
BULK_ACTIONS = ("retry", "cancel", "delete")
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
        status: str | None = None,
        task_type: Annotated[str | None, Parameter(query="type", max_length=64)] = None,
        schedule: Annotated[str | None, Parameter(max_length=64)] = None,
        q: Annotated[str | None, Parameter(max_length=255)] = None,
        cursor: Annotated[str | None, Parameter(max_length=26)] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        notice: Annotated[str | None, Parameter(max_length=300)] = None,
    ) -> Response:
        """The list page, or for htmx (filter changes and the 2-second poll) just the table."""
        status = status if status in STATUSES else None
        task_type = (task_type or "").strip() or None
        q = (q or "").strip() or None
        if q and not cursor:
            found = await _find(queue, q)
            if found:
                return go(request, f"/dashboard/tasks/{found}")
        schedule = (schedule or "").strip() or None
        if schedule:
            page = await _schedule_page(queue, schedule, status, task_type, cursor, limit)
        else:
            page = await queue.list(status=status, type=task_type, cursor=cursor, limit=limit)
        filters = {"status": status, "type": task_type, "schedule": schedule,
                   "limit": limit if limit != 50 else None}
        context = {
            "now": queue.clock.now(), "page": page, "status": status, "task_type": task_type,
            "q": q, "cursor": cursor, "limit": limit, "statuses": STATUSES,
            "schedule": schedule, "schedules": await Schedules(queue).list(),
            "page_sizes": PAGE_SIZES, "not_found": q, "notice": notice,
            "self_query": _query(**filters, cursor=cursor),
            "filter_query": _query(**filters),
            "next_query": _query(**filters, cursor=page.next_cursor) if page.next_cursor else None,
            "counts": await snapshots(request).counts(queue),
            "status_links": [
                (s, _query(status=s, type=task_type, schedule=schedule, limit=filters["limit"]))
                for s in (None, *STATUSES)
            ],
        }
        if is_htmx(request) and request.headers.get("hx-target") == "tasks-live":
            return render("_tasks.html", **context)
        return render("tasks.html", section="tasks", title="Tasks", **context)

    @get("/tasks/{task_id:str}", name="dashboard-task")
    async def task(self, request: Request, queue: QueueDep, task_id: str) -> Response:
        task = await _get(queue, task_id)
        if task is None:
            return render("not_found.html", section="tasks", title="No such task", status_code=404,
                          what=f"No task with id {task_id!r}. It may have been deleted.")
        context = await _detail(queue, task)
        if is_htmx(request):
            return render("_task_live.html", **context)
        return render("task.html", section="tasks", title=f"Task {task.id}", **context)

    @get("/tasks/{task_id:str}/badge")
    async def badge(self, queue: QueueDep, task_id: str) -> Response:
        """A submitted task's card on the submit page, re-polled until the task finishes."""
        task = await _get(queue, task_id)
        if task is None:
            return render("_submitted.html", gone=task_id, task=None, now=queue.clock.now())
        return render("_submitted.html", task=task, now=queue.clock.now(), gone=None)

    @post("/tasks/{task_id:str}/cancel", status_code=200)
    async def cancel(self, queue: QueueDep, task_id: str) -> Response:
        return await _act(queue, task_id, queue.cancel, "Cancel requested.")

    @post("/tasks/{task_id:str}/retry", status_code=200)
    async def retry(self, queue: QueueDep, task_id: str) -> Response:
        return await _act(queue, task_id, queue.retry, "Queued to run again now.")

    @post("/tasks/{task_id:str}/delete", status_code=200)
    async def delete(self, request: Request, queue: QueueDep, task_id: str) -> Response:
        try:
            await queue.delete(task_id)
        except QueueError as exc:
            return await _act_failed(queue, task_id, exc)
        return go(request, "/dashboard/tasks?" + _query(notice=f"Deleted task {task_id}."))

    @post("/tasks/bulk", status_code=200)
    async def bulk(self, request: Request, queue: QueueDep) -> Response:
        """Retry, cancel or delete the ticked tasks of the current list, or every task that
        matches the list's filter (the filtered selection), each on its own."""
        form = await request.form()
        action = str(form.get("action", ""))
        back = "/dashboard/tasks?" + _query(
            status=form.get("status"), type=form.get("type"), schedule=form.get("schedule"),
            cursor=form.get("cursor"), limit=form.get("limit"),
        )
        if action not in BULK_ACTIONS:
            return go(request, back + "&" + _query(notice=f"Unknown action {action!r}."))
        if form.get("scope") == "matching":
            ids = await _matching_ids(
                queue, _text(form.get("status")), _text(form.get("type")),
                _text(form.get("schedule")),
            )
        else:
            ids = [i for i in form.getall("ids") if isinstance(i, str)][:BULK_MAX]
        if not ids:
            return go(request, back + "&" + _query(notice="Tick at least one task first."))
        done, problems = await _bulk(queue, action, ids)
        notice = f"{action.title()}: {done} of {len(ids)} task(s) done."
        if len(ids) == BULK_MATCHING_MAX:
            notice += f" (at most {BULK_MATCHING_MAX} at a time: run it again for the rest)"
        if problems:
            notice += " Skipped: " + "; ".join(problems[:5]) + ("…" if len(problems) > 5 else "")
        return go(request, back + "&" + _query(notice=notice))

    @get("/submit", name="dashboard-submit")
    async def submit_page(
        self, queue: QueueDep,
        task_type: Annotated[str | None, Parameter(query="type", max_length=16)] = None,
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
        """Validate with the API's own rules; errors go beside their field, nothing is queued."""
        form = SubmitForm.from_form(await request.form())
        task = created = None
        try:
            create = form.to_create()
        except FormError as exc:
            form.errors[exc.field] = str(exc)
        except msgspec.ValidationError as exc:
            form.fail(str(exc))
            _check_payload(queue, form)  # so a payload mistake shows in the same round
        else:
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


def _check_payload(queue: Queue, form: SubmitForm) -> None:
    """The queue's payload checks alone (what enqueue would say next), for a form whose other
    fields failed first."""
    try:
        queue.prepare(TaskCreate(type=form.type, payload=form.payload()))
    except FormError as exc:
        form.errors[exc.field] = str(exc)
    except QueueError as exc:
        form.fail(str(exc))


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
    items = [t for t in [await _get(queue, i) for i in ids[:limit]] if t is not None]
    return TaskPage(items=items, next_cursor=ids[limit - 1] if len(ids) > limit else None)


async def _find(queue: Queue, q: str) -> str | None:
    """A task id (any case), or an idempotency key."""
    if is_valid_id(q.upper()) and await _get(queue, q.upper()) is not None:
        return q.upper()
    return await queue.store.task_id_by_key(q)


async def _detail(queue: Queue, task: Task, flash: str | None = None,
                  flash_error: bool = False) -> dict:
    return {
        "now": queue.clock.now(), "task": task, "attempts": await queue.attempts(task.id),
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


async def _bulk(queue: Queue, action: str, ids: list[str]) -> tuple[int, list[str]]:
    run = {"retry": queue.retry, "cancel": queue.cancel, "delete": queue.delete}[action]
    done, problems = 0, []
    for task_id in ids:
        try:
            await run(task_id)
            done += 1
        except QueueError as exc:
            problems.append(str(exc))
    return done, problems


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


async def _matching_ids(
    queue: Queue, status: str | None, task_type: str | None, schedule: str | None
) -> list[str]:
    """Ids of the tasks the list's filter shows, newest first, up to BULK_MATCHING_MAX."""
    status = status if status in STATUSES else None
    ids: list[str] = []
    cursor = None
    while len(ids) < BULK_MATCHING_MAX:
        limit = min(500, BULK_MATCHING_MAX - len(ids))
        if schedule:
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
