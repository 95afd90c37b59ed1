"""A small typed client for LocalFlow's REST API (httpx + msgspec), for scripts and services.

    from localflow.client import Client

    with Client("http://127.0.0.1:8080", token=None) as lf:
        task = lf.submit("shell", {"command": "echo", "args": ["hi"]})
        done = lf.wait(task.id, timeout=60)
        print(done.status, done.result)

`Client.from_env()` reads LOCALFLOW_URL and LOCALFLOW_API_TOKEN. `AsyncClient` has the same
methods for asyncio code. Every error answer becomes a ClientError carrying the server's
problem+json (status, title, detail, per-field errors); a server that cannot be reached is a
ClientError with status None.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from localflow.defaults import DEFAULT_URL
from shared.audit import AuditPage
from shared.schedule_schemas import Schedule, ScheduleCreate, ScheduleUpdate
from shared.schemas import TERMINAL, Attempt, Task, TaskCreate, TaskPage

# GET /api/tasks/{id}?wait=S: the longest S the server takes, and the header that says the
# server waited (a server without ?wait= answers at once without it).
SERVER_MAX_WAIT = 60.0
WAIT_HEADER = "LocalFlow-Wait"
T = TypeVar("T")


class ClientError(Exception):
    """The server refused the request (status >= 400), or could not be reached (status None)."""

    def __init__(self, status: int | None, detail: str, problem: Mapping[str, Any] | None = None):
        self.status = status
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        self.title: str = self.problem.get("title", "")
        super().__init__(f"{status} {self.title}: {detail}" if status else detail)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Per-field errors of a 400/422 answer: [{"field": ..., "message": ...}]."""
        return list(self.problem.get("errors") or [])


class WaitTimeout(ClientError):
    """wait() gave up before the task reached a final state; `task` is the last one seen."""

    def __init__(self, task: Task, timeout: float) -> None:
        super().__init__(None, f"task {task.id} is still {task.status} after {timeout:g}s")
        self.task = task


class Event(msgspec.Struct, frozen=True):
    """One Server-Sent Event of GET /api/events: `event` "task" (data: id, status, attempts,
    type, time) or "lost" (events after the cursor were pruned before they were read)."""

    id: str  # the cursor: pass it back as last_event_id to resume after it
    event: str
    data: dict[str, Any]


# What _SSE makes of the server's `: heartbeat` comment when asked (follow() only): the
# server sends it only once the stream has read the log up to now, and a stream that started
# from a time or a cursor gets one at once when it has (api/events.py).
_HEARTBEAT = ":heartbeat"


class _SSE:
    """Server-Sent Events parsing, line by line (comments are skipped, but for heartbeats
    when `heartbeats`: an Event named _HEARTBEAT)."""

    def __init__(self, heartbeats: bool = False) -> None:
        self._fields: dict[str, str] = {}
        self._heartbeats = heartbeats

    def feed(self, line: str) -> Event | None:
        if self._heartbeats and line == ": heartbeat":
            return Event(id="", event=_HEARTBEAT, data={})
        if line == "":
            fields, self._fields = self._fields, {}
            if "data" not in fields:
                return None
            return Event(id=fields.get("id", ""), event=fields.get("event", "message"),
                         data=msgspec.json.decode(fields["data"]))
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            self._fields[name] = self._fields[name] + "\n" + value \
                if name == "data" and name in self._fields else value
        return None


