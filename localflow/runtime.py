"""Opens the store (SQLite or PostgreSQL, from --db) and runs the API server and/or the worker
until a signal stops them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog
import uvicorn

from api.app import create_app
from shared.queue import Queue
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store import open_store
from worker.handlers.http import close_client
from worker.health_server import HealthServer
from worker.metrics import WorkerMetrics
from worker.pool import Worker
from worker.scheduler import Scheduler
from worker.task_identity import protect_process

log = structlog.get_logger("localflow")


class _Server(uvicorn.Server):
    # We handle SIGTERM/SIGINT ourselves so one signal stops the API and the worker together.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def open_queue(settings: Settings) -> Queue:
    """Migrate and open settings.db; the queue wakes workers through the store's notifier."""
    store = await open_store(settings)
    log.info("database opened", engine=store.engine, db=store.describe())  # no password
    return Queue(store, settings=settings)


async def run(settings: Settings, *, api: bool, worker: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if worker:
        # Task programs of this user may not read this process's environment or memory
        # through /proc (worker/task_identity.py).
        protect_process()
    queue = await open_queue(settings)
    parts: list[Callable[[], Awaitable[None]]] = []
    pool = Worker(queue, settings) if worker else None
    # `serve`: the worker's metrics are part of the API's /metrics (one port, one scrape).
    # `worker`: they are served with the worker's /health on settings.metrics_addr.
    worker_metrics = WorkerMetrics(process_metrics=not api)
    if pool is not None:
        worker_metrics.attach(pool)
    if api:
        extra = [worker_metrics.registry] if pool is not None else []
        parts.append(lambda: _serve_api(queue, settings, stop, extra))
    if pool is not None:
        parts.append(lambda: pool.run(stop))
        if not api and settings.metrics_addr != "off":
            health = HealthServer(queue, pool, settings, worker_metrics.render)
            parts.append(lambda: health.serve(stop))
    if worker:
        # The cron scheduler lives beside the worker; any number may share one database.
        scheduler = Scheduler(Schedules(queue), settings)
        scheduler.on_fire = worker_metrics.on_fire
        parts.append(lambda: scheduler.run(stop))
    try:
        await _run_together(parts, stop)
    finally:
        await close_client()
        await queue.store.close()


async def _run_together(parts: list[Callable[[], Awaitable[None]]], stop: asyncio.Event) -> None:
    """Run every part; if one ends (or fails), stop the others."""
    tasks = [asyncio.create_task(p()) for p in parts]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _serve_api(
    queue: Queue, settings: Settings, stop: asyncio.Event, extra_metrics: list[Any]
) -> None:
    host, port = settings.host_port
    config = uvicorn.Config(
        create_app(queue, settings, extra_metrics=extra_metrics),
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
    )
    server = _Server(config)
    watcher = asyncio.create_task(_exit_on(stop, server))
    try:
        log.info("api listening", url=f"http://{settings.addr}")
        await server.serve()
        if not server.started:
            raise SystemExit(f"could not listen on {settings.addr}")
    finally:
        watcher.cancel()


async def _exit_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True
