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
from api.dashboard.snapshots import queue_names, snapshots
from api.deps import QueueDep
from api.errors import status_of
from shared.ids import id_at, is_valid_id
from shared.queue import NotFound, Queue, QueueError
from shared.queue_schemas import QUEUE_NAME_RULE, is_queue_name
from shared.schedules import Schedules
from shared.schemas import PAYLOAD_TYPES, QUEUED_VIEWS, STATUSES, TERMINAL, Task, TaskPage

PAGE_SIZES = (25, 50, 100, 200)
BULK_ACTIONS = bulk_jobs.ACTIONS
LIST_STATUSES = (*STATUSES, *QUEUED_VIEWS)
# The chips over the list: queued, then the three ways of being queued, then the rest.
CHIPS = (None, "queued", *QUEUED_VIEWS, "running", "succeeded", "failed", "cancelled")
BULK_MAX = 500  # ticked tasks in one request
BULK_MATCHING_MAX = 5000  # tasks one "every task matching the filter" action may touch
# "Created within": the time-range filter, as a choice of windows back from now.
CREATED_WITHIN = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
CREATED_LABELS = {"1h": "the last hour", "24h": "the last 24 hours", "7d": "the last 7 days",
                  "30d": "the last 30 days"}
SEARCH_SCAN = 500  # tasks one page of a text search looks at (see Store.search_task_ids)
BACK_KEPT = 20  # earlier pages a "← Newer" link can go back through (26 characters each)


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
        queue_name: Annotated[str | None, QueryParameter(name="queue", max_length=200)] = None,
        q: Annotated[str | None, Parameter(max_length=255)] = None,
        created: Annotated[str | None, Parameter(max_length=8)] = None,
        cursor: Annotated[str | None, Parameter(max_length=26)] = None,
        back: Annotated[str | None, Parameter(max_length=27 * BACK_KEPT)] = None,
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
        created = created if created in CREATED_WITHIN else None
        q = (q or "").strip() or None
        if q and not cursor:
            found = await _find(queue, q)
            if found:
                return go(request, f"/dashboard/tasks/{found}")
        schedule = (schedule or "").strip() or None
        queue_name = (queue_name or "").strip() or None
        if queue_name and not is_queue_name(queue_name):
            notice = f"{queue_name[:80]!r} is not a queue name ({QUEUE_NAME_RULE}): showing " \
                     "every queue."
            queue_name = None
        now = queue.clock.now()
        floor = id_at(now - CREATED_WITHIN[created]) if created else None
        if q:
            page = await _search_page(queue, q, status, now, task_type, schedule, cursor,
                                      floor, limit, queue_name)
        elif status in QUEUED_VIEWS:
            page = await _view_page(queue, status, now, task_type, schedule, cursor, limit,
                                    queue_name)
        elif schedule:
            page = await _schedule_page(queue, schedule, status, task_type, cursor, limit,
                                        queue_name)
        else:
            page = await queue.list(status=status, type=task_type, cursor=cursor, limit=limit,
                                    queue=queue_name)
        if floor and not q:
            page = _above(page, floor)
        filters = {"status": status, "type": task_type, "schedule": schedule,
                   "queue": queue_name, "q": q, "created": created,
                   "limit": limit if limit != 50 else None}
        # The counts are kept per (type, schedule, queue) and redone in the background; a text
        # search or a time window would need a count of its own per keystroke, so none is shown.
        narrowed = bool(q or created)
        counts = await snapshots(request).counts(queue, task_type, schedule, queue_name)
        known = all(counts[s] is not None for s in STATUSES)
        counts["all"] = sum(counts[s] or 0 for s in STATUSES) if known else None
        trail = [c for c in (back or "").split(",") if c][-BACK_KEPT:] if cursor else []
        newer = trail[:-1], (trail[-1] if trail else None)
        context = {
            "now": now, "page": page, "status": status, "task_type": task_type,
            "q": q, "created": created, "created_labels": CREATED_LABELS,
            "cursor": cursor, "limit": limit, "statuses": STATUSES,
            "views": QUEUED_VIEWS, "known_types": list(PAYLOAD_TYPES),
            "schedule": schedule,
            "queue_name": queue_name,
            "page_sizes": PAGE_SIZES, "not_found": None, "notice": notice,
            "self_query": _query(**filters, cursor=cursor, back=back),
            "filter_query": _query(**filters),
            "next_query": _query(
                **filters, cursor=page.next_cursor,
                back=",".join([*trail, cursor or "-"][-BACK_KEPT:]),
            ) if page.next_cursor else None,
            # "← Newer": the page before this one ("-" stands for the first page).
            "prev_query": _query(
                **filters, cursor=newer[1] if newer[1] != "-" else None,
                back=",".join(newer[0]) or None,
            ) if cursor and trail else None,
            "counts": None if narrowed else counts,
            "matching": None if narrowed else counts.get(status or "all"),
            "narrowed": narrowed, "search_scan": SEARCH_SCAN,
            # Only tasks that have started have attempts to add up: a page of the waiting
            # backlog asks nothing (on PostgreSQL, one round trip fewer).
            "worked": await queue.store.attempt_seconds(
                [t.id for t in page.items if t.attempts], now),
            "bulk_max": BULK_MATCHING_MAX,
            "status_links": [
                (s, _query(status=s, type=task_type, schedule=schedule, queue=queue_name,
                           q=q, created=created,
                           limit=filters["limit"]))
                for s in CHIPS
            ],
        }
        if is_htmx(request) and request.headers.get("hx-target") == "tasks-live":
            return render("_tasks.html", **context)
        # The filters' choices: the page only, not the 2-second poll of the rows (on
        # PostgreSQL every read is a round trip to the server).
        return render("tasks.html", section="tasks", title="Tasks",
                      queue_names=await queue_names(request, queue),
                      schedules=await Schedules(queue).list(), **context)

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
            queue=form.get("queue"), q=form.get("q"), created=form.get("created"),
            cursor=form.get("cursor"), limit=form.get("limit"),
        )
        if action not in BULK_ACTIONS:
            return render("_bulk_status.html", job=None, message=f"Unknown action {action!r}.")
        if form.get("scope") == "matching" and (_text(form.get("q")) or _text(form.get("created"))):
            # The page offers no "every matching task" under a search or a time range (there is
            # no count for them); a hand-made request must not act on the wider filter instead.
            return render("_bulk_status.html", job=None, message="Under a search or a time "
                          "range, tick the tasks to act on.")
        if form.get("scope") == "matching":
            ids = await _matching_ids(
                queue, _text(form.get("status")), _text(form.get("type")),
                _text(form.get("schedule")), _queue_filter(form.get("queue")),
            )
            cap = BULK_MATCHING_MAX
        else:
            ids = [i for i in form.getall("ids", []) if isinstance(i, str)][:BULK_MAX]
            cap = BULK_MAX
        if not ids:
            return render("_bulk_status.html", job=None, message="Tick at least one task first.")
        scope = "matching" if form.get("scope") == "matching" else "ticked"
        selection = {"scope": scope, "filter": {
            k: v for k in ("status", "type", "schedule") if (v := _text(form.get(k)))}}
        job = bulk_jobs.start(request, queue, action, ids, back, cap, selection)
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
        self, request: Request, queue: QueueDep,
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
                      methods=HTTP_METHODS, cloned=cloned, now=queue.clock.now(), submitted=None,
                      queue_names=await queue_names(request, queue))

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
                          queue_names=await queue_names(request, queue),
                          status_code=201 if created else 200)
        return render("_submit_area.html", form=form, methods=HTTP_METHODS, submitted=None,
                      now=queue.clock.now(), queue_names=await queue_names(request, queue),
                      status_code=422)


