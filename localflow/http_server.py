"""The API's HTTP server: uvicorn serving api.app on a socket localflow/runtime.py bound.
Its own module so that `localflow worker` never imports Litestar, uvicorn or Jinja."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import structlog
import uvicorn

from api.app import create_app
from localflow.http_protocol import OneWriteHttpProtocol
from localflow.idle_memory import release_when_idle
from localflow.runtime import StartupFailed
from shared.heap import collect_young_less_often, freeze_start_up_objects
from shared.queue import Queue
from shared.settings import Settings

log = structlog.get_logger("localflow")


class _Server(uvicorn.Server):
    # We handle SIGTERM/SIGINT ourselves so one signal stops the API and the worker together.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(
    queue: Queue, settings: Settings, stop: asyncio.Event, extra_metrics: list[Any],
    listening: socket.socket,
) -> None:
    host, port = settings.host_port
    app = create_app(queue, settings, extra_metrics=extra_metrics)
    freeze_start_up_objects()  # the built app is long-lived: out of the collector's way
    collect_young_less_often()  # many requests in flight: their live state is re-walked less
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,  # uvicorn's own lines go through shared/logs.py (JSON or console)
        lifespan="on",
        timeout_graceful_shutdown=10,
        # The client address is the peer's: LocalFlow trusts no X-Forwarded-For (behind a
        # proxy every client shares its address, docs/security.md), and uvicorn's proxy-header
        # layer cost ~6% of a submission's CPU.
        proxy_headers=False,
        # httptools, with a small answer's head and body in one write (localflow/http_protocol.py).
        http=OneWriteHttpProtocol,
    )
    server = _Server(config)
    # Requests parked on ?wait= answer, and event streams end, at once when stopping, rather
    # than hold it up.
    def release() -> None:
        app.state.task_watch.release()
        app.state.event_hub.release()

    watcher = asyncio.create_task(_exit_on(stop, server, release))
    # After a burst, give back the page caches and free heap it left (localflow/idle_memory.py).
    # Activity: requests uvicorn has parsed, and write transactions (the worker's too, in `serve`).
    idle = asyncio.create_task(release_when_idle(
        lambda: server.server_state.total_requests + queue.store.write_transactions,
        queue.store.release_memory, stop,
    ))
    try:
        bound_port = listening.getsockname()[1]  # the real one, also for --addr HOST:0
        shown = f"[{host}]" if ":" in host else host
        log.info("api listening", url=f"http://{shown}:{bound_port}")
        try:
            await server.serve(sockets=[listening])
        except SystemExit:  # uvicorn's way of saying start-up failed (already logged)
            raise StartupFailed(f"the API on {settings.addr} could not start") from None
        if not server.started:
            raise StartupFailed(f"the API on {settings.addr} could not start")
        log.info("api stopped", url=f"http://{settings.addr}")
    finally:
        watcher.cancel()
        idle.cancel()


async def _exit_on(
    stop: asyncio.Event, server: uvicorn.Server, before: Callable[[], None]
) -> None:
    await stop.wait()
    before()
    server.should_exit = True
