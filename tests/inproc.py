"""LocalFlow in this process: the API app, a worker and the scheduler on a real SQLite file,
and an HTTP client that talks to the app without a socket.

What `localflow serve` composes (localflow/runtime.py), minus the HTTP server and the signal
handling: tests of routes, the dashboard and the client get the real app, the real queue and
real task runs on a real database file, without paying for a process start and without being
e2e tests. Anything that needs a real port or a real process (signals, a task that calls the
server back over HTTP, the CLI client) uses tests/procs.py and the e2e marker instead.

This is the one place that composes it: when the composition changes, only this file does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import start_blocking_portal
from litestar.testing import TestClient

from api.app import create_app
from localflow.runtime import open_queue
from shared.schedules import Schedules
from shared.settings import Settings, settings_from
from worker.handlers.http import close_client
from worker.metrics import WorkerMetrics
from worker.pool import Worker
from worker.scheduler import Scheduler
from worker.webhooks import Deliverer


@contextlib.contextmanager
def serving(
    db: Path, env: dict[str, str] | None = None, *, worker: bool = True, token: str | None = None,
) -> Iterator[TestClient[Any]]:
    """`localflow serve` on db in this process: a client for its app (an httpx.Client) that
    knows its database file (`client.db_path`) and its settings (`client.settings`).

    env: LOCALFLOW_* settings, as a process would read them. worker=False: the API alone.
    token: sent as a bearer token on every request.
    """
    settings = settings_from({**(env or {}), "LOCALFLOW_DB": str(db)})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with start_blocking_portal(backend="asyncio") as portal:
        queue = portal.call(open_queue, settings)
        stop: asyncio.Event = portal.call(_event)
        running = []
        extra_metrics = []
        if worker:
            pool = Worker(queue, settings)
            scheduler = Scheduler(Schedules(queue), settings)
            # As in `serve`: the worker's metrics are on the API's /metrics.
            worker_metrics = WorkerMetrics(process_metrics=False).attach(pool)
            scheduler.on_fire = worker_metrics.on_fire
            extra_metrics = [worker_metrics.registry]
            deliverer = Deliverer(queue.store, settings, queue.clock)
            running = [portal.start_task_soon(pool.run, stop),
                       portal.start_task_soon(scheduler.run, stop),
                       portal.start_task_soon(deliverer.run, stop)]
        try:
            # The Host a browser would send to this address: the app's DNS-rebinding guard
            # checks it. Nothing listens there; requests go straight to the app.
            client: TestClient[Any] = TestClient(
                create_app(queue, settings, extra_metrics=extra_metrics),
                base_url=f"http://{settings.addr}", raise_server_exceptions=False, timeout=30,
            )
            client.follow_redirects = False  # as httpx.Client: a test sees the redirect itself
            client.headers.update(headers)
            client.blocking_portal = portal  # the app runs on the loop the queue was opened on
            with client:
                client.db_path = db  # type: ignore[attr-defined]
                client.settings = settings  # type: ignore[attr-defined]
                yield client
        finally:
            portal.call(_set, stop)
            for future in running:
                future.result(timeout=60)
            portal.call(close_client)
            portal.call(queue.store.close)


@contextlib.asynccontextmanager
async def serving_async(
    db: Path, env: dict[str, str] | None = None, *, worker: bool = True,
) -> AsyncIterator[tuple[str, httpx.AsyncBaseTransport]]:
    """The same on the running event loop, for asyncio tests: (base URL, an ASGI transport)."""
    settings = settings_from({**(env or {}), "LOCALFLOW_DB": str(db)})
    queue = await open_queue(settings)
    stop = asyncio.Event()
    running = []
    if worker:
        running = [asyncio.create_task(Worker(queue, settings).run(stop)),
                   asyncio.create_task(Scheduler(Schedules(queue), settings).run(stop)),
                   asyncio.create_task(Deliverer(queue.store, settings, queue.clock).run(stop))]
    try:
        yield f"http://{settings.addr}", httpx.ASGITransport(app=create_app(queue, settings))
    finally:
        stop.set()
        await asyncio.gather(*running)
        await close_client()
        await queue.store.close()


def transport(client: TestClient[Any]) -> httpx.BaseTransport:
    """The in-process transport of a `serving` client, for another httpx-based client."""
    return _Borrowed(client._transport)


class _Borrowed(httpx.BaseTransport):
    """Another client's transport: used, not closed (the `serving` client owns it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)


async def _event() -> asyncio.Event:
    return asyncio.Event()


async def _set(event: asyncio.Event) -> None:
    event.set()


def settings_of(client: TestClient[Any]) -> Settings:
    return client.settings  # type: ignore[attr-defined]