async def _get(queue: Queue, task_id: str) -> Task | None:
    try:
        return await queue.get(task_id)
    except NotFound:
        return None


async def _schedule_page(
    queue: Queue, schedule_id: str, status: str | None, task_type: str | None,
    cursor: str | None, limit: int, queue_name: str | None = None,
) -> TaskPage:
    """Like Queue.list, for the tasks one schedule made."""
    ids = await queue.store.task_ids_of_schedule(
        schedule_id, status=status, type=task_type, cursor=cursor, limit=limit + 1,
        queue=queue_name,
    )
    items = await queue.store.get_many(ids[:limit])
    return TaskPage(items=items, next_cursor=ids[limit - 1] if len(ids) > limit else None)


async def _view_page(
    queue: Queue, view: str, now: float, task_type: str | None, schedule_id: str | None,
    cursor: str | None, limit: int, queue_name: str | None = None,
) -> TaskPage:
    """Like Queue.list, for one derived view of the queued tasks (ready, scheduled, retrying).
    A page may be short: each looks at a bounded window of the queued tasks."""
    ids, next_cursor = await queue.store.queued_view_ids(
        view, now, type=task_type, schedule_id=schedule_id, cursor=cursor,
        limit=limit, queue=queue_name,
    )
    return TaskPage(items=await queue.store.get_many(ids), next_cursor=next_cursor)


