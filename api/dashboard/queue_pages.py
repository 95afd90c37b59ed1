"""Queues: every queue with its tasks by status, its concurrency limit and pause, and the
buttons and the form that change them (docs/queues.md, docs/dashboard.md).

Every change goes through the same Queues.update that PUT /api/queues/{name} calls, with the
same dependency (api/queues.py provide_queues) and the same request type (QueueUpdate,
converted by msgspec as the API's body is): one set of rules, one place a change is made,
so whatever records or checks an API change (e.g. an audit trail) sees the dashboard's too.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import FromPath
from litestar.response import Response

from api.dashboard.common import is_htmx, render
from api.dashboard.snapshots import snapshots
from api.queues import QueuesDep, provide_queues
from shared.queue import QueueError
from shared.queue_schemas import MAX_CONCURRENCY, QUEUE_NAME_RULE, QueueUpdate, is_queue_name
from shared.schemas import STATUSES

LIMIT_FIELD = "concurrency"
LIMIT_RULE = f"a whole number from 1 to {MAX_CONCURRENCY:,}, or empty for no limit"


class LimitInvalid(ValueError):
    """What was typed in a limit box is not a limit; the message is shown beside the box."""


def parse_limit(text: str) -> int | None:
    """The limit box's text as the API's `concurrency`: empty (or "none") is null."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise LimitInvalid(f"{text[:40]!r} is not {LIMIT_RULE}.") from None


def _update(fields: dict[str, object]) -> QueueUpdate:
    """The request body the API would have decoded (its range checks included)."""
    try:
        return msgspec.convert(fields, QueueUpdate)
    except msgspec.ValidationError:
        raise LimitInvalid(f"must be {LIMIT_RULE}.") from None


class QueuePages(Controller):
    path = "/dashboard/queues"
    include_in_schema = False
    dependencies = {"queues": Provide(provide_queues, sync_to_thread=False)}

    @get("/", name="dashboard-queues")
    async def queues_page(self, request: Request, queues: QueuesDep) -> Response:
        """The page, or (for the 2-second poll and after an action) just its live part."""
        context = await _context(request, queues)
        if is_htmx(request):
            return render("_queues.html", **context)
        return render("queues.html", section="queues", title="Queues", **context)

    @post("/{name:str}/pause", status_code=200)
    async def pause(self, request: Request, queues: QueuesDep, name: FromPath[str]) -> Response:
        return await _change(request, queues, name, {"paused": True},
                             f"Paused {name}: workers take none of its tasks; running ones "
                             "finish.")

    @post("/{name:str}/resume", status_code=200)
    async def resume(self, request: Request, queues: QueuesDep, name: FromPath[str]) -> Response:
        return await _change(request, queues, name, {"paused": False},
                             f"Resumed {name}: workers take its tasks again.")

    @post("/{name:str}/limit", status_code=200)
    async def limit(self, request: Request, queues: QueuesDep, name: FromPath[str]) -> Response:
        typed = str((await request.form()).get(LIMIT_FIELD, ""))
        try:
            limit = parse_limit(typed)
            update = _update({LIMIT_FIELD: limit})
        except LimitInvalid as exc:
            return await _refused(request, queues, name, str(exc), typed)
        done = (f"{name}: at most {limit} running at once, across every worker."
                if limit is not None else f"{name}: no concurrency limit.")
        return await _change(request, queues, name, update, done, typed=typed)


async def _context(request: Request, queues: QueuesDep, **extra: object) -> dict:
    # The last copy of the list (counting is a whole-table read; snapshots.py), waited for
    # only on the first visit.
    listed = await snapshots(request).queues(queues, wait=True) or []
    return {"queues": listed, "statuses": STATUSES, "now": queues.clock.now(),
            "max_limit": MAX_CONCURRENCY, "notice": None, "notice_error": False,
            "errors": {}, "typed": {}, **extra}


async def _change(
    request: Request, queues: QueuesDep, name: str, change: QueueUpdate | dict[str, object],
    done: str, typed: str | None = None,
) -> Response:
    if not is_queue_name(name):
        return render("_queues.html", status_code=422, **await _context(
            request, queues, notice=f"{name[:80]!r} is not a queue name ({QUEUE_NAME_RULE}).",
            notice_error=True))
    update = change if isinstance(change, QueueUpdate) else _update(change)
    try:
        changed = await queues.update(name, update)
    except QueueError as exc:  # the API's own 422 (e.g. a limit below 1)
        if typed is not None:
            return await _refused(request, queues, name,
                                  str(exc).removeprefix(f"{LIMIT_FIELD}: "), typed)
        return render("_queues.html", status_code=422,
                      **await _context(request, queues, notice=str(exc), notice_error=True))
    snapshots(request).changed(changed)  # shown at once, not at the next recount
    return render("_queues.html", **await _context(request, queues, notice=done))


async def _refused(
    request: Request, queues: QueuesDep, name: str, message: str, typed: str
) -> Response:
    """The list again, the limit box of `name` keeping what was typed, its error beside it;
    nothing changed."""
    if is_queue_name(name):  # the row must be there to carry the error, however new
        snap = snapshots(request)
        await snap.queues(queues, wait=True)
        snap.changed(await queues.get(name))
    context = await _context(request, queues, errors={name: message}, typed={name: typed})
    return render("_queues.html", status_code=422, **context)
