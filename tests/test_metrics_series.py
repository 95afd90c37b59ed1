"""Every series a dashboard graphs exists from the first scrape (issue 15 item 1), and both
/metrics endpoints pass `promtool check metrics` (Prometheus' own linter), over real HTTP from
real processes."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.schemas import PAYLOAD_TYPES
from shared.store.base import Outcome
from tests import procs
from worker.metrics import ATTEMPT_OUTCOMES

pytestmark = pytest.mark.e2e  # real processes

TYPES = sorted(PAYLOAD_TYPES)
FIRE_OUTCOMES = list(Outcome.__args__)  # type: ignore[attr-defined]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(url: str, **kwargs) -> str:
    answer = httpx.get(url, timeout=10, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.text


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def api_and_worker(tmp_path):
    db = tmp_path / "lf.db"
    port = procs.free_port()
    worker = procs.start("worker", db, "--metrics-addr", f"127.0.0.1:{port}")
    api = procs.start("api", db)
    worker_url = f"http://127.0.0.1:{port}"
    _wait(lambda: httpx.get(f"{worker_url}/health", timeout=2).status_code == 200,
          what="the worker's /health")
    try:
        yield api.url, worker_url
    finally:
        api.stop()
        worker.stop()


def _expected_zero_series(text: str, names: list[tuple[str, dict[str, str]]]) -> None:
    got = samples(text)
    missing = [(n, labels) for n, labels in names if (n, frozenset(labels.items())) not in got]
    assert not missing, f"no sample for {missing}"
    nonzero = [(n, labels) for n, labels in names if got[(n, frozenset(labels.items()))] != 0]
    assert not nonzero, nonzero


def test_every_known_series_is_zero_from_the_start(api_and_worker):
    api_url, worker_url = api_and_worker
    api_text = _get(f"{api_url}/metrics")
    _expected_zero_series(api_text, [
        ("localflow_queue_depth", {"status": status, "type": t})
        for status in ("queued", "running") for t in TYPES
    ])
    worker_text = _get(f"{worker_url}/metrics")
    counters = ["succeeded", "failed", "retried", "cancelled", "timed_out"]
    _expected_zero_series(worker_text, [
        *[(f"localflow_worker_tasks_{c}_total", {"type": t}) for c in counters for t in TYPES],
        *[("localflow_task_attempts_total", {"type": t, "outcome": o})
          for t in TYPES for o in ATTEMPT_OUTCOMES],
        *[("localflow_scheduler_fires_total", {"outcome": o}) for o in FIRE_OUTCOMES],
    ])
    # The worker commits write transactions of its own (claims, heartbeats, outcomes).
    assert ("localflow_db_write_transactions_total", frozenset()) in samples(worker_text)


def test_attempts_by_outcome_make_failure_rate_one_query(api_and_worker):
    api_url, worker_url = api_and_worker
    with httpx.Client(base_url=api_url, timeout=10) as client:
        ok = client.post("/api/tasks", json={"type": "shell", "payload": {"command": "true"}})
        bad = client.post("/api/tasks", json={"type": "shell", "max_attempts": 2,
                                              "payload": {"command": "false"}})
        procs.wait_for_status(client, ok.json()["id"], {"succeeded"})
        procs.wait_for_status(client, bad.json()["id"], {"failed"})
    got = samples(_get(f"{worker_url}/metrics"))

    def attempts(outcome: str) -> float:
        return got[("localflow_task_attempts_total",
                    frozenset({"type": "shell", "outcome": outcome}.items()))]

    assert attempts("succeeded") == 1 and attempts("failed") == 2
    assert got[("localflow_db_write_transactions_total", frozenset())] > 0


def test_both_endpoints_pass_promtool(api_and_worker):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    for url in (f"{u}/metrics" for u in api_and_worker):
        text = _get(url)
        done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"{url}:\n{done.stdout}{done.stderr}"
        assert done.stdout.strip() == done.stderr.strip() == "", (done.stdout, done.stderr)