async def _search_page(
    queue: Queue, q: str, status: str | None, now: float, task_type: str | None,
    schedule_id: str | None, cursor: str | None, floor: str | None, limit: int,
    queue_name: str | None = None,
) -> TaskPage:
    """Tasks whose command, arguments or error text hold q, newest first. Each page looks at
    a window of SEARCH_SCAN tasks (the store's search_task_ids), so a search costs a bounded
    read however big the table; a page may be short, with "Look further" to go on."""
    stored = "queued" if status in QUEUED_VIEWS else status
    ids, next_cursor = await queue.store.search_task_ids(
        _needle(q), status=stored, type=task_type, schedule_id=schedule_id, cursor=cursor,
        floor=floor, limit=limit, scan=SEARCH_SCAN, queue=queue_name,
    )
    items = await queue.store.get_many(ids)  # one read, as the schedule and view pages
    if status in QUEUED_VIEWS:
        items = [t for t in items if _view_of(t, now) == status]
    return TaskPage(items=items, next_cursor=next_cursor)


def _needle(q: str) -> str:
    # Both backends compare lower-cased text; SQLite's lower() knows only ASCII letters, so
    # only those are lowered here (a non-ASCII letter then matches in the case typed).
    return "".join(c.lower() if c.isascii() else c for c in q)


def _view_of(task: Task, now: float) -> str:
    if task.run_at.timestamp() <= now:
        return "ready"
    return "retrying" if task.attempts > 0 else "scheduled"


def _above(page: TaskPage, floor: str) -> TaskPage:
    """A page cut at the time window's start: ids are ULIDs, so older tasks have smaller ids
    and, newest first, everything after the first one below the floor is older still."""
    items = [t for t in page.items if t.id >= floor]
    if len(items) < len(page.items) or (page.next_cursor and page.next_cursor < floor):
        return TaskPage(items=items, next_cursor=None)
    return page


async def _find(queue: Queue, q: str) -> str | None:
    """A task id (any case), or an idempotency key."""
    if is_valid_id(q.upper()) and await _get(queue, q.upper()) is not None:
        return q.upper()
    return await queue.store.task_id_by_key(q)


async def _detail(queue: Queue, task: Task, flash: str | None = None,
                  flash_error: bool = False) -> dict:
    attempts = await queue.attempts(task.id)
    deliveries = await queue.deliveries(task.id) if task.callback_url else []
    now = queue.clock.now()
    return {
        "now": now, "task": task, "attempts": attempts, "deliveries": deliveries,
        "worked": sum(
            (a.finished_at.timestamp() if a.finished_at else now) - a.started_at.timestamp()
            for a in attempts
        ) if attempts else None,
        "terminal": task.status in TERMINAL, "flash": flash, "flash_error": flash_error,
        # A running task's output so far (_live_output.html).
        "live_output": await queue.output(task.id) if task.status == "running" else None,
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


def _queue_filter(value: object) -> str | None:
    """The list's queue filter as the bulk form sent it back; not a queue name: none (the
    list showed every queue then, so "every task matching" means that too)."""
    name = _text(value)
    return name if name and is_queue_name(name) else None


async def _matching_ids(
    queue: Queue, status: str | None, task_type: str | None, schedule: str | None,
    queue_name: str | None = None,
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
                cursor=cursor, limit=limit, queue=queue_name,
            )
            ids += page
        elif schedule:
            page = await queue.store.task_ids_of_schedule(
                schedule, status=status, type=task_type, cursor=cursor, limit=limit,
                queue=queue_name,
            )
            ids += page
            cursor = page[-1] if len(page) == limit else None
        else:
            listed = await queue.list(status=status, type=task_type, cursor=cursor, limit=limit,
                                      queue=queue_name)
            ids += [t.id for t in listed.items]
            cursor = listed.next_cursor
        if cursor is None:
            break
    return ids
