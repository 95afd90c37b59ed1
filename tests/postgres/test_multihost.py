"""Several hosts on one PostgreSQL: `localflow api` on this machine and `localflow worker`
processes each in a network namespace of its own (tests/netns.py), reaching PostgreSQL only
over TCP through a bridge, as workers on other machines would.

1. 1,000 tasks over the batch endpoint, one worker SIGKILLed mid-run, two `* * * * *`
   schedules fired across two minute boundaries by the three schedulers (one per worker):
   every task ran and succeeded, each ran once unless its worker died, nothing is left
   queued or running, and each (schedule, fire time) in the window has exactly one task.
2. PostgreSQL goes down and comes back under running workers and API: the workers recover by
   themselves, the API answers 503 + Retry-After (never 500) meanwhile, and every task the
   client got acknowledged -- before, during (retried) and after the outage -- finishes.

Every task is `mktemp RUNS/<key>.XXXXXX` (argv, no shell): each run leaves one new file, so
the file system (shared by the namespaces; only the network is separate) counts the runs
independently of what the database says.

These tests wait on minute boundaries and real processes. Measured on the shared 2-core
machine (load average 15): 108 s for the first (it must see two cron fire times: between 60 and
120 s of that is waiting for them) and 60-68 s for the second (during the outage each request
waits the store's 5 s connection checkout before its 503).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from tests import netns, pg, procs

pytestmark = pytest.mark.e2e

LEASE = "3"  # short, so the killed worker's tasks are rescued within the test
DEADLINE = 180.0  # generous: a busy 2-core machine runs all of this at once


@dataclass
class Deployment:
    """One PostgreSQL, one API on this machine, workers on namespace "hosts"."""

    network: netns.Network
    cluster: pg.Cluster
    db_url: str  # the database, as this machine (and the API) reaches it
    api: procs.Proc
    runs: Path  # where tasks leave their run files
    logs: Path
    workers: list[procs.Proc] = field(default_factory=list)

    def worker_url(self) -> str:
        """The same database as a worker on another host reaches it: the bridge's address."""
        parts = urlsplit(self.db_url)
        netloc = parts.netloc.replace(f"@{parts.hostname}:", f"@{self.network.gateway}:")
        return parts._replace(netloc=netloc).geturl()

    def start_worker(self, host: netns.Host) -> procs.Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
        env.update({"LOCALFLOW_DB": self.worker_url(), "LOCALFLOW_LOG_FORMAT": "json"})
        argv = host.argv([sys.executable, "-m", "localflow.cli", "worker", "--lease", LEASE,
                          "--schedule-interval", "2", "--metrics-addr", "off"])
        log_path = self.logs / f"worker-{host.name}.log"
        with open(log_path, "wb") as log_file:
            popen = subprocess.Popen(argv, cwd=procs.REPO, env=env, stdout=log_file,
                                     stderr=subprocess.STDOUT)
        proc = procs.Proc(popen, log_path)
        self.workers.append(proc)
        return proc

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, connect_timeout=10) as conn:
            return conn.execute(query, params).fetchall()

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log()[-3000:]}"
                         for p in [self.api, *self.workers])


@contextlib.contextmanager
def deployment(tmp_path: Path, hosts: int) -> Iterator[Deployment]:
    why = netns.unavailable()
    if why:
        pytest.skip(f"several hosts need network namespaces: {why}")
    with netns.Network() as network:
        subnet = ipaddress.ip_network(f"{network.gateway}/24", strict=False)
        try:
            cluster = pg.start_cluster(listen=["127.0.0.1", network.gateway],
                                       hba=[f"host all all {subnet} scram-sha-256"])
        except pg.Unavailable as exc:
            pytest.skip(f"needs a PostgreSQL server: {exc}")
        server = pg.Server(admin_url=cluster.url, cluster=cluster)
        api = None
        dep = None
        try:
            db_url = server.create_database()
            hosts_made = [network.add_host() for _ in range(hosts)]
            logs = tmp_path / "logs"
            runs = tmp_path / "runs"
            logs.mkdir()
            runs.mkdir()
            api = procs.start("api", tmp_path / "unused.db", "--lease", LEASE,
                              env={"LOCALFLOW_DB": db_url}, log_dir=logs)
            dep = Deployment(network, cluster, db_url, api, runs, logs)
            for host in hosts_made:
                dep.start_worker(host)
            _wait(lambda: len(dep.sql("SELECT id FROM workers WHERE stopped_at IS NULL"))
                  == hosts, "every worker registered", dep)
            yield dep
        finally:
            for proc in ([*dep.workers] if dep else []) + ([api] if api else []):
                proc.stop()
            server.close()  # stops the cluster and removes its files