def _events_request(
    tasks: Iterable[str] | None, statuses: Iterable[str] | None, last_event_id: str | None,
    since: str | None = None,
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    params = [("task", t) for t in tasks or ()] + [("status", s) for s in statuses or ()]
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    elif since:  # the first start only: once an event came, a reconnect resumes after it
        params.append(("since", since))
    return params, headers


# A stream is never silent for longer than the server's 15 s heartbeat; past this it is dead.
_EVENTS_READ_TIMEOUT = 45.0
# How much earlier than the task's created_at follow() asks the log to start. A task's events
# are stamped by the clock of the process that wrote them (the API that created it, the
# worker that ran it, on this host or another), while the log is in commit order: an event
# committed after the task's first one may carry an earlier stamp (another host's clock a
# little behind, a transaction stamped some milliseconds before it committed). Starting at
# the first event stamped at or after created_at could then begin past the task's creation
# and miss it; a few seconds earlier covers clock differences between processes (NTP keeps
# hosts within milliseconds) and costs only a few seconds of other tasks' events to read.
_FOLLOW_CLOCK_MARGIN = 5.0


def _since_param(since: datetime | float | None, last_event_id: str | None) -> str | None:
    """events()'s `since` as the API takes it (Unix seconds); refused here, before any
    request, with a cursor too or as a time without a timezone (which moment would it be?)."""
    if since is None:
        return None
    if last_event_id is not None:
        raise ValueError("events(): give since or last_event_id, not both (a stream has one start)")
    if isinstance(since, datetime):
        if since.tzinfo is None:
            raise ValueError("events(): since needs a timezone (e.g. datetime.now(UTC))")
        since = since.timestamp()
    return f"{max(0.0, float(since)):.6f}"


def _follow_since(task: Task) -> str | None:
    """`since` for follow(): the task's creation, less the clock margin (Unix seconds)."""
    return _since_param(task.created_at.timestamp() - _FOLLOW_CLOCK_MARGIN, None)


class _Follow:
    """When follow()'s story of one task ends (shared by both clients)."""

    def __init__(self, task: Task) -> None:
        self.ended_before = task.status in TERMINAL  # before the stream began

    @staticmethod
    def is_the_end(event: Event, now: Task) -> bool:
        """A final event that is the task's state as read now: not an earlier end that a
        retry has since reopened."""
        return (now.status in TERMINAL and now.status == event.data.get("status")
                and now.attempts == event.data.get("attempts"))

    @staticmethod
    def pruned(now: Task) -> Event:
        """The last word when the log no longer holds the task's end (the server's event
        window): the task as read now, in a task event's shape."""
        return Event(id="", event="pruned", data={
            "id": now.id, "status": now.status, "attempts": now.attempts, "type": now.type,
            "time": msgspec.to_builtins(now.updated_at), "queue": now.queue,
            "detail": "the server's event log no longer holds this task's final event (its "
                      "event window, an hour by default): this is the task as read now",
        })


class _Call(NamedTuple, Generic[T]):
    """One API request, built once and sent by either client."""

    method: str
    path: str
    out: type[T] | None
    params: dict[str, Any] | None = None
    body: Any = None


def _drop_none(value: msgspec.Struct) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(value).items() if v is not None}


# -- request builders (shared by Client and AsyncClient) ----------------------------------


def _submit(
    task: str | TaskCreate | Mapping[str, Any], payload: Mapping[str, Any] | None,
    options: dict[str, Any],
) -> _Call[Task]:
    if not isinstance(task, str):
        if payload is not None or options:
            raise TypeError("give a whole task alone, or a type with payload and options")
        # A mapping goes as it is: the server validates it and names any wrong field.
        body = _drop_none(task) if isinstance(task, TaskCreate) else dict(task)
        return _Call("POST", "/api/tasks", Task, body=body)
    create = TaskCreate(type=task, payload=dict(payload or {}), **options)
    return _Call("POST", "/api/tasks", Task, body=_drop_none(create))


def _list(
    status: str | None, type: str | None, cursor: str | None, limit: int,
    queue: str | None = None,
) -> _Call[TaskPage]:
    params = {"status": status, "type": type, "cursor": cursor, "limit": limit,
              "queue": queue}
    return _Call("GET", "/api/tasks", TaskPage,
                 params={k: v for k, v in params.items() if v is not None})


