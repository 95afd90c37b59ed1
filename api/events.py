"""/api/events: task state changes as Server-Sent Events (shared/task_events.py follows the log)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, NoReturn

import msgspec
from litestar import Controller, get
from litestar.exceptions import ValidationException
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import Stream

from api.auth import BEARER_SECURITY
from api.deps import EventHubDep, QueueDep
from api.errors import problem_responses
from api.request_rules import before_api_request
from shared.errors import InvalidTask
from shared.queue import Queue
from shared.schemas import STATUSES, to_datetime
from shared.store.base import LiveOutput, TaskEvent
from shared.task_events import EventHub, cursor_key, is_cursor

HEARTBEAT_SECONDS = 15.0
MAX_TASK_FILTERS = 100
RETRY_MS = 2000  # how long a browser's EventSource waits before reconnecting
# With ?output=ID: how often the stream re-reads its tasks' live output. Workers store it
# at most once a second (LOCALFLOW_LIVE_OUTPUT_INTERVAL), so reading faster shows nothing new.
OUTPUT_POLL_SECONDS = 1.0
_EPOCH = re.compile(r"^\d{1,11}(\.\d{1,9})?$")  # Unix seconds, as `since` may give them


class EventController(Controller):
    path = "/api/events"
    tags = ["events"]
    security = BEARER_SECURITY
    # Unknown query parameters, a repeated one not meant to repeat, conditions: 400
    # (api/request_rules.py).
    before_request = before_api_request

    @get(
        "/",
        summary="Stream task state changes (Server-Sent Events)",
        description=(
            "`text/event-stream`: one `event: task` per status change of any task, in commit "
            "order, from any process; `data:` a JSON object with `id` (the task), `status`, "
            "`attempts`, `type` and `time` (RFC 3339). Each event's `id:` is a cursor: a "
            "client that reconnects with `Last-Event-ID` (browsers' EventSource do) gets "
            "everything after it that the log still holds (the `--events-window`, an hour by "
            "default). If events after its cursor were already pruned it first gets "
            "`event: lost` and continues with the oldest kept. Without `Last-Event-ID` the "
            "stream starts now; with `since` (a time: RFC 3339 with a timezone, or Unix "
            "seconds) it starts with the first kept event stamped at or after it (a time "
            "before the kept window: `event: lost` first, then the oldest kept). Events are "
            "stamped by the clock of the process that made the change: to miss none of a "
            "moment's, ask for a few seconds earlier. `since` and `Last-Event-ID` together: "
            "400 (one start only). Filters: `task` (repeatable, up to 100) and `status` "
            "(repeatable). A comment (`: heartbeat`) keeps proxies from closing a quiet stream: "
            "sent after 15 s without anything sent, and, for a stream that started from "
            "`Last-Event-ID` or `since`, at once when it has read every event committed before "
            "it began (the replay is done; it then goes on live; until then the 15 s comment is "
            "`: replaying`). A slow reader is never "
            "dropped: it reads the log at its own pace, "
            "holding at most one page (500 events) in the server's memory. With `output=ID` "
            "(repeatable, up to 100; independent of `task`), also `event: output` whenever "
            "one of those tasks' live output changed: `data:` a JSON object with `id`, "
            "`attempt`, `stdout` and `stderr` (the last 8 KiB of each), `stdout_bytes`, "
            "`stderr_bytes` (all written so far) and `time`, as `GET /api/tasks/{id}/output` "
            "gives it; read once a second while the stream is open, sent without an `id:` "
            "(a reconnect gets the latest again, not each one it missed)."
        ),
        media_type="text/event-stream",
        responses=problem_responses(400, 422),
    )
    async def stream(
        self,
        event_hub: EventHubDep,
        queue: QueueDep,
        task: Annotated[list[str] | None, QueryParameter(
            name="task", max_length=MAX_TASK_FILTERS,  # of a list: how many ids
            description="only these task ids (repeat the parameter for more)",
        )] = None,
        status: Annotated[list[str] | None, QueryParameter(
            name="status", description="only these statuses (repeatable)",
        )] = None,
        output: Annotated[list[str] | None, QueryParameter(
            name="output", max_length=MAX_TASK_FILTERS,  # of a list: how many ids
            description="also stream the live output of these task ids (`event: output`; "
            "repeat the parameter for more)",
        )] = None,
        last_event_id: Annotated[str | None, HeaderParameter(
            name="Last-Event-ID", required=False, max_length=41,
            # The shape of the ids this API sends (shared/task_events.py), stated so that
            # clients and fuzzers know what a well-formed one is; any other is refused (400).
            pattern=r"^\s*\d{1,19}-\d{1,19}\s*$",
            description="the `id:` of the last event received: resume after it",
        )] = None,
        since: Annotated[str | None, QueryParameter(
            name="since", max_length=64,
            description="start with the first kept event stamped at or after this time "
            "(RFC 3339 with a timezone, e.g. 2026-01-01T09:00:00Z, or Unix seconds); not "
            "with Last-Event-ID",
        )] = None,
    ) -> Stream:
        tasks = _task_filter(task)
        statuses = _status_filter(status)
        followed = _task_filter(output, "output")
        if last_event_id is not None and not is_cursor(last_event_id.strip()):
            raise InvalidTask(
                f"Last-Event-ID: {last_event_id[:41]!r} is not an event id this API sent",
                "Last-Event-ID",
            )
        cursor = last_event_id.strip() if last_event_id else None
        lost = False
        if since is not None:
            if cursor is not None:
                _bad_query("since", "give either since or a Last-Event-ID header, not both: "
                           "a stream has one start")
            when = _since(since)
            begin = await queue.store.events_since(when)
            # Pruning removes only events older than the window, so a later `since` lost
            # nothing even when it is older than every event kept (a quiet server's log).
            lost = begin.lost and when < queue.clock.now() - queue.settings.events_window
            cursor = begin.cursor
        # A replay is done once the stream has read what was committed before it began.
        caught_up_at = await queue.store.events_newest() if cursor is not None else None
        start = await event_hub.join()
        return Stream(
            _events(event_hub, cursor or start, tasks, statuses,
                    _OutputFollower(queue, followed) if followed else None,
                    caught_up_at=caught_up_at, lost=lost),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _bad_query(name: str, message: str) -> NoReturn:
    """400 naming the query parameter, as Litestar's own checks of parameters answer."""
    raise ValidationException(f"{name}: {message}", extra=[
        {"key": name, "source": "query", "message": message}])


