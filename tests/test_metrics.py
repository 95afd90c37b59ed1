"""Metrics and health: the API's /metrics (requests by route template; queue state read from the
database at scrape time) and the worker's own /health and /metrics endpoint."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import httpx
import msgspec
import pytest
import structlog
from litestar.testing import AsyncTestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.metrics import RequestStats
from shared.queue import Queue
from shared.schedules import Fire
from shared.schemas import TaskCreate
from shared.settings import Settings
from tests import procs
from worker.health_server import HealthServer
from worker.metrics import WorkerMetrics
from worker.pool import Worker

TOKEN = "metrics-test-token-0123456789"
METRICS_TOKEN = "worker-metrics-token-9876543210"

# Without a token the app answers only to loopback names (api/browser_guard.py).
LOCAL = "http://127.0.0.1"


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a Prometheus text page (which must parse)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return parse(text).get((name, frozenset(labels.items())))


def shell(command: str = "true", *args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": command, "args": list(args)}, **fields)


def wait_until(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


# -- the API's /metrics, in this process with a fake clock -----------------------------------


async def test_queue_depth_and_oldest_age_are_read_from_the_database(queue: Queue, clock):
    app = create_app(queue)
    app.state.metrics.state.min_refresh = 0  # every scrape reads
    async with AsyncTestClient(app, base_url=LOCAL) as http:
        empty = (await http.get("/metrics")).text
        assert value(empty, "localflow_queue_oldest_task_age_seconds") == 0
        assert value(empty, "localflow_tasks", status="queued") == 0

        await queue.enqueue(shell(priority=1))  # claimed first, below
        await queue.enqueue(shell())
        await queue.enqueue(TaskCreate(type="http", payload={"url": "http://127.0.0.1:9/"}))
        await queue.enqueue(shell(delay=3600))  # queued, but not runnable for an hour
        [running] = await queue.claim("w1", 1, 30)
        assert running.type == "shell"
        clock.advance(42)

        text = (await http.get("/metrics")).text
    assert value(text, "localflow_queue_depth", status="queued", type="shell") == 2
    assert value(text, "localflow_queue_depth", status="queued", type="http") == 1
    assert value(text, "localflow_queue_depth", status="running", type="shell") == 1
    assert value(text, "localflow_tasks", status="queued") == 3
    assert value(text, "localflow_tasks", status="succeeded") == 0
    # The oldest runnable task waited 42 s; the delayed one does not count.
    assert value(text, "localflow_queue_oldest_task_age_seconds") == pytest.approx(42)
    assert value(text, "localflow_db_write_transactions_total") >= 1


async def test_scrapes_close_together_share_one_read(queue: Queue):
    app = create_app(queue)
    async with AsyncTestClient(app, base_url=LOCAL) as http:
        first = (await http.get("/metrics")).text
        await queue.enqueue(shell())
        second = (await http.get("/metrics")).text  # within MIN_REFRESH: the same reads
        app.state.metrics.state.min_refresh = 0
        third = (await http.get("/metrics")).text
    assert value(first, "localflow_tasks", status="queued") == 0
    assert value(second, "localflow_tasks", status="queued") == 0
    assert value(third, "localflow_tasks", status="queued") == 1


async def test_each_app_has_its_own_registry(queue: Queue):
    one, two = create_app(queue), create_app(queue)  # no "Duplicated timeseries" error
    async with AsyncTestClient(one, base_url=LOCAL) as http:
        assert (await http.get("/api/tasks")).status_code == 200
        text_one = (await http.get("/metrics")).text
    async with AsyncTestClient(two, base_url=LOCAL) as http:
        text_two = (await http.get("/metrics")).text
    key = {"method": "GET", "route": "/api/tasks", "status": "200"}
    assert value(text_one, "localflow_http_requests_total", **key) == 1
    assert value(text_two, "localflow_http_requests_total", **key) is None


async def test_worker_registry_is_folded_into_api_metrics(queue: Queue):
    wm = WorkerMetrics(process_metrics=False)
    wm.slots.set(3)
    app = create_app(queue, extra_metrics=[wm.registry])
    async with AsyncTestClient(app, base_url=LOCAL) as http:
        text = (await http.get("/metrics")).text
    assert value(text, "localflow_worker_slots") == 3
    assert value(text, "process_cpu_seconds_total") is not None  # once, from the API's side


def test_request_histogram_buckets_are_cumulative_and_inclusive():
    stats = RequestStats((0.001, 0.01))
    for seconds in (0.001, 0.005, 0.005, 20.0):
        stats.observe("GET", "/health", 200, seconds)
    registry = CollectorRegistry()
    registry.register(stats)
    text = generate_latest(registry).decode()
    key = {"method": "GET", "route": "/health", "status": "200"}
    bucket = "localflow_http_request_duration_seconds_bucket"
    assert value(text, bucket, le="0.001", **key) == 1  # le is "less than or equal"
    assert value(text, bucket, le="0.01", **key) == 3
    assert value(text, bucket, le="+Inf", **key) == 4
    total = value(text, "localflow_http_request_duration_seconds_sum", **key)
    assert total == pytest.approx(20.011)
    assert value(text, "localflow_http_requests_total", **key) == 4


# -- the API's /metrics on a real `localflow serve` -----------------------------------------


def test_requests_are_counted_by_route_template_never_raw_path(client: httpx.Client):
    ids = ["01AAAAAAAAAAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBBBBBBBBBB"]
    for task_id in ids:
        assert client.get(f"/api/tasks/{task_id}").status_code == 404
    assert client.get("/no/such/secret-path").status_code == 404
    r = client.post("/api/tasks", json={"type": "shell", "payload": {"command": "echo"}})
    assert r.status_code == 201
    procs.wait_for_status(client, r.json()["id"], {"succeeded"})

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert value(text, "localflow_http_requests_total", method="GET",
                 route="/api/tasks/{task_id}", status="404") == 2
    assert value(text, "localflow_http_request_duration_seconds_count", method="GET",
                 route="/api/tasks/{task_id}", status="404") == 2
    assert value(text, "localflow_http_requests_total", method="GET", route="unmatched",
                 status="404") == 1
    assert value(text, "localflow_http_requests_total", method="POST", route="/api/tasks",
                 status="201") == 1
    for raw in (*ids, "secret-path"):
        assert raw not in text
    # `serve` runs the worker in the same process: its metrics are on this page too.
    assert value(text, "localflow_worker_tasks_started_total", type="shell") == 1
    assert value(text, "localflow_worker_tasks_succeeded_total", type="shell") == 1
    assert value(text, "localflow_worker_slots") == 8
    assert value(text, "localflow_workers_alive") == 1


# -- the worker's endpoint: real `localflow api` + `localflow worker` processes ------------


@pytest.mark.e2e
def test_worker_process_serves_health_and_metrics_on_its_own_port(tmp_path):
    db = tmp_path / "lf.db"
    port = procs.free_port()
    env = {"LOCALFLOW_API_TOKEN": TOKEN}
    # The worker needs no API token; its /metrics has a token of its own.
    worker = procs.start("worker", db, env={
        "LOCALFLOW_METRICS_TOKEN": METRICS_TOKEN, "LOCALFLOW_METRICS_ADDR": f"127.0.0.1:{port}",
    })
    api = procs.start("api", db, env=env)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, what="worker /health")
        health = httpx.get(f"{base}/health").json()  # open: no token needed
        assert health["status"] == "ok" and health["schema_version"] >= 1
        assert health["worker"]["running"] is True and health["worker"]["slots"] == 8

        with httpx.Client(base_url=api.url, headers=auth, timeout=10) as c:
            def submit(command: str, *args: str, **fields) -> str:
                body = {"type": "shell", "payload": {"command": command, "args": list(args)}}
                r = c.post("/api/tasks", json={**body, **fields})
                assert r.status_code == 201, r.text
                return r.json()["id"]

            ok = submit("echo", "hi")
            failed = submit("false", max_attempts=1)
            submit("false", max_attempts=2)  # fails once, then is retried
            slow = submit("sleep", "30")
            timed_out = submit("sleep", "30", timeout=1, max_attempts=1)
            procs.wait_for_status(c, ok, {"succeeded"})
            procs.wait_for_status(c, failed, {"failed"})
            procs.wait_for_status(c, timed_out, {"failed"})
            procs.wait_for_status(c, slow, {"running"})
            assert c.post(f"/api/tasks/{slow}/cancel").status_code == 200
            procs.wait_for_status(c, slow, {"cancelled"})

            def scrape() -> str:
                r = httpx.get(f"{base}/metrics",
                              headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
                assert r.status_code == 200
                return r.text

            wait_until(lambda: value(scrape(), "localflow_worker_tasks_retried_total",
                                     type="shell") == 1, what="the first attempt to be retried")
            text = scrape()
            api_text = c.get("/metrics").text
        assert value(text, "localflow_worker_tasks_started_total", type="shell") >= 5
        assert value(text, "localflow_worker_tasks_succeeded_total", type="shell") == 1
        assert value(text, "localflow_worker_tasks_failed_total", type="shell") == 2
        assert value(text, "localflow_worker_tasks_timed_out_total", type="shell") == 1
        assert value(text, "localflow_worker_tasks_cancelled_total", type="shell") == 1
        assert value(text, "localflow_worker_task_duration_seconds_count", type="shell",
                     outcome="succeeded") == 1
        assert value(text, "localflow_worker_task_wait_seconds_count", type="shell") >= 4
        assert value(text, "localflow_worker_claim_duration_seconds_count") >= 1
        assert value(text, "localflow_worker_claimed_tasks_total") >= 4
        assert value(text, "localflow_worker_slots") == 8
        assert value(text, "localflow_worker_tasks_in_flight") is not None
        assert value(text, "localflow_scheduler_lateness_seconds_count") == 0
        assert value(text, "process_resident_memory_bytes") > 0
        # The API process runs no worker: its page has no worker metrics.
        assert "localflow_worker_tasks_started_total" not in api_text
        assert value(api_text, "localflow_tasks", status="succeeded") == 1

        # A token guards /metrics on both ports, answered alike (tests/test_auth.py has the
        # details); /health stays open.
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics",
                         headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{base}/metrics", headers=auth).status_code == 401  # not the API's
        assert httpx.get(f"{api.url}/metrics").status_code == 401
        assert httpx.get(f"{base}/nope").status_code == 404
        assert httpx.post(f"{base}/health").status_code == 405
    finally:
        api.stop()
        assert worker.stop() == 0
    assert TOKEN not in worker.log() + api.log()
    assert METRICS_TOKEN not in worker.log() + api.log()


# -- the worker's endpoint, in this process -------------------------------------------------


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not check():
            await asyncio.sleep(0.01)


async def test_worker_health_follows_the_loop_and_the_database(queue: Queue, settings):
    worker = Worker(queue, settings)
    health = HealthServer(queue, worker, settings, lambda: b"")
    status, body = await health.health()
    assert status == 503 and "worker loop is not running" in body["error"]

    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await _until(lambda: worker.running)
    status, body = await health.health()
    assert status == 200, body
    assert body["worker"]["running"] is True

    worker.last_loop -= health.stuck_after + 1  # as if the loop hung
    status, body = await health.health()
    assert status == 503 and "has not gone round" in body["error"]

    stop.set()
    await run
    await queue.store.close()
    status, body = await health.health()
    assert status == 503
    assert "worker loop is not running" in body["error"] and "database" in body["error"]


async def test_worker_endpoint_speaks_plain_http(queue: Queue, settings):
    port = procs.free_port()
    settings = msgspec.structs.replace(settings, metrics_token=TOKEN,
                                       metrics_addr=f"127.0.0.1:{port}")
    wm = WorkerMetrics(process_metrics=False)
    wm.slots.set(5)
    worker = Worker(queue, settings)
    stop = asyncio.Event()
    serving = asyncio.create_task(HealthServer(queue, worker, settings, wm.render).serve(stop))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            async with asyncio.timeout(60):
                while True:
                    try:
                        first = await http.get("/health")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.01)
            assert first.status_code == 503  # the loop is not running
            assert first.json()["status"] == "unavailable"
            denied = await http.get("/metrics")
            assert denied.status_code == 401
            assert denied.headers["content-type"] == "application/problem+json"
            assert "Bearer" in denied.json()["detail"]
            ok = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200
            assert value(ok.text, "localflow_worker_slots") == 5
            head = await http.head("/health")
            assert head.status_code == 503 and head.content == b""
            assert (await http.get("/metrics?x=1", headers={
                "Authorization": f"Bearer {TOKEN}"})).status_code == 200
            assert (await http.delete("/health")).headers["allow"] == "GET, HEAD"

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"this is not http\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 ")
    finally:
        stop.set()
        await serving


async def test_a_taken_metrics_port_is_logged_not_fatal(queue: Queue, settings):
    with socket.socket() as taken, structlog.testing.capture_logs() as logged:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        settings = msgspec.structs.replace(settings, metrics_addr=addr)
        stop = asyncio.Event()
        serving = asyncio.create_task(
            HealthServer(queue, Worker(queue, settings), settings, lambda: b"").serve(stop)
        )
        await _until(lambda: any(e["log_level"] == "error" for e in logged))
        assert not serving.done()  # still running: the worker is not taken down
        stop.set()
        await serving
    [error] = [e for e in logged if e["log_level"] == "error"]
    assert error["addr"] == addr and "LOCALFLOW_METRICS_ADDR" in error["event"]


def test_scheduler_fires_and_lateness_reach_the_worker_metrics():
    wm = WorkerMetrics(process_metrics=False)
    wm.on_fire(Fire(schedule_id="s1", fire_time=0.0, outcome="missed", late=2.5))
    wm.on_fire(Fire(schedule_id="s1", fire_time=0.0, outcome="fired", late=0.5))
    text = wm.render().decode()
    assert value(text, "localflow_scheduler_lateness_seconds_count") == 2
    assert value(text, "localflow_scheduler_lateness_seconds_sum") == pytest.approx(3.0)
    assert value(text, "localflow_scheduler_fires_total", outcome="fired") == 1
    assert value(text, "localflow_scheduler_fires_total", outcome="missed") == 1


def test_settings_accept_off_and_reject_a_bad_metrics_addr():
    from shared.settings import settings_from

    assert settings_from({"LOCALFLOW_METRICS_ADDR": "off"}).metrics_addr == "off"
    with pytest.raises(ValueError, match="LOCALFLOW_METRICS_ADDR"):
        settings_from({"LOCALFLOW_METRICS_ADDR": "nowhere"})
    assert Settings().metrics_addr == "127.0.0.1:9091"
