"""Three real scheduler processes on one database file: every fire time makes exactly one
task, while one of them is killed with SIGKILL and restarted, and all of them are starved.

The processes (tests/schedule_proc.py) run the production Scheduler with a clock 60 times
faster than real time (one cron minute per real second), all reading the same time. The test
steers that clock: it lets it run at most HOLD seconds past a fire that is not committed yet,
so a machine too busy to run the schedulers makes the test slower, never makes a fire late
enough for `missed: skip` to drop it.
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
from shared.schedules import Schedules, missed_grace
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore
from shared.store.sqlite.wake import WakeNotifier
from tests.procs import REPO
from tests.schedule_proc import SteeredClock

pytestmark = pytest.mark.e2e

RATE = 60.0  # simulated seconds per real second
EPOCH = 1_800_000_000.0  # what the shared clock reads when the processes start (a whole hour)
MINUTES = 14  # cron minutes the test runs for
HOLD = 30.0  # how far the clock may run past an uncommitted fire: well inside the grace
STARVED_FOR = 2.5  # real seconds every scheduler is stopped for: 150 simulated, past the grace
FIRE_DEADLINE = 60.0  # real seconds a fire may take to be committed on a very busy machine
CRONS = ["* * * * *", "* * * * *", "* * * * *", "*/2 * * * *", "*/3 * * * *", "1-59/2 * * * *"]


def start(db: Path, clock_file: Path, log_dir: Path, name: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.schedule_proc", str(db), str(clock_file), str(RATE)],
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


def committed_fires(db: Path, until: float) -> set[tuple[str, float]]:
    with sqlite3.connect(db) as conn:
        return set(conn.execute(
            "SELECT schedule_id, fire_time FROM tasks WHERE fire_time <= ?", (until,)
        ).fetchall())


def wait_committed(db: Path, expected: set[tuple[str, float]], until: float,
                   logs: list[Path]) -> None:
    """Until every expected fire up to `until` has its task (and nothing else has one)."""
    deadline = time.monotonic() + FIRE_DEADLINE
    while True:
        got = committed_fires(db, until)
        assert got <= expected, f"tasks for times that are not fire times: {got - expected}"
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"fires missing at {until}: {sorted(expected - got)}\n"
                + "\n".join(p.read_text(errors="replace")[-3000:] for p in logs))
        time.sleep(0.01)


async def test_three_scheduler_processes_fire_each_time_exactly_once(db_path, tmp_path):
    assert missed_grace(Settings(schedule_interval=1.0)) > HOLD  # what schedule_proc runs
    clock = SteeredClock(tmp_path / "clock", RATE)
    clock.hold(EPOCH, start=EPOCH)  # stands still until the schedules exist
    procs = {name: start(db_path, clock.path, tmp_path, name) for name in ("a", "b", "c")}
    logs = [log for _, log in procs.values()]
    nudge = WakeNotifier(str(db_path))
    try:
        wait_started(logs)
        # Created while the schedulers run, as through the API (which wakes them too).
        settings = Settings(db=str(db_path))
        db = await SQLiteStore.open(str(db_path))
        try:
            schedules = Schedules(Queue(db, clock, settings))
            created = [
                await schedules.create(msgspec.convert(
                    {"name": f"s{i}", "cron_expr": expr, "task_type": "shell",
                     "payload": {"command": "true"}, "missed": "skip" if i % 2 else "run_once"},
                    ScheduleCreate))
                for i, expr in enumerate(CRONS)
            ]
        finally:
            await db.close()
        end = EPOCH + MINUTES * 60
        every_fire = {(s.id, t) for s in created
                      for t in cron.parse(s.cron_expr).next_after(EPOCH, 200) if t <= end}
        fire_times = sorted({t for _, t in every_fire})
        for i, fire_time in enumerate(fire_times):
            clock.hold(fire_time + HOLD)
            nudge()  # they may be sleeping on the held clock; the interval would wake them too
            if i == len(fire_times) // 2:
                # Kill one without warning mid-run, and bring it back: a crash and a restart.
                procs["b"][0].send_signal(signal.SIGKILL)
                procs["b"][0].wait(10)
                procs["b2"] = start(db_path, clock.path, tmp_path, "b2")
                logs.append(procs["b2"][1])
                # Then starve them all at once, as a loaded machine can. This pause is the
                # fault itself, not a wait for anything.
                for name in ("a", "c", "b2"):
                    procs[name][0].send_signal(signal.SIGSTOP)
                time.sleep(STARVED_FOR)
                for name in ("a", "c", "b2"):
                    procs[name][0].send_signal(signal.SIGCONT)
            wait_committed(db_path, {f for f in every_fire if f[1] <= fire_time}, fire_time,
                           logs)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
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
            "SELECT schedule_id, fire_time, count(*) FROM tasks WHERE fire_time <= ? "
            "GROUP BY schedule_id, fire_time", (end,)
        ).fetchall()
    assert all(n == 1 for _, _, n in rows), "a fire time produced more than one task"
    assert {(s, t) for s, t, _ in rows} == every_fire

    fired = [e for log in logs for e in events(log) if e.get("event") == "schedule fired"]
    skipped = [e for log in logs for e in events(log) if e.get("event") == "schedule fire skipped"]
    # The compare-and-set did all the work: the unique index never had to refuse a task, and
    # no fire was late enough to count as missed.
    assert skipped == [], skipped
    assert len([e for e in fired if e["fire_time"] <= end]) == len(rows)
    late = sorted(e["late_ms"] for e in fired)
    woke = sorted(e["woke_ms"] for e in fired)
    per_process = Counter(log.stem for log in logs for e in events(log)
                          if e.get("event") == "schedule fired")
    print(
        f"\n{len(rows)} fires over {MINUTES} cron minutes; per process {dict(per_process)}; "
        f"lateness ms p50={statistics.median(late):.2f} p99={p99(late):.2f} "
        f"max={late[-1]:.2f} (woke p50={statistics.median(woke):.2f} p99={p99(woke):.2f})"
    )


def p99(values: list[float]) -> float:
    return values[round(0.99 * (len(values) - 1))]