def _since(text: str) -> float:
    """`since` in Unix seconds: RFC 3339 with a timezone (as `run_at` takes times) or Unix
    seconds (what the log stamps)."""
    value = text.strip()
    if _EPOCH.match(value):
        return float(value)
    try:  # msgspec's RFC 3339, as the task schema's run_at is decoded
        when = msgspec.convert(value, datetime)
        seconds = when.timestamp() if when.tzinfo is not None else None
    except (msgspec.ValidationError, ValueError, OverflowError):
        seconds = None
    if seconds is None:
        _bad_query("since", f"{text[:64]!r} is not a time: expected RFC 3339 with a timezone "
                   "(e.g. 2026-01-01T09:00:00Z) or Unix seconds (e.g. 1767258000)")
    if not math.isfinite(seconds) or seconds < 0:
        _bad_query("since", f"{text[:64]!r} is before 1970")
    return seconds


def _task_filter(values: list[str] | None, name: str = "task") -> frozenset[str] | None:
    if not values:
        return None
    if len(values) > MAX_TASK_FILTERS:
        raise InvalidTask(f"{name}: at most {MAX_TASK_FILTERS} task ids, got {len(values)}",
                          name)
    return frozenset(values)


def _status_filter(values: list[str] | None) -> frozenset[str] | None:
    if not values:
        return None
    for value in values:
        if value not in STATUSES:
            raise InvalidTask(
                f"status: unknown status {value[:40]!r}: expected one of {', '.join(STATUSES)}",
                "status",
            )
    return frozenset(values)


