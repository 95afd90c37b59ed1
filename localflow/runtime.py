"""Opens the store (SQLite or PostgreSQL, from --db) and runs the API server and/or the worker
until a signal stops them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
from collections.abc import Awaitable, Callable

import structlog

from localflow.lean import keep_dev_only_out
from shared.heap import freeze_start_up_objects
from shared.queue import Queue
from shared.settings import Settings, split_addr
from shared.store import open_store
from worker.task_identity import protect_process

log = structlog.get_logger("localflow")


class StartupFailed(Exception):
    """A reason this process cannot start, in one line a person can act on (the CLI logs it
    and exits 1)."""


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
    # The port first: a port that is taken fails in a moment, before any database work.
    listening = bind(settings.addr) if api else None
    try:
        await _run(settings, stop, listening, api=api, worker=worker)
    finally:
        if listening is not None:
            listening.close()


async def _run(
    settings: Settings, stop: asyncio.Event, listening: socket.socket | None, *, api: bool,
    worker: bool,
) -> None:
    if worker:
        # Task programs of this user may not read this process's environment or memory
        # through /proc (worker/task_identity.py).
        protect_process()
    # Opening may wait (for another process's lock, to migrate); a signal meanwhile stops it.
    opening = asyncio.create_task(open_queue(settings))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([opening, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not opening.done():
        opening.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await opening
        log.info("stopped during start-up, before the database was opened")
        return
    queue = opening.result()
    parts: list[Callable[[], Awaitable[None]]] = []
    worker_parts = _WorkerParts(queue, settings, api=api) if worker else None
    if api:
        extra = [worker_parts.metrics.registry] if worker_parts is not None else []
        assert listening is not None
        # Imported only here: Litestar, uvicorn, Jinja and the API's modules are most of an
        # API process's memory, and `localflow worker` needs none of them.
        keep_dev_only_out()  # before Litestar: it would load its pydantic and attrs plugins
        from localflow.http_server import serve_api

        parts.append(lambda: serve_api(queue, settings, stop, extra, listening))
    if worker_parts is not None:
        parts += [lambda run=run: run(stop) for run in worker_parts.runs]
    freeze_start_up_objects()  # imports and the parts above live as long as the process
    try:
        await _run_together(parts, stop)
    finally:
        if worker_parts is not None:
            await worker_parts.close()
        await queue.store.close()


class _WorkerParts:
    """What `worker` and `serve` run beside (or instead of) the API: the pool, its /health
    server, the cron scheduler and the webhook deliverer, and the worker's metrics.

    Imported only when a worker runs: `localflow api` needs none of these modules (the pool,
    the handlers, the scheduler, ...: ~1 MB of the API's memory, bench/README.md, "Session 4:
    API memory"), as `localflow worker` needs none of the API's."""

    def __init__(self, queue: Queue, settings: Settings, *, api: bool) -> None:
        from shared.schedules import Schedules
        from worker.handlers import close_http_clients
        from worker.health_server import HealthServer
        from worker.metrics import WorkerMetrics
        from worker.pool import Worker
        from worker.scheduler import Scheduler
        from worker.webhooks import Deliverer

        pool = Worker(queue, settings)
        # `serve`: the worker's metrics are part of the API's /metrics (one port, one scrape).
        # `worker`: they are served with the worker's /health on settings.metrics_addr.
        self.metrics = WorkerMetrics(
            process_metrics=not api,
            write_transactions=None if api else lambda: queue.store.write_transactions,
        )
        self.metrics.attach(pool)
        self.runs: list[Callable[[asyncio.Event], Awaitable[None]]] = [pool.run]
        if not api and settings.metrics_addr != "off":
            self.runs.append(HealthServer(queue, pool, settings, self.metrics.render).serve)
        # The cron scheduler lives beside the worker; any number may share one database.
        scheduler = Scheduler(Schedules(queue), settings)
        scheduler.on_fire = self.metrics.on_fire
        self.runs.append(scheduler.run)
        # Webhook deliveries (docs/webhooks.md) go out from every worker process.
        self.runs.append(Deliverer(queue.store, settings, queue.clock).run)
        self.close = close_http_clients


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


def bind(addr: str) -> socket.socket:
    """The API's listening socket, bound now so a taken port is one clear line and a quick
    exit (uvicorn's own bind raises SystemExit from inside the event loop, which left the
    process hanging on the database threads and deaf to SIGTERM)."""
    host, port = split_addr(addr)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupFailed(f"cannot listen on {addr}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            why = ("the port is taken by another program (another LocalFlow?); stop it, or "
                   "choose another port with --addr / LOCALFLOW_ADDR")
        raise StartupFailed(f"cannot listen on {addr}: {why}") from None
    return sock