def _audit(
    action: str | None, target: str | None, cursor: str | None, limit: int
) -> _Call[AuditPage]:
    params = {"action": action, "target": target, "cursor": cursor, "limit": limit}
    return _Call("GET", "/api/audit", AuditPage,
                 params={k: v for k, v in params.items() if v is not None})


def _retry(task_id: str, attempts: int) -> _Call[Task]:
    return _Call("POST", _task_path(task_id, "/retry"), Task, params={"attempts": attempts})


def _schedule_body(value: ScheduleCreate | ScheduleUpdate | Mapping[str, Any]) -> Any:
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)  # UNSET fields are left out
    return dict(value)


def _task_path(task_id: str, suffix: str = "") -> str:
    return f"/api/tasks/{_segment(task_id)}{suffix}"


def _schedule_path(schedule_id: str) -> str:
    return f"/api/schedules/{_segment(schedule_id)}"


def _segment(value: str) -> str:
    # Quoted, so an id can never reach another route ("x/cancel", "../", "?limit=").
    if not value or value in (".", ".."):
        raise ValueError(f"not an id: {value!r}")
    return quote(value, safe="")


def _decode(response: httpx.Response, out: type[T] | None) -> T:
    if response.status_code >= 400:
        raise _error(response)
    if out is None or response.status_code == 204 or not response.content:
        return None  # type: ignore[return-value]
    try:
        return msgspec.json.decode(response.content, type=out)
    except msgspec.DecodeError as exc:
        raise ClientError(
            response.status_code, f"unexpected answer from {response.request.url}: {exc}"
        ) from None


def _error(response: httpx.Response) -> ClientError:
    problem: dict[str, Any] = {}
    try:
        decoded = response.json()
        if isinstance(decoded, dict):
            problem = decoded
    except ValueError:
        pass
    detail = problem.get("detail") or response.text[:500] or response.reason_phrase
    return ClientError(response.status_code, str(detail), problem)


def _wait_params(seconds: float) -> dict[str, str]:
    return {"wait": f"{min(max(seconds, 0.001), SERVER_MAX_WAIT):.3f}"}


def _wait_budget(deadline: float | None) -> float:
    """Seconds the next ?wait= may ask for; <= 0 when the caller's timeout is spent."""
    if deadline is None:
        return SERVER_MAX_WAIT
    return min(SERVER_MAX_WAIT, deadline - time.monotonic())


def _unreachable(url: str, exc: httpx.HTTPError) -> ClientError:
    return ClientError(None, f"cannot reach LocalFlow at {url}: {exc or type(exc).__name__}")