def _wait(condition: Callable[[], bool], what: str, dep: Deployment | None = None,
          timeout: float = DEADLINE) -> None:
    """Poll a condition until it holds (no fixed sleeps), failing with the logs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}\n"
                                 + (dep.logs_text() if dep else ""))
        time.sleep(0.1)


def _task(runs: Path, key: str) -> dict[str, Any]:
    return {"type": "shell", "idempotency_key": key,
            "payload": {"command": "mktemp", "args": [f"{runs}/{key}.XXXXXX"]}}


@dataclass
class Submitter:
    """Posts batches as a careful client does: on 503 it waits Retry-After and sends the same
    batch again (idempotency keys make that safe); it records every status it was answered."""

    client: httpx.Client
    statuses: Counter[int] = field(default_factory=Counter)
    saw_503: threading.Event = field(default_factory=threading.Event)

    def submit(self, tasks: list[dict[str, Any]], timeout: float = DEADLINE) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            answer = self.client.post("/api/tasks/batch", json={"tasks": tasks})
            self.statuses[answer.status_code] += 1
            if answer.status_code == 201:
                return answer.json()["ids"]
            assert answer.status_code == 503, answer.text  # never a 500, never a 4xx
            retry_after = answer.headers.get("Retry-After")
            assert retry_after is not None and float(retry_after) > 0, answer.headers
            self.saw_503.set()
            assert time.monotonic() < deadline, "the API kept answering 503"
            time.sleep(float(retry_after))  # the server's own instruction, not a guess


def _run_files(runs: Path) -> Counter[str]:
    return Counter(p.name.split(".", 1)[0] for p in runs.iterdir())


def _attempts(dep: Deployment) -> dict[str, list[tuple[str, str]]]:
    """task id -> [(outcome, worker id)] in order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for task_id, outcome, worker in dep.sql(
        "SELECT task_id, outcome, worker_id FROM task_attempts ORDER BY task_id, attempt, id"
    ):
        out.setdefault(task_id, []).append((outcome, worker))
    return out


def test_three_hosts_one_killed_every_task_once_every_fire_once(tmp_path: Path) -> None:
    started = time.monotonic()
    with deployment(tmp_path, hosts=3) as dep, \
            httpx.Client(base_url=dep.api.url, timeout=60) as client:
        submitter = Submitter(client)
        # Two every-minute schedules; the first fire time is the minute after creation.
        schedule_ids = []
        for name in ("every-minute-a", "every-minute-b"):
            made = client.post("/api/schedules", json={
                "name": name, "cron_expr": "* * * * *", "task_type": "shell",
                "payload": {"command": "true"}})
            assert made.status_code == 201, made.text
            schedule_ids.append(made.json()["id"])
        (created_at,) = dep.sql("SELECT max(created_at) FROM schedules")[0]
        first_fire = math.floor(created_at / 60) * 60 + 60

        def fired(fire_time: float) -> bool:
            rows = dep.sql("SELECT count(*) FROM tasks WHERE fire_time = %s", (fire_time,))
            return rows[0][0] == len(schedule_ids)

        # The first fire time, raced for by all three schedulers.
        _wait(lambda: fired(first_fire), f"both schedules fired at {first_fire}", dep,
              timeout=60 + DEADLINE)

        keys = [f"t{i:04d}" for i in range(1000)]
        ids: dict[str, str] = {}
        for i in range(0, len(keys), 100):
            chunk = keys[i:i + 100]
            ids.update(zip(chunk, submitter.submit([_task(dep.runs, k) for k in chunk]),
                           strict=True))
        assert len(set(ids.values())) == 1000

        # SIGKILL the first worker while it holds running tasks, a fair way into the run.
        victim = dep.workers[0]
        (victim_id,) = dep.sql("SELECT id FROM workers WHERE pid = %s", (victim.popen.pid,))[0]

        def victim_busy() -> bool:
            done, mine = dep.sql(
                "SELECT count(*) FILTER (WHERE status = 'succeeded' AND schedule_id IS NULL),"
                " count(*) FILTER (WHERE status = 'running' AND worker_id = %s) FROM tasks",
                (victim_id,))[0]
            return done >= 200 and mine > 0

        _wait(victim_busy, "the first worker running tasks after 200 successes", dep)
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait(30)
        killed_at = time.monotonic()

        # The second fire time, with two schedulers left.
        _wait(lambda: fired(first_fire + 60), f"both schedules fired at {first_fire + 60}",
              dep, timeout=120 + DEADLINE)
        for sid in schedule_ids:
            paused = client.put(f"/api/schedules/{sid}", json={"enabled": False})
            assert paused.status_code == 200, paused.text
        _wait(lambda: dep.sql("SELECT count(*) FROM tasks WHERE status IN ('queued', 'running')"
                              )[0][0] == 0, "nothing left queued or running", dep)
        rescued_within = time.monotonic() - killed_at

        # Every task ran and succeeded; once each, unless its first run was on the dead worker.
        statuses = dict(dep.sql("SELECT status, count(*) FROM tasks GROUP BY status"))
        assert set(statuses) == {"succeeded"}, statuses
        runs = _run_files(dep.runs)
        attempts = _attempts(dep)
        by_id = {task_id: key for key, task_id in ids.items()}
        twice = []
        for task_id, key in by_id.items():
            outcomes = attempts[task_id]
            assert runs[key] >= 1, (key, outcomes)
            if len(outcomes) == 1:
                assert outcomes[0][0] == "succeeded" and runs[key] == 1, (key, outcomes, runs[key])
            else:
                assert [o for o, _ in outcomes] == ["lost", "succeeded"], (key, outcomes)
                assert outcomes[0][1] == victim_id and outcomes[1][1] != victim_id, outcomes
                assert runs[key] <= 2, (key, runs[key])
                twice.append(key)
        assert set(runs) <= set(by_id.values())  # no run of anything we did not submit
        # The kill landed mid-run: the victim held tasks, and every one of them was rescued.
        assert twice, "the killed worker held no task when it died"
        lost = dep.sql("SELECT count(*) FROM task_attempts WHERE outcome = 'lost'")[0][0]
        assert lost == len(twice)

        # Each (schedule, fire time) has exactly one task, and no minute is missing.
        fires = dep.sql("SELECT schedule_id, fire_time, count(*) FROM tasks "
                        "WHERE schedule_id IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2")
        assert {count for _, _, count in fires} == {1}, fires
        for sid in schedule_ids:
            times = [t for s, t, _ in fires if s == sid]
            assert times[0] == first_fire and times[-1] >= first_fire + 60, times
            assert times == [first_fire + 60 * i for i in range(len(times))], times
        skips = dep.sql("SELECT name, last_skip_reason FROM schedules "
                        "WHERE last_skip_reason IS NOT NULL")
        assert skips == [], skips

        for survivor in dep.workers[1:]:
            assert survivor.popen.poll() is None, survivor.log()[-3000:]
    print(f"\n3 hosts: {len(twice)} tasks lost with the killed worker and run again; "
          f"all done {rescued_within:.1f}s after the kill; test took "
          f"{time.monotonic() - started:.1f}s; fires per schedule "
          f"{len(fires) // len(schedule_ids)}")


