"""The API and dashboard in this process on a PostgreSQL store: the pages that read storage
facts and stats (/health, /metrics, the dashboard's overview and system pages) work, and none
shows the database password."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store import open_store, redact

LOCAL = "http://127.0.0.1:8080"


@pytest.fixture
async def pg_queue(pg_url: str) -> AsyncIterator[Queue]:
    settings = Settings(db=pg_url)
    store = await open_store(settings, migrate_first=False)
    yield Queue(store, settings=settings)
    await store.close()


async def test_health_metrics_and_dashboard_pages_on_postgresql(pg_queue: Queue, pg_url: str):
    task, _ = await pg_queue.enqueue(
        TaskCreate(type="shell", payload={"command": "echo", "args": ["x"]})
    )
    (claimed,) = await pg_queue.claim("w1", 1, 30)
    await pg_queue.complete(claimed, {"exit_code": 0})
    app = create_app(pg_queue)
    password = urlsplit(pg_url).password
    assert password
    async with AsyncTestClient(app, base_url=LOCAL) as http:
        health = await http.get("/health")
        metrics = await http.get("/metrics")
        system = await http.get("/dashboard/system")
        overview = await http.get("/dashboard")
        got = await http.get(f"/api/tasks/{task.id}")
    assert health.status_code == 200, health.text
    assert metrics.status_code == 200
    assert 'localflow_tasks{status="succeeded"} 1.0' in metrics.text
    assert system.status_code == 200 and "PostgreSQL" in system.text
    assert redact(pg_url) in system.text
    assert overview.status_code == 200
    assert got.json()["status"] == "succeeded"
    for response in (health, metrics, system, overview, got):
        assert password not in response.text
