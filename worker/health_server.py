"""The worker's own HTTP endpoint (settings.metrics_addr): GET /health and GET /metrics.

A deliberately tiny HTTP/1.1 server on asyncio streams, one request per connection: the
worker container needs no web framework for two read-only routes, and it runs in the worker's
own event loop, so a /health answer also proves that loop is not stuck.

/health: 200 when the database answers and is migrated and the worker loop goes round;
503 with the reason otherwise. Always open (Docker's healthcheck calls it).
/metrics: Prometheus text; needs `Authorization: Bearer <LOCALFLOW_METRICS_TOKEN>` when that is
set, answered exactly as the API answers its own token (shared/tokens.py: 401 with a Bearer
challenge, 429 after too many wrong tokens from one address). The worker needs no API token: it
never calls the API, and a secret the worker does not hold cannot leak to its tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import structlog
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from shared.health import database_health
from shared.queue import Queue
from shared.settings import Settings, is_loopback, split_addr
from shared.tokens import FailureThrottle, authenticate
from worker.pool import Worker

log = structlog.get_logger("localflow.worker")

MAX_REQUEST_LINE = 8192
MAX_HEADERS = 100
READ_TIMEOUT = 5.0
DB_TIMEOUT = 2.0
_REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 400: "Bad Request", 429: "Too Many Requests",
            503: "Service Unavailable"}


class HealthServer:
    def __init__(
        self, queue: Queue, worker: Worker, settings: Settings, render_metrics: Callable[[], bytes]
    ) -> None:
        self.queue = queue
        self.worker = worker
        self.settings = settings
        self.render_metrics = render_metrics
        # The loop goes round at least every poll interval; a claim can wait on a busy
        # database for a while. Past this, the loop counts as stuck.
        self.stuck_after = max(30.0, 4 * settings.poll)
        self.throttle = FailureThrottle(limit=settings.auth_failures)

    async def serve(self, stop: asyncio.Event) -> None:
        """Listen on settings.metrics_addr until stop is set.

        A port already taken (say, a second worker on one machine) is logged as an error, not
        fatal: the worker's job is running tasks, and an orchestrator probing /health notices.
        """
        host, port = split_addr(self.settings.metrics_addr)
        try:
            server = await asyncio.start_server(
                self._connection, host, port, limit=MAX_REQUEST_LINE
            )
        except OSError as exc:
            log.error(
                "worker /health and /metrics are off: could not listen; set "
                "LOCALFLOW_METRICS_ADDR (--metrics-addr) to a free HOST:PORT, or to 'off'",
                addr=self.settings.metrics_addr, error=exc.strerror or str(exc),
            )
            await stop.wait()
            return
        if not is_loopback(host) and not self.settings.metrics_token:
            log.warning("worker /metrics is reachable beyond loopback without a metrics token",
                        addr=self.settings.metrics_addr)
        log.info("worker health and metrics listening", url=f"http://{self.settings.metrics_addr}")
        async with server:
            await stop.wait()

    async def health(self) -> tuple[int, dict[str, object]]:
        body: dict[str, object] = {"status": "ok"}
        problems: list[str] = []
        db = await database_health(self.queue.store, DB_TIMEOUT)
        if db.schema_version is not None:
            body["schema_version"] = db.schema_version
        if db.problem is not None:
            problems.append(db.problem)
        w = self.worker
        silent = time.monotonic() - w.last_loop
        body["worker"] = {"id": w.id, "running": w.running, "in_flight": len(w.inflight),
                          "slots": w.slots}
        if not w.running:
            problems.append("worker loop is not running")
        elif silent > self.stuck_after:
            problems.append(f"worker loop has not gone round for {silent:.0f}s")
        if problems:
            body["status"] = "unavailable"
            body["error"] = "; ".join(problems)
        return (503 if problems else 200), body

    # -- HTTP ----------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    method, path, headers = await _read_request(reader)
            except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                await _respond(writer, 400, *_problem(400, "malformed HTTP request"))
                return
            peer = writer.get_extra_info("peername")
            client = str(peer[0]) if peer else "unknown"
            status, content_type, body, extra = await self._route(method, path, headers, client)
            if status == 405:
                extra = {"Allow": "GET, HEAD"}
            await _respond(writer, status, content_type, body, extra, head_only=method == "HEAD")
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("worker health endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], client: str
    ) -> tuple[int, str, bytes, dict[str, str]]:
        if path not in ("/health", "/metrics"):
            detail = f"no route {path}; this endpoint serves /health and /metrics"
            return 404, *_problem(404, detail), {}
        if method not in ("GET", "HEAD"):
            return 405, *_problem(405, f"{method} is not allowed here; use GET"), {}
        if path == "/health":
            status, body = await self.health()
            return status, "application/json", json.dumps(body).encode(), {}
        token = self.settings.metrics_token
        if token:
            denial = authenticate(
                headers.get("authorization"), token, client, self.throttle, time.monotonic()
            )
            if denial is not None:
                return denial.status, *_problem(denial.status, denial.detail), denial.headers
        return 200, CONTENT_TYPE_PLAIN_0_0_4, self.render_metrics(), {}


def _problem(status: int, detail: str) -> tuple[str, bytes]:
    body = {"type": "about:blank", "title": _REASONS.get(status, "Error"), "status": status,
            "detail": detail}
    return "application/problem+json", json.dumps(body).encode()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    line = (await reader.readuntil(b"\n")).decode("latin-1").strip()
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(line)
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        raw = (await reader.readuntil(b"\n")).decode("latin-1").strip()
        if not raw:
            return parts[0].upper(), parts[1].split("?", 1)[0], headers
        name, sep, value = raw.partition(":")
        if not sep:
            raise ValueError(raw)
        headers[name.strip().lower()] = value.strip()
    raise ValueError("too many headers")


async def _respond(
    writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes,
    extra: dict[str, str] | None = None, *, head_only: bool = False,
) -> None:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            "Connection: close", "Cache-Control: no-store"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(body)
    await writer.drain()
