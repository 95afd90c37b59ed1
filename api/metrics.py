"""GET /metrics: Prometheus text for the API process.

- Requests and latency by route template (never the raw path), method and status, counted by
  api/observe.py for every request at the cost of a few dictionary lookups.
- Queue state (depth by status and type, and by named queue with each queue's pause and
  limit; age of the oldest runnable task, live workers),
  read from the store when Prometheus scrapes: no request ever pays for it. The store runs
  them apart from API reads (SQLite: a connection of their own), so a slow count on a big
  table never delays an API read; scrapes within MIN_REFRESH of each other share one set.

Each app gets its own CollectorRegistry (not prometheus-client's global one), so tests can
build several apps in one process. In `serve`, the worker's registry is folded in here.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import accumulate
from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from shared.queue import Queue
from shared.queue_schemas import QueueGate
from shared.schemas import DEFAULT_QUEUE, PAYLOAD_TYPES, STATUSES
from shared.store.base import Depth

REQUEST_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10)
UNFINISHED = ("queued", "running")  # the statuses localflow_queue_depth reports
MIN_REFRESH = 1.0  # seconds: scrapes closer together than this share one set of reads
# Named queues are open-ended (anyone may submit to a new name), so the queue label is
# bounded: at most METRIC_QUEUES queues get a label of their own (`default`, then those with
# a limit or a pause, then the biggest backlogs); the rest are summed under OTHER_QUEUES, a
# value no queue can have (parentheses are not allowed in queue names). docs/queues.md.
METRIC_QUEUES = 20
OTHER_QUEUES = "(other)"
# The classic text format every Prometheus reads (Litestar adds the charset).
TEXT_FORMAT = "text/plain; version=0.0.4"
# No `*_created` series next to every counter and histogram: noise for a dashboard.
disable_created_metrics()


class ApiMetrics:
    def __init__(self, queue: Queue, extra: Iterable[CollectorRegistry] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.requests = RequestStats(REQUEST_SECONDS)
        self.registry.register(self.requests)
        self.state = QueueState(queue)
        self.registry.register(self.state)
        for registry in extra:
            self.registry.register(_Forward(registry))
        self.observe = self.requests.observe

    async def render(self) -> bytes:
        await self.state.refresh()
        return generate_latest(self.registry)

    async def close(self) -> None:
        """Nothing to release: the store owns its connections (kept for the app's shutdown)."""


class RequestStats(Collector):
    """Requests and latency by (method, route template, status), in plain Python numbers.

    Every request is observed on the event-loop thread, and scrapes render there too, so no
    lock is needed; prometheus-client's Counter and Histogram take one on every update, which
    made up most of the per-request cost. Prometheus sees an ordinary counter and histogram.
    """

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._les = [floatToGoString(b) for b in (*self.bounds, math.inf)]
        # key -> [count, sum of seconds, per-bucket counts (not cumulative; last is +Inf)]
        self._series: dict[tuple[str, str, int], list[Any]] = {}
        self.in_flight = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[(method, route, status)] = [0, 0.0, [0] * len(self._les)]
        series[0] += 1
        series[1] += seconds
        series[2][bisect_left(self.bounds, seconds)] += 1  # le is inclusive

    def collect(self) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        requests = CounterMetricFamily(
            "localflow_http_requests", "HTTP requests answered, by route template",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "localflow_http_request_duration_seconds",
            "Time from request to the end of the response, by route template", labels=labels,
        )
        for (method, route, status), (count, total, buckets) in list(self._series.items()):
            values = [method, route, str(status)]
            requests.add_metric(values, count)
            latency.add_metric(
                values, buckets=list(zip(self._les, accumulate(buckets), strict=True)),
                sum_value=total,
            )
        yield requests
        yield latency
        yield GaugeMetricFamily(
            "localflow_http_requests_in_flight", "HTTP requests being handled now",
            value=self.in_flight,
        )


class QueueState(Collector):
    """Queue depth, oldest runnable task and live workers, as of the last refresh()."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._lock = asyncio.Lock()
        self._refreshed = float("-inf")
        self._live: list[Depth] = []
        self._gates: list[QueueGate] = []
        self._totals: dict[str, int] = {}
        self._oldest_age = 0.0
        self._workers = 0
        self._read_seconds = 0.0
        self.min_refresh = MIN_REFRESH

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._refreshed < self.min_refresh:
                return
            began = time.perf_counter()
            now = self.queue.clock.now()
            # A worker heartbeats every lease/3 at most; two missed leases mean it is gone.
            stats = await self.queue.store.queue_stats(now, now - 2 * self.queue.settings.lease)
            self._live = stats.depth
            self._gates = stats.queue_settings
            self._totals = stats.totals
            run_at = stats.oldest_runnable_at
            self._oldest_age = 0.0 if run_at is None else max(0.0, now - run_at)
            self._workers = stats.workers_alive
            self._refreshed = time.monotonic()
            self._read_seconds = time.perf_counter() - began

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "localflow_queue_depth", "Unfinished tasks by status (queued, running) and type",
            labels=["status", "type"],
        )
        # A sample for every status and known type even at 0: an empty queue must graph as
        # 0, not as "No data". Types the database holds beyond those are added as they come.
        counts = {(status, t): 0 for status in UNFINISHED for t in PAYLOAD_TYPES}
        for row in self._live:  # one row per (status, type, queue): summed over queues
            counts[(row.status, row.type)] = counts.get((row.status, row.type), 0) + row.count
        for (status, task_type), count in sorted(counts.items()):
            depth.add_metric([status, task_type], count)
        yield depth
        yield from self._by_queue()
        totals = GaugeMetricFamily(
            "localflow_tasks", "Tasks in the database by status, finished ones included",
            labels=["status"],
        )
        for status in STATUSES:
            totals.add_metric([status], self._totals.get(status, 0))
        yield totals
        yield GaugeMetricFamily(
            "localflow_queue_oldest_task_age_seconds",
            "How long the longest-waiting runnable queued task has been waiting (0 if none)",
            value=self._oldest_age,
        )
        yield GaugeMetricFamily(
            "localflow_workers_alive", "Workers that heartbeated recently, in any process",
            value=self._workers,
        )
        yield GaugeMetricFamily(
            "localflow_metrics_queue_read_seconds",
            "How long the last scrape's database reads took", value=self._read_seconds,
        )
        yield CounterMetricFamily(
            "localflow_db_write_transactions",
            "Write transactions this process committed (each may carry many writes)",
            value=self.queue.store.write_transactions,
        )


    def _by_queue(self) -> Iterator[Metric]:
        """Unfinished tasks, pause and limit per named queue (bounded: METRIC_QUEUES)."""
        named = labelled_queues(self._live, self._gates)
        tasks = GaugeMetricFamily(
            "localflow_queue_tasks",
            f"Unfinished tasks by queue and status (queued, running); at most {METRIC_QUEUES} "
            f"queues by name, the rest summed as queue=\"{OTHER_QUEUES}\"",
            labels=["queue", "status"],
        )
        counts = {(q, status): 0 for q in named for status in UNFINISHED}
        for row in self._live:
            key = (row.queue if row.queue in named else OTHER_QUEUES, row.status)
            counts[key] = counts.get(key, 0) + row.count
        for (queue_name, status), count in sorted(counts.items()):
            tasks.add_metric([queue_name, status], count)
        yield tasks
        gates = {g.name: g for g in self._gates}
        paused = GaugeMetricFamily(
            "localflow_queue_paused", "1 if the queue is paused (workers take none of its "
            "tasks), else 0", labels=["queue"],
        )
        limit = GaugeMetricFamily(
            "localflow_queue_concurrency_limit",
            "The most of the queue's tasks running at once across every worker (only queues "
            "with a limit)", labels=["queue"],
        )
        for name in sorted(named):
            gate = gates.get(name)
            paused.add_metric([name], 1 if gate and gate.paused else 0)
            if gate and gate.concurrency is not None:
                limit.add_metric([name], gate.concurrency)
        yield paused
        yield limit


def labelled_queues(live: Iterable[Depth], gates: Iterable[QueueGate]) -> set[str]:
    """The queues that get a label of their own: `default`, then queues with settings (a
    pause or a limit), then the biggest backlogs (ties by name), METRIC_QUEUES in all."""
    backlog: dict[str, int] = {}
    for row in live:
        backlog[row.queue] = backlog.get(row.queue, 0) + row.count
    settled = {g.name for g in gates}
    ranked = sorted(
        {DEFAULT_QUEUE, *settled, *backlog},
        key=lambda q: (q != DEFAULT_QUEUE, q not in settled, -backlog.get(q, 0), q),
    )
    return set(ranked[:METRIC_QUEUES])


class _Forward(Collector):
    """Exports another registry's metrics (the worker's, in `serve`) as part of this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()

    def describe(self) -> list[Metric]:
        return []  # names are checked in the worker's own registry


class MetricsController(Controller):
    tags = ["system"]

    @get("/metrics", summary="Prometheus metrics", media_type=TEXT_FORMAT,
         description="Prometheus text exposition format. Needs the API token when one is set.")
    async def metrics(self, state: State) -> Response[bytes]:
        body = await state.metrics.render()
        return Response(body, media_type=TEXT_FORMAT,
                        headers={"Cache-Control": "no-store"})
