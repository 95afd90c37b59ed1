"""The worker's /metrics show retention: the settings, the tasks this process pruned, and the
database size as of its last prune pass."""

from __future__ import annotations

import msgspec

from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from worker.metrics import WorkerMetrics
from worker.pool import Worker


async def test_retention_metrics(queue: Queue, clock, settings: Settings):
    cfg = Settings(**{**msgspec.structs.asdict(settings), "retain_succeeded": 3600.0,
                      "retain_failed": 0.0})
    worker = Worker(queue, cfg, clock=clock)
    metrics = WorkerMetrics(process_metrics=False).attach(worker)
    text = metrics.render().decode()
    assert 'localflow_retention_seconds{status="succeeded"} 3600.0' in text
    assert 'localflow_retention_seconds{status="failed"} 0.0' in text
    assert "localflow_database_bytes" not in text  # no pass yet: no stale number

    for _ in range(3):
        await queue.enqueue(TaskCreate(type="shell", payload={"command": "true"}))
    for c in await queue.claim("w", 3, lease=30):
        await queue.complete(c, None)
    clock.advance(7200)
    assert await worker.pruner.prune_once() == 3
    text = metrics.render().decode()
    assert 'localflow_tasks_pruned_total{status="succeeded"} 3.0' in text
    size = next(line for line in text.splitlines() if line.startswith("localflow_database_bytes"))
    assert float(size.split()[1]) > 0