def _headers(token: str | None, agent: str | None = None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if agent:
        # What the audit trail records as the channel (docs/audit.md): "cli" for `localflow`.
        headers["LocalFlow-Client"] = agent
    return headers


def _env_url_token() -> tuple[str, str | None]:
    return (os.environ.get("LOCALFLOW_URL") or DEFAULT_URL,
            os.environ.get("LOCALFLOW_API_TOKEN") or None)


# -- the clients --------------------------------------------------------------------------


class Client:
    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None, agent: str | None = None,
    ) -> None:
        """agent: sent as the LocalFlow-Client header (the `localflow` command: "cli")."""
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.url, headers=_headers(token, agent), timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        url, token = _env_url_token()
        return cls(url, token, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, params=call.params,
                content=None if call.body is None else msgspec.json.encode(call.body),
                headers=None if call.body is None else {"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        return _decode(response, call.out)

    # tasks

    def submit(
        self, task: str | TaskCreate | Mapping[str, Any],
        payload: Mapping[str, Any] | None = None, **options: Any,
    ) -> Task:
        """Submit a task: submit("shell", {"command": "echo"}, priority=5), or a whole task
        as a TaskCreate or a dict. options: priority, max_attempts, idempotency_key, run_at,
        delay, timeout."""
        return self._send(_submit(task, payload, options))

    def get(self, task_id: str) -> Task:
        return self._send(_Call("GET", _task_path(task_id), Task))

    def list(
        self, *, status: str | None = None, type: str | None = None, cursor: str | None = None,
        limit: int = 50, queue: str | None = None,
    ) -> TaskPage:
        """One page, newest first; pass page.next_cursor back for the next."""
        return self._send(_list(status, type, cursor, limit, queue))

    def audit(
        self, *, action: str | None = None, target: str | None = None,
        cursor: str | None = None, limit: int = 50,
    ) -> AuditPage:
        """The audit trail, newest first (docs/audit.md); pass page.next_cursor back."""
        return self._send(_audit(action, target, cursor, limit))

    def attempts(self, task_id: str) -> list[Attempt]:
        return self._send(_Call("GET", _task_path(task_id, "/attempts"), list[Attempt]))

    def cancel(self, task_id: str) -> Task:
        return self._send(_Call("POST", _task_path(task_id, "/cancel"), Task))

    def retry(self, task_id: str, attempts: int = 1) -> Task:
        """Run a failed or cancelled task again now, with `attempts` more attempts."""
        return self._send(_retry(task_id, attempts))

    def delete(self, task_id: str) -> None:
        """Delete a task that is not running, with its attempts."""
        self._send(_Call("DELETE", _task_path(task_id), None))

    def wait(self, task_id: str, timeout: float | None = None, poll: float = 0.2) -> Task:
        """Until the task is succeeded, failed or cancelled (returned), or `timeout` seconds
        pass (WaitTimeout, carrying the task as last seen). No polling: each request is a
        GET /api/tasks/{id}?wait= the server answers the moment the task finishes (up to a
        minute each; longer waits repeat it). `poll`: the interval between reads only for a
        server too old to wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            budget = _wait_budget(deadline)
            if budget <= 0:
                task = self.get(task_id)
                if task.status in TERMINAL:
                    return task
                raise WaitTimeout(task, timeout or 0.0)
            task, waited = self._wait_once(task_id, budget)
            if task.status in TERMINAL:
                return task
            if not waited:
                time.sleep(min(poll, max(budget, 0.0)))

    def _wait_once(self, task_id: str, seconds: float) -> tuple[Task, bool]:
        try:
            response = self._http.get(_task_path(task_id), params=_wait_params(seconds),
                                      timeout=seconds + self._timeout)
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        return _decode(response, Task), WAIT_HEADER in response.headers

    def events(
        self, *, tasks: Iterable[str] | None = None, statuses: Iterable[str] | None = None,
        last_event_id: str | None = None, reconnect: bool = True,
        since: datetime | float | None = None,
    ) -> Iterator[Event]:
        """Task state changes as they happen (GET /api/events), for as long as the caller
        iterates; filtered to `tasks` and/or `statuses` if given. Starts now, after
        `last_event_id`, or with the first kept event stamped at or after `since` (an aware
        datetime or Unix seconds; not with last_event_id: ValueError). A dropped connection is
        resumed after the last event seen (nothing missed within the server's event window)
        unless reconnect=False. To follow one task from its start to its end, whenever it
        ran, use follow()."""
        yield from self._stream(tasks, statuses, last_event_id, reconnect, heartbeats=False,
                                since=_since_param(since, last_event_id))

    def follow(self, task_id: str) -> Iterator[Event]:
        """One task's whole story: its state changes from its creation (`event` "task", as
        events() gives them), then as they happen, ending after its final one (succeeded,
        failed or cancelled), even if the task finished before follow() was called. Replays
        what the server's event log keeps (the --events-window, an hour by default) from the
        task's creation on (GET /api/events?since=, a few seconds before its created_at), not
        the whole log; if the log no longer holds the task's final event, ends at once with
        an `event` "pruned" carrying the task as read now, when the stream says it has read
        the log up to now (its first heartbeat). ClientError 404 for an unknown task, or one
        deleted while followed."""
        task = self.get(task_id)
        follow = _Follow(task)
        for event in self._stream([task_id], None, None, True, heartbeats=True,
                                  since=_follow_since(task)):
            if event.event == "task":
                yield event
                if event.data.get("status") in TERMINAL and follow.is_the_end(
                        event, self.get(task_id)):
                    return
            elif event.event == _HEARTBEAT:
                now = self.get(task_id)  # (a task deleted meanwhile: 404)
                if follow.ended_before:
                    yield _Follow.pruned(now)
                    return

    def _stream(
        self, tasks: Iterable[str] | None, statuses: Iterable[str] | None,
        last_event_id: str | None, reconnect: bool, *, heartbeats: bool,
        since: str | None = None,
    ) -> Iterator[Event]:
        tasks, statuses = list(tasks or ()), list(statuses or ())
        while True:
            params, headers = _events_request(tasks, statuses, last_event_id, since)
            try:
                with self._http.stream(
                    "GET", "/api/events", params=params, headers=headers,
                    timeout=httpx.Timeout(self._timeout, read=_EVENTS_READ_TIMEOUT),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _error(response)
                    parser = _SSE(heartbeats)
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            last_event_id = event.id or last_event_id
                            yield event
            except httpx.HTTPError as exc:
                if not reconnect:
                    raise _unreachable(self.url, exc) from None
                time.sleep(1.0)
            if not reconnect:
                return

    # schedules

    def schedules(self) -> list[Schedule]:
        return self._send(_Call("GET", "/api/schedules", list[Schedule]))

    def create_schedule(self, schedule: ScheduleCreate | Mapping[str, Any]) -> Schedule:
        return self._send(_Call("POST", "/api/schedules", Schedule, body=_schedule_body(schedule)))

    def get_schedule(self, schedule_id: str) -> Schedule:
        return self._send(_Call("GET", _schedule_path(schedule_id), Schedule))

    def update_schedule(
        self, schedule_id: str, changes: ScheduleUpdate | Mapping[str, Any]
    ) -> Schedule:
        return self._send(
            _Call("PUT", _schedule_path(schedule_id), Schedule, body=_schedule_body(changes))
        )

    def delete_schedule(self, schedule_id: str) -> None:
        self._send(_Call("DELETE", _schedule_path(schedule_id), None))

    # system

    def health(self) -> dict[str, Any]:
        return self._send(_Call("GET", "/health", dict[str, Any]))


class AsyncClient:
    """Client's methods as coroutines, for asyncio code."""

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(token), timeout=timeout, transport=transport
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncClient:
        url, token = _env_url_token()
        return cls(url, token, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _send(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params,
                content=None if call.body is None else msgspec.json.encode(call.body),
                headers=None if call.body is None else {"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        return _decode(response, call.out)

    async def submit(
        self, task: str | TaskCreate | Mapping[str, Any],
        payload: Mapping[str, Any] | None = None, **options: Any,
    ) -> Task:
        return await self._send(_submit(task, payload, options))

    async def get(self, task_id: str) -> Task:
        return await self._send(_Call("GET", _task_path(task_id), Task))

    async def list(
        self, *, status: str | None = None, type: str | None = None, cursor: str | None = None,
        limit: int = 50, queue: str | None = None,
    ) -> TaskPage:
        return await self._send(_list(status, type, cursor, limit, queue))

    async def audit(
        self, *, action: str | None = None, target: str | None = None,
        cursor: str | None = None, limit: int = 50,
    ) -> AuditPage:
        return await self._send(_audit(action, target, cursor, limit))

    async def attempts(self, task_id: str) -> list[Attempt]:
        return await self._send(_Call("GET", _task_path(task_id, "/attempts"), list[Attempt]))

    async def cancel(self, task_id: str) -> Task:
        return await self._send(_Call("POST", _task_path(task_id, "/cancel"), Task))

    async def retry(self, task_id: str, attempts: int = 1) -> Task:
        return await self._send(_retry(task_id, attempts))

    async def delete(self, task_id: str) -> None:
        await self._send(_Call("DELETE", _task_path(task_id), None))

    async def wait(
        self,
        task_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the same signature as Client.wait
        poll: float = 0.2,
    ) -> Task:
        """Client.wait, as a coroutine."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            budget = _wait_budget(deadline)
            if budget <= 0:
                task = await self.get(task_id)
                if task.status in TERMINAL:
                    return task
                raise WaitTimeout(task, timeout or 0.0)
            task, waited = await self._wait_once(task_id, budget)
            if task.status in TERMINAL:
                return task
            if not waited:
                await asyncio.sleep(min(poll, max(budget, 0.0)))

    async def _wait_once(self, task_id: str, seconds: float) -> tuple[Task, bool]:
        try:
            response = await self._http.get(_task_path(task_id), params=_wait_params(seconds),
                                            timeout=seconds + self._timeout)
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        return _decode(response, Task), WAIT_HEADER in response.headers

    async def events(
        self, *, tasks: Iterable[str] | None = None, statuses: Iterable[str] | None = None,
        last_event_id: str | None = None, reconnect: bool = True,
        since: datetime | float | None = None,
    ) -> AsyncIterator[Event]:
        """Client.events, as an async iterator."""
        start = _since_param(since, last_event_id)
        async with contextlib.aclosing(self._stream(
                tasks, statuses, last_event_id, reconnect, heartbeats=False,
                since=start)) as stream:
            async for event in stream:
                yield event

    async def follow(self, task_id: str) -> AsyncIterator[Event]:
        """Client.follow, as an async iterator."""
        task = await self.get(task_id)
        follow = _Follow(task)
        async with contextlib.aclosing(self._stream(
                [task_id], None, None, True, heartbeats=True,
                since=_follow_since(task))) as stream:
            async for event in stream:
                if event.event == "task":
                    yield event
                    if event.data.get("status") in TERMINAL and follow.is_the_end(
                            event, await self.get(task_id)):
                        return
                elif event.event == _HEARTBEAT:
                    now = await self.get(task_id)  # (a task deleted meanwhile: 404)
                    if follow.ended_before:
                        yield _Follow.pruned(now)
                        return

    async def _stream(
        self, tasks: Iterable[str] | None, statuses: Iterable[str] | None,
        last_event_id: str | None, reconnect: bool, *, heartbeats: bool,
        since: str | None = None,
    ) -> AsyncIterator[Event]:
        tasks, statuses = list(tasks or ()), list(statuses or ())
        while True:
            params, headers = _events_request(tasks, statuses, last_event_id, since)
            try:
                async with self._http.stream(
                    "GET", "/api/events", params=params, headers=headers,
                    timeout=httpx.Timeout(self._timeout, read=_EVENTS_READ_TIMEOUT),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise _error(response)
                    parser = _SSE(heartbeats)
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            last_event_id = event.id or last_event_id
                            yield event
            except httpx.HTTPError as exc:
                if not reconnect:
                    raise _unreachable(self.url, exc) from None
                await asyncio.sleep(1.0)
            if not reconnect:
                return

    async def schedules(self) -> list[Schedule]:
        return await self._send(_Call("GET", "/api/schedules", list[Schedule]))

    async def create_schedule(self, schedule: ScheduleCreate | Mapping[str, Any]) -> Schedule:
        return await self._send(
            _Call("POST", "/api/schedules", Schedule, body=_schedule_body(schedule))
        )

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return await self._send(_Call("GET", _schedule_path(schedule_id), Schedule))

    async def update_schedule(
        self, schedule_id: str, changes: ScheduleUpdate | Mapping[str, Any]
    ) -> Schedule:
        return await self._send(
            _Call("PUT", _schedule_path(schedule_id), Schedule, body=_schedule_body(changes))
        )

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._send(_Call("DELETE", _schedule_path(schedule_id), None))

    async def health(self) -> dict[str, Any]:
        return await self._send(_Call("GET", "/health", dict[str, Any]))
