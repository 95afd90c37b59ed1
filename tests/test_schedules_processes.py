"""Three real scheduler processes on one database file: every fire time makes exactly one
task, while one of them is killed with SIGKILL and restarted.

The processes (tests/schedule_proc.py) run the production Scheduler with a clock 60 times
faster than real time (one cron minute per real second), all reading the same time.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from shared import cron
from shared.queue import Queue
from shared.schedule_schemas import ScheduleCreate
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore
from tests.procs import REPO
from tests.schedule_proc import ScaledClock

pytestmark = pytest.mark.e2e

RATE = 60.0  # simulated seconds per real second
EPOCH = 1_800_000_000.0  # what the shared clock reads when the processes start
RUN_SECONDS = 14.0
CRONS = ["* * * * *", "* * * * *", "* * * * *", "*/2 * * * *", "*/3 * * * *", "1-59/2 * * * *"]


def start(db: Path, t0: float, log_dir: Path, name: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.schedule_proc", str(db), str(EPOCH), str(t0),
             str(RATE)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return proc, log_path


def events(log_path: Path) -> list[dict]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def wait_started(logs: list[Path], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(any(e.get("event") == "scheduler started" for e in events(log)) for log in logs):
            return
        time.sleep(0.05)
    raise AssertionError("schedulers did not start:\n" + "\n".join(p.read_text() for p in logs))


async def test_three_scheduler_processes_fire_each_time_exactly_once(db_path, tmp_path):
    t0 = time.time()
    clock = ScaledClock(EPOCH, t0, RATE)
    procs = {name: start(db_path, t0, tmp_path, name) for name in ("a", "b", "c")}
    logs = [log for _, log in procs.values()]
    try:
        wait_started(logs)
        # Created while the schedulers run, as through the API (which wakes them too).
        settings = Settings(db=str(db_path))
        db = await SQLiteStore.open(str(db_path))
        try:
            schedules = Schedules(Queue(db, clock, settings))
            created_at = clock.now()
            created = [
                await schedules.create(msgspec.convert(
                    {"name": f"s{i}", "cron_expr": expr, "task_type": "shell",
                     "payload": {"command": "true"}, "missed": "skip" if i % 2 else "run_once"},
                    ScheduleCreate))
                for i, expr in enumerate(CRONS)
            ]
        finally:
            await db.close()
        began = time.time()
        time.sleep(RUN_SECONDS / 2)
        # Kill one without warning mid-run, and bring it back: a crash and a restart.
        procs["b"][0].send_signal(signal.SIGKILL)
        procs["b"][0].wait(10)
        procs["b2"] = start(db_path, t0, tmp_path, "b2")
        logs.append(procs["b2"][1])
        time.sleep(max(0.0, began + RUN_SECONDS - time.time()))
        checked_until = clock.now() - 60  # fires surely handled by now
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    for name in ("a", "c", "b2"):
        assert procs[name][0].returncode == 0, procs[name][1].read_text()

    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT schedule_id, fire_time, count(*) FROM tasks GROUP BY schedule_id, fire_time"
        ).fetchall()
    assert all(n == 1 for _, _, n in rows), "a fire time produced more than one task"
    by_schedule: dict[str, set[float]] = {}
    for schedule_id, fire_time, _ in rows:
        by_schedule.setdefault(schedule_id, set()).add(fire_time)
    for s in created:
        expected = set()
        for t in cron.parse(s.cron_expr).next_after(created_at, 200):
            if t <= checked_until:
                expected.add(t)
        got = by_schedule.get(s.id, set())
        assert expected <= got, f"{s.cron_expr}: fires missing: {sorted(expected - got)}"
        valid = set(cron.parse(s.cron_expr).next_after(created_at, 200))
        assert got <= valid, f"{s.cron_expr}: a task for a time that is not a fire time"

    fired = [e for log in logs for e in events(log) if e.get("event") == "schedule fired"]
    skipped = [e for log in logs for e in events(log) if e.get("event") == "schedule fire skipped"]
    # The compare-and-set did all the work: the unique index never had to refuse a task.
    assert skipped == [], skipped
    assert len(fired) == len(rows)
    late = sorted(e["late_ms"] for e in fired)
    woke = sorted(e["woke_ms"] for e in fired)
    per_process = Counter(log.stem for log in logs for e in events(log)
                          if e.get("event") == "schedule fired")
    print(
        f"\n{len(rows)} fires over {RUN_SECONDS:.0f}s real ({RUN_SECONDS * RATE / 60:.0f} cron "
        f"minutes); per process {dict(per_process)}; lateness ms p50="
        f"{statistics.median(late):.2f} p99={p99(late):.2f} max={late[-1]:.2f} (woke p50="
        f"{statistics.median(woke):.2f} p99={p99(woke):.2f})"
    )


def p99(values: list[float]) -> float:
    return values[round(0.99 * (len(values) - 1))]