def test_workers_outlive_a_postgresql_restart_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with deployment(tmp_path, hosts=2) as dep, \
            httpx.Client(base_url=dep.api.url, timeout=60) as client:
        submitter = Submitter(client)
        pids = [w.popen.pid for w in dep.workers]
        acknowledged: dict[str, str] = {}

        def submit(prefix: str, n: int) -> None:
            keys = [f"{prefix}{i:03d}" for i in range(n)]
            acknowledged.update(zip(keys, submitter.submit([_task(dep.runs, k) for k in keys]),
                                    strict=True))

        submit("before", 200)
        _wait(lambda: dep.sql("SELECT count(*) FROM tasks WHERE status = 'succeeded'")[0][0]
              >= 20, "the workers under way", dep)
        dep.cluster.kill_server()  # fast shutdown: every connection is cut, work in flight too
        outage_started = time.monotonic()

        # Down: the API says 503 with Retry-After -- for reads, writes and its health.
        for path in ("/api/tasks", f"/api/tasks/{acknowledged['before000']}", "/health"):
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.status_code, answer.text)
        refused = client.post("/api/tasks", json=_task(dep.runs, "refused"))
        assert refused.status_code == 503 and "Retry-After" in refused.headers, refused.text
        assert "Traceback" not in refused.text

        # A client submitting during the outage retries until the server is back.
        failures: list[BaseException] = []

        def submit_during() -> None:
            try:
                submit("during", 100)
            except BaseException as exc:  # re-raised in the test's own thread below
                failures.append(exc)
                submitter.saw_503.set()

        during = threading.Thread(target=submit_during)
        during.start()
        _wait(lambda: submitter.saw_503.is_set(), "the retrying client was told 503", dep)
        for worker in dep.workers:
            assert worker.popen.poll() is None, worker.log()[-3000:]
        dep.cluster.start_server()
        outage = time.monotonic() - outage_started
        during.join(DEADLINE)
        assert not during.is_alive()
        if failures:
            raise failures[0]
        submit("after", 100)

        _wait(lambda: dep.sql("SELECT count(*) FROM tasks WHERE status = 'succeeded'")[0][0]
              == 400, "every acknowledged task succeeded", dep)
        assert len(acknowledged) == 400
        rows = dict(dep.sql("SELECT idempotency_key, id FROM tasks"))
        assert rows == acknowledged  # each once; the refused one was never stored
        runs = _run_files(dep.runs)
        assert set(runs) == set(acknowledged)  # every acknowledged task ran
        # The same worker processes did it all: none exited or was restarted.
        assert [w.popen.pid for w in dep.workers] == pids
        for worker in dep.workers:
            assert worker.popen.poll() is None, worker.log()[-3000:]
        assert 500 not in submitter.statuses, submitter.statuses
        # At least once: a run whose end could not be recorded while the server was down
        # (its lease ran out meanwhile) is run again; every history ends in one success.
        attempts = _attempts(dep)
        histories = Counter(tuple(o for o, _ in attempts[i]) for i in acknowledged.values())
        for history in histories:
            assert history[-1] == "succeeded" and "succeeded" not in history[:-1], histories
        reruns = sum(1 for n in runs.values() if n > 1)
    print(f"\nrestart: outage {outage:.1f}s, answers {dict(submitter.statuses)}, "
          f"{reruns} tasks ran twice; attempt histories {dict(histories)}; "
          f"test took {time.monotonic() - started:.1f}s")
