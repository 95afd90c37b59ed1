"""/metrics by queue (issue 13 item 6): unfinished tasks, pause and limit per queue, with the
queue label bounded (METRIC_QUEUES named, the rest summed as "(other)")."""

from __future__ import annotations

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.metrics import METRIC_QUEUES, OTHER_QUEUES
from shared.queue import Queue
from shared.queue_schemas import QueueUpdate
from shared.queues import Queues
from shared.schemas import TaskCreate
from tests.test_metrics import LOCAL, value


def shell(**fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "true"}, **fields)


def samples_of(text: str, name: str) -> dict[frozenset, float]:
    return {frozenset(s.labels.items()): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name}


async def test_tasks_pause_and_limit_by_queue(queue: Queue):
    app = create_app(queue)
    app.state.metrics.state.min_refresh = 0
    async with AsyncTestClient(app, base_url=LOCAL) as http:
        empty = (await http.get("/metrics")).text
        # `default` is there from the start, at 0: a graph shows 0, not "No data".
        assert value(empty, "localflow_queue_tasks", queue="default", status="queued") == 0
        assert value(empty, "localflow_queue_paused", queue="default") == 0

        for _ in range(3):
            await queue.enqueue(shell(queue="reports"))
        await queue.enqueue(shell())
        await queue.claim("w1", 1, 30, queues=["reports"])
        await Queues(queue).update("reports", QueueUpdate(paused=True))
        await Queues(queue).update("mail", QueueUpdate(concurrency=4))
        text = (await http.get("/metrics")).text
    assert value(text, "localflow_queue_tasks", queue="reports", status="queued") == 2
    assert value(text, "localflow_queue_tasks", queue="reports", status="running") == 1
    assert value(text, "localflow_queue_tasks", queue="default", status="queued") == 1
    assert value(text, "localflow_queue_tasks", queue="mail", status="queued") == 0
    assert value(text, "localflow_queue_paused", queue="reports") == 1
    assert value(text, "localflow_queue_paused", queue="mail") == 0
    assert value(text, "localflow_queue_concurrency_limit", queue="mail") == 4
    # No limit, no sample (not a made-up number).
    assert value(text, "localflow_queue_concurrency_limit", queue="reports") is None
    # The old family still sums every queue.
    assert value(text, "localflow_queue_depth", status="queued", type="shell") == 3


async def test_the_queue_label_is_bounded(queue: Queue):
    """Many queues: METRIC_QUEUES get a label (default, those with settings, then the biggest
    backlogs); the rest are summed under "(other)", so nothing is lost from the totals."""
    app = create_app(queue)
    app.state.metrics.state.min_refresh = 0
    many = METRIC_QUEUES + 15
    for i in range(many):
        for _ in range(1 + (i % 3)):
            await queue.enqueue(shell(queue=f"q{i:03d}"))
    await Queues(queue).update("q034", QueueUpdate(paused=True))  # a small one with settings
    async with AsyncTestClient(app, base_url=LOCAL) as http:
        text = (await http.get("/metrics")).text
    queued = {dict(labels)["queue"]: n
              for labels, n in samples_of(text, "localflow_queue_tasks").items()
              if dict(labels)["status"] == "queued"}
    assert len(queued) == METRIC_QUEUES + 1  # the named ones and "(other)"
    assert "default" in queued and "q034" in queued and OTHER_QUEUES in queued
    total = sum(1 + (i % 3) for i in range(many))
    assert sum(queued.values()) == total
    named_backlogs = sorted((n for q, n in queued.items()
                             if q not in ("default", "q034", OTHER_QUEUES)), reverse=True)
    assert named_backlogs[0] == 3 and all(n >= 2 for n in named_backlogs)  # biggest first
    assert len(samples_of(text, "localflow_queue_paused")) == METRIC_QUEUES