async def _events(
    hub: EventHub, cursor: str, tasks: frozenset[str] | None, statuses: frozenset[str] | None,
    outputs: _OutputFollower | None = None, *, caught_up_at: str | None = None,
    lost: bool = False,
) -> AsyncIterator[bytes]:
    wait = HEARTBEAT_SECONDS if outputs is None else min(OUTPUT_POLL_SECONDS, HEARTBEAT_SECONDS)
    replay = None if caught_up_at is None else cursor_key(caught_up_at)
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        if lost:  # `since` before the kept window
            yield _sse("lost", cursor, {
                "detail": "events at or after this time may have been pruned: continuing "
                "with the oldest kept (re-read the tasks you follow)",
            })
        sent = time.monotonic()
        while not hub.closed:
            page = await hub.after(cursor)
            if page.lost:
                yield _sse("lost", cursor, {
                    "detail": "events after this cursor were pruned before they were read; "
                    "continuing with the oldest kept (re-read the tasks you follow)",
                })
                sent = time.monotonic()
                if not page.events:  # nothing kept after it: go on from the log's head
                    cursor = await hub.past_pruned(cursor)
                    continue
            if page.events:
                chunk = [_task_event(e) for e in page.events
                         if (tasks is None or e.task_id in tasks)
                         and (statuses is None or e.status in statuses)]
                cursor = page.events[-1].cursor
                if chunk:
                    yield b"".join(chunk)
                    sent = time.monotonic()
                continue
            if outputs is not None and (news := await outputs.changed()):
                yield news
                sent = time.monotonic()
            # Caught up with the log. A heartbeat once nothing was sent for 15 s, whatever
            # else happened meanwhile: a filtered stream on a busy server is woken by other
            # tasks' events all the time and would otherwise never send one. A replay (from
            # a cursor or a time) sends one at once when it has read everything committed
            # before the stream began: it may read fewer than that here (PostgreSQL holds
            # back events above an open transaction), so "nothing after the cursor" alone
            # would not say it. (Sent only here, so it always tells a client that the stream
            # has read the log up to now: Client.follow relies on that.)
            quiet = time.monotonic() - sent
            replayed = replay is not None and cursor_key(cursor) >= replay
            if replayed:
                yield b": heartbeat\n\n"
                sent, quiet, replay = time.monotonic(), 0.0, None
            elif quiet >= HEARTBEAT_SECONDS:
                # A replay still held back (by a transaction open for longer than this) keeps
                # the connection alive with another word: "heartbeat" would say it is done.
                yield b": heartbeat\n\n" if replay is None else b": replaying\n\n"
                sent, quiet = time.monotonic(), 0.0
            await hub.wait_past(cursor, min(wait, HEARTBEAT_SECONDS - quiet))
    finally:
        hub.leave()


class _OutputFollower:
    """The live output of a stream's tasks: what changed since the stream last sent it."""

    def __init__(self, queue: Queue, tasks: frozenset[str]) -> None:
        self.queue, self.tasks = queue, sorted(tasks)
        self._sent: dict[str, tuple[int, int, int]] = {}  # per task: attempt and byte counts
        self._next = 0.0  # time.monotonic() of the next read

    async def changed(self) -> bytes:
        now = time.monotonic()
        if now < self._next:
            return b""
        self._next = now + OUTPUT_POLL_SECONDS
        chunk = []
        for task_id, out in (await self.queue.live_outputs(self.tasks)).items():
            seen = (out.attempt, out.stdout_bytes, out.stderr_bytes)
            if self._sent.get(task_id) != seen:
                self._sent[task_id] = seen
                chunk.append(_output_event(out))
        return b"".join(chunk)


def _output_event(out: LiveOutput) -> bytes:
    # No `id:`: the cursor is the task event log's, and a reconnect needs only the latest.
    return b"event: output\ndata: %s\n\n" % msgspec.json.encode({
        "id": out.task_id, "attempt": out.attempt, "stdout": out.stdout, "stderr": out.stderr,
        "stdout_bytes": out.stdout_bytes, "stderr_bytes": out.stderr_bytes,
        "time": to_datetime(out.updated_at),
    })


def _task_event(e: TaskEvent) -> bytes:
    return _sse("task", e.cursor, {
        "id": e.task_id, "status": e.status, "attempts": e.attempts, "type": e.type,
        "time": to_datetime(e.time), "queue": e.queue,
    })


def _sse(event: str, cursor: str, data: object) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        cursor.encode(), event.encode(), msgspec.json.encode(data)
    )
