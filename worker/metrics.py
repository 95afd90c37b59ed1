"""The worker's Prometheus metrics, fed by the Worker's hooks; nothing here touches the database.

Each WorkerMetrics owns its CollectorRegistry (not prometheus-client's global one), so a test
can build several workers in one process, and `serve` can fold the worker's metrics into the
API's /metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import get_args

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.queue import Claimed
from shared.retention import Pruner
from shared.schedules import Fire
from shared.schemas import PAYLOAD_TYPES
from shared.store.base import Outcome
from worker.pool import Worker

# How one attempt ended, as localflow_task_attempts_total counts it: failure rate is
# sum(rate(localflow_task_attempts_total{outcome!="succeeded"}[5m]))
#   / sum(rate(localflow_task_attempts_total[5m])).
# "released" (worker stopping) and "cancelled" are not failures of the task; filter as you like.
ATTEMPT_OUTCOMES = ("succeeded", "failed", "timeout", "cancelled", "released")
FIRE_OUTCOMES = get_args(Outcome)

TASK_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900,
                3600)
WAIT_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                300)
CLAIM_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
# No `*_created` series next to every counter and histogram: noise for a dashboard.
disable_created_metrics()

LATENESS_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class RetentionCollector(Collector):
    """Retention settings, tasks this process pruned, and the database size as of its last
    prune pass (docs/retention.md)."""

    def __init__(self, pruner: Pruner) -> None:
        self.pruner = pruner

    def collect(self) -> Iterator[Metric]:
        keep = GaugeMetricFamily(
            "localflow_retention_seconds",
            "How long finished tasks of each status are kept (0: for ever)", labels=["status"])
        for status, seconds in self.pruner.retention().items():
            keep.add_metric([status], seconds)
        yield keep
        pruned = CounterMetricFamily(
            "localflow_tasks_pruned", "Finished tasks this process pruned, by status",
            labels=["status"])
        for status in self.pruner.retention():
            pruned.add_metric([status], self.pruner.pruned.get(status, 0))
        yield pruned
        yield GaugeMetricFamily(
            "localflow_audit_retention_seconds",
            "How long audit trail entries are kept (0: for ever)",
            value=self.pruner.settings.retain_audit)
        yield CounterMetricFamily(
            "localflow_audit_pruned", "Audit trail entries this process pruned",
            value=self.pruner.audit_pruned)
        if self.pruner.database_bytes is not None:
            yield GaugeMetricFamily(
                "localflow_database_bytes",
                "Size of the database (SQLite: file and write-ahead log), at the last prune pass",
                value=self.pruner.database_bytes)


class WorkerMetrics:
    def __init__(
        self, *, process_metrics: bool = True,
        write_transactions: Callable[[], int] | None = None,
    ) -> None:
        """process_metrics: add CPU/memory/GC collectors. Off when another registry (the
        API's, in `serve`) already has them, so no metric is exported twice.
        write_transactions: the store's count of committed write transactions, exported as
        localflow_db_write_transactions_total (the `worker` process; in `serve` the API's
        /metrics has it already)."""
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        if write_transactions is not None:
            self.registry.register(_WriteTransactions(write_transactions))
        r = self.registry
        self.started = Counter(
            "localflow_worker_tasks_started", "Task attempts this worker started", ["type"],
            registry=r,
        )
        self.succeeded = Counter(
            "localflow_worker_tasks_succeeded", "Task attempts that succeeded", ["type"],
            registry=r,
        )
        self.failed = Counter(
            "localflow_worker_tasks_failed",
            "Task attempts that failed with no attempts left (or whose lease was lost)",
            ["type"], registry=r,
        )
        self.retried = Counter(
            "localflow_worker_tasks_retried",
            "Task attempts that failed and were queued again for a retry", ["type"], registry=r,
        )
        self.cancelled = Counter(
            "localflow_worker_tasks_cancelled", "Running tasks stopped because a person cancelled",
            ["type"], registry=r,
        )
        self.timed_out = Counter(
            "localflow_worker_tasks_timed_out",
            "Task attempts stopped at their timeout (recorded with outcome `timeout`; each is "
            "also counted as retried or failed)", ["type"], registry=r,
        )
        self.duration = Histogram(
            "localflow_worker_task_duration_seconds",
            "How long one attempt ran, by outcome (succeeded, failed, retried)",
            ["type", "outcome"], buckets=TASK_SECONDS, registry=r,
        )
        self.wait = Histogram(
            "localflow_worker_task_wait_seconds",
            "From when a task became runnable (run_at) to when an attempt started",
            ["type"], buckets=WAIT_SECONDS, registry=r,
        )
        self.claim = Histogram(
            "localflow_worker_claim_duration_seconds",
            "How long one claim (a write transaction taking up to the free slots) took",
            buckets=CLAIM_SECONDS, registry=r,
        )
        self.claimed = Counter(
            "localflow_worker_claimed_tasks", "Tasks taken by claims", registry=r
        )
        self.in_flight = Gauge(
            "localflow_worker_tasks_in_flight", "Tasks running in this worker now", registry=r
        )
        self.slots = Gauge("localflow_worker_slots", "Concurrent task slots", registry=r)
        self.lateness = Histogram(
            "localflow_scheduler_lateness_seconds",
            "How long after its cron time a schedule's fire was handled",
            buckets=LATENESS_SECONDS, registry=r,
        )
        self.fires = Counter(
            "localflow_scheduler_fires",
            "Schedule fires handled by this process's scheduler, by outcome (fired, or why not)",
            ["outcome"], registry=r,
        )
        self.attempts = Counter(
            "localflow_task_attempts",
            "Finished task attempts by how they ended (succeeded, failed, timeout, cancelled, "
            "released); a failed or timed-out attempt counts here whether or not it is retried",
            ["type", "outcome"], registry=r,
        )
        # Every known label value from the start, at 0: a graph of a rate shows 0, not "No
        # data", before the first event.
        for task_type in PAYLOAD_TYPES:
            for counter in (self.started, self.succeeded, self.failed, self.retried,
                            self.cancelled, self.timed_out):
                counter.labels(task_type)
            for outcome in ATTEMPT_OUTCOMES:
                self.attempts.labels(task_type, outcome)
        for outcome in FIRE_OUTCOMES:
            self.fires.labels(outcome)
        self._by_outcome = {
            "succeeded": self.succeeded, "failed": self.failed, "retried": self.retried,
            "cancelled": self.cancelled, "timeout": self.timed_out,
        }

    def attach(self, worker: Worker) -> WorkerMetrics:
        """Feed these metrics from the worker's hooks."""
        self.registry.register(RetentionCollector(worker.pruner))
        worker.on_event = lambda kind, c, seconds: self.on_event(worker, kind, c, seconds)
        worker.on_claim = self.on_claim
        self.in_flight.set_function(lambda: len(worker.inflight))
        self.slots.set(worker.slots)
        return self

    def on_event(self, worker: Worker, kind: str, c: Claimed, seconds: float) -> None:
        if kind == "started":
            self.started.labels(c.type).inc()
            self.wait.labels(c.type).observe(max(0.0, worker.clock.now() - c.run_at))
            return
        if kind.startswith("attempt:"):
            self.attempts.labels(c.type, kind.removeprefix("attempt:")).inc()
            return
        counter = self._by_outcome.get(kind)
        if counter is None:
            return
        counter.labels(c.type).inc()
        # No duration for a cancelled attempt (the pool reports none), nor twice for a timeout
        # (its `retried` or `failed` event that follows observes it).
        if kind not in ("cancelled", "timeout"):
            self.duration.labels(c.type, kind).observe(seconds)

    def on_claim(self, count: int, seconds: float) -> None:
        self.claim.observe(seconds)
        if count:
            self.claimed.inc(count)

    def observe_schedule_lateness(self, seconds: float) -> None:
        self.lateness.observe(max(0.0, seconds))

    def on_fire(self, fire: Fire) -> None:
        """The scheduler's on_fire hook."""
        self.fires.labels(fire.outcome).inc()
        self.observe_schedule_lateness(fire.late)

    def render(self) -> bytes:
        return generate_latest(self.registry)



class _WriteTransactions(Collector):
    """The store's counter, read at scrape time (a number in memory: no database access)."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "localflow_db_write_transactions",
            "Write transactions this process committed (each may carry many writes)",
            value=self.read(),
        )
