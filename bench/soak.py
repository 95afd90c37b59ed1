"""Chaos soak: the API and two workers under steady submissions, SIGKILLed at random.

    make soak                                  # ~5 minutes (SOAK_SECONDS=60 make soak: one)
    uv run python bench/soak.py --seconds 60   # the same, directly
    uv run python bench/soak.py --db postgresql://user:pass@host/db   # another backend

It runs `localflow api` and two `localflow worker` processes as real processes on one
database. A client submits tasks steadily, each with its own idempotency key, and keeps a
ledger of every task the API acknowledged (2xx with an id). A submission that got no answer
(the API was killed under it) is sent again with the same key until it is acknowledged, as a
careful client would. Meanwhile a chaos loop SIGKILLs the API or a worker at random and starts
it again. The tasks are safe to repeat (`echo`, short `sleep`s), because at-least-once
delivery repeats the task of a killed worker.

When the time is up, everything is restarted, submissions stop, and after a settle period
the ledger is checked through the API (so any backend works) and, for a SQLite file, the file
itself:
- every acknowledged task exists, under its key, and succeeded;
- one task per key, and no task the client never asked for: the counts add up;
- nothing is left queued or running;
- a task ran more than once only after an attempt was lost (its worker died);
- `PRAGMA integrity_check` says ok (SQLite only).
Prints a summary; exits 1 on any violation, 2 if the run itself could not be carried out.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
FINAL = {"succeeded", "failed", "cancelled"}
LEASE = "3s"  # short, so the tasks of a killed worker are rescued within the soak
DEFAULT_SECONDS = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float,
                   default=float(os.environ.get("SOAK_SECONDS") or DEFAULT_SECONDS),
                   help="how long the chaos lasts (default $SOAK_SECONDS or 300)")
    p.add_argument("--db", help="database: a SQLite path or a URL (default: a temporary file)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--rate", type=float, default=20.0, help="submissions per second (default 20)")
    p.add_argument("--kill-every", type=float, default=6.0,
                   help="mean seconds between kills (default 6)")
    p.add_argument("--settle", type=float, default=180.0,
                   help="most seconds to wait for every task to finish at the end (default 180)")
    p.add_argument("--seed", type=int, default=None, help="random seed (printed if not given)")
    p.add_argument("--keep", action="store_true", help="keep the work directory and its logs")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Role:
    """One LocalFlow process that the chaos loop may kill and start again, under one name."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path,
                 url: str | None = None) -> None:
        self.name, self.argv, self.env, self.workdir, self.url = name, argv, env, workdir, url
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        self.starts += 1
        log = self.workdir / f"{self.name}-{self.starts}.log"
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=out,
                                          stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()
            self.kills += 1

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, and SIGKILL if it will not go; the exit code of a clean stop."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                return None
        return self.popen.returncode

    def wait_healthy(self, timeout: float = 120.0) -> None:
        if self.url is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RunError(f"{self.name} exited with {self.popen.returncode}; see "
                               f"{self.workdir}/{self.name}-{self.starts}.log")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RunError(f"{self.name} gave no healthy answer in {timeout:.0f}s")


class RunError(RuntimeError):
    """The soak could not be carried out (not a finding about LocalFlow)."""


@dataclass
class Ledger:
    """What the client knows: every key it sent, and the id each acknowledged key got."""

    sent: set[str] = field(default_factory=set)
    acked: dict[str, str] = field(default_factory=dict)
    unanswered: int = 0  # requests that got no answer or a 5xx (then sent again)
    refused: list[str] = field(default_factory=list)  # 4xx: a client bug, a violation
    conflicting: list[str] = field(default_factory=list)  # a key acknowledged with two ids
    lock: threading.Lock = field(default_factory=threading.Lock)


def task_body(n: int, rng: random.Random, run: str) -> dict:
    # Safe to repeat. A few take a second or two, so kills catch running tasks too.
    if rng.random() < 0.15:
        payload = {"command": "sleep", "args": [f"{rng.uniform(0.5, 2.0):.2f}"]}
    else:
        payload = {"command": "echo", "args": [f"soak {n}"]}
    return {"type": "shell", "payload": payload, "idempotency_key": f"soak-{run}-{n}",
            "max_attempts": 20}  # a task may lose many attempts to kills; it must not fail


def submit_until_acked(http: httpx.Client, body: dict, ledger: Ledger,
                       give_up: threading.Event) -> None:
    key = body["idempotency_key"]
    with ledger.lock:
        ledger.sent.add(key)
    while not give_up.is_set():
        try:
            r = http.post("/api/tasks", json=body)
        except httpx.HTTPError:
            r = None
        if r is not None and r.status_code in (200, 201):
            task_id = r.json()["id"]
            with ledger.lock:
                if ledger.acked.setdefault(key, task_id) != task_id:
                    ledger.conflicting.append(key)
            return
        if r is not None and 400 <= r.status_code < 500:
            with ledger.lock:
                ledger.refused.append(f"{key}: {r.status_code} {r.text[:200]}")
            return
        with ledger.lock:
            ledger.unanswered += 1
        give_up.wait(0.05)  # the API is down or restarting: try again shortly, same key


def submitter(url: str, run: str, rate: float, rng: random.Random, ledger: Ledger,
              stop: threading.Event, give_up: threading.Event, counter: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        next_at = time.monotonic()
        while not stop.is_set():
            n = counter[0]
            counter[0] += 1
            submit_until_acked(http, task_body(n, rng, run), ledger, give_up)
            next_at += 1.0 / rate
            stop.wait(max(0.0, next_at - time.monotonic()))


def chaos(roles: list[Role], mean_gap: float, rng: random.Random, stop: threading.Event,
          log: list[str], started: float) -> None:
    while not stop.wait(rng.expovariate(1.0 / mean_gap)):
        role = rng.choice(roles)
        role.kill()
        log.append(f"{time.monotonic() - started:7.1f}s SIGKILL {role.name}")
        # Back at once, or after a moment in which the others carry on without it.
        if stop.wait(rng.choice([0.0, 0.0, rng.uniform(0.5, 3.0)])):
            break
        role.start()
        if role.url:
            try:
                role.wait_healthy()
            except RunError as exc:
                log.append(f"restart failed: {exc}")
                stop.set()


def fetch_all_tasks(http: httpx.Client) -> list[dict]:
    tasks: list[dict] = []
    cursor = None
    while True:
        params: dict = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/api/tasks", params=params)
        page.raise_for_status()
        body = page.json()
        tasks += body["items"]
        cursor = body.get("next_cursor")
        if not cursor:
            return tasks


def settle(http: httpx.Client, deadline: float) -> list[dict]:
    """Until no task is queued or running (or the deadline); returns every task."""
    while True:
        tasks = fetch_all_tasks(http)
        if all(t["status"] in FINAL for t in tasks) or time.monotonic() > deadline:
            return tasks
        time.sleep(0.5)


def check(ledger: Ledger, tasks: list[dict], http: httpx.Client) -> tuple[list[str], dict]:
    """The ledger against what the API reports; returns violations and numbers."""
    violations: list[str] = []
    by_id = {t["id"]: t for t in tasks}
    by_key: dict[str, list[dict]] = {}
    for t in tasks:
        by_key.setdefault(t.get("idempotency_key") or "", []).append(t)

    for key, task_id in ledger.acked.items():
        task = by_id.get(task_id)
        if task is None:
            violations.append(f"acknowledged task {task_id} ({key}) does not exist")
        elif task["status"] != "succeeded":
            violations.append(f"acknowledged task {task_id} ({key}) is {task['status']}")
    for key, found in by_key.items():
        if key not in ledger.sent:
            violations.append(f"{len(found)} task(s) with key {key!r} the client never sent")
        if len(found) > 1:
            violations.append(f"key {key!r} has {len(found)} tasks")
    violations += [f"submission refused: {r}" for r in ledger.refused]
    violations += [f"key {k} acknowledged with two different ids" for k in ledger.conflicting]
    statuses = Counter(t["status"] for t in tasks)
    stuck = statuses["queued"] + statuses["running"]
    if stuck:
        violations.append(f"{stuck} task(s) still queued or running after the settle period")
    unacked_created = len(tasks) - len(ledger.acked)
    if unacked_created < 0 or unacked_created > len(ledger.sent) - len(ledger.acked):
        violations.append(f"counts do not add up: {len(tasks)} tasks, {len(ledger.acked)} "
                          f"acknowledged, {len(ledger.sent)} keys sent")

    # More than one attempt is explained only by attempts lost with their worker.
    repeated = [t for t in tasks if t["attempts"] > 1]
    outcomes: Counter[str] = Counter()
    for t in repeated:
        attempts = http.get(f"/api/tasks/{t['id']}/attempts").json()
        outcomes.update(a["outcome"] for a in attempts)
        unexplained = [a["outcome"] for a in attempts[:-1] if a["outcome"] != "lost"]
        if unexplained:
            violations.append(f"task {t['id']} ran again after {unexplained}")
    numbers = {
        "tasks": len(tasks), "by_status": dict(statuses), "ran_more_than_once": len(repeated),
        "repeat_attempt_outcomes": dict(outcomes),
    }
    return violations, numbers


def sqlite_file(db: str) -> Path | None:
    return None if "://" in db else Path(db)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="localflow-soak-"))
    db = args.db or str(workdir / "soak.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALFLOW_")}
    env.update({"LOCALFLOW_DB": db, "LOCALFLOW_LOG_FORMAT": "json", "LOCALFLOW_LEASE": LEASE,
                "LOCALFLOW_METRICS_ADDR": "off", "LOCALFLOW_RETRY_BASE": "0.2",
                "PYTHONUNBUFFERED": "1"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "localflow.cli"]
    api = Role("api", [*cli, "api", "--addr", f"127.0.0.1:{port}"], env, workdir, url)
    workers = [Role(f"worker{i + 1}", [*cli, "worker"], env, workdir)
               for i in range(args.workers)]
    roles = [api, *workers]
    print(f"soak: {args.seconds:.0f}s of chaos on {sqlite_file(db) or 'the given database'}, "
          f"{args.workers} workers, {args.rate:g} submissions/s, a kill every "
          f"~{args.kill_every:g}s, seed {seed}; logs in {workdir}", flush=True)

    ledger = Ledger()
    stop_submitting, give_up, stop_chaos = threading.Event(), threading.Event(), threading.Event()
    kill_log: list[str] = []
    counter = [0]
    code = 2
    try:
        # Migrate once before the chaos, so a kill never lands in the first migration.
        subprocess.run([*cli, "migrate"], cwd=REPO, env=env, check=True, capture_output=True)
        for role in roles:
            role.start()
        api.wait_healthy()
        with httpx.Client(base_url=url, timeout=30) as http:
            if http.get("/api/tasks", params={"limit": 1}).json()["items"]:
                raise RunError(f"{db} already holds tasks: the ledger needs an empty database")
        started = time.monotonic()
        feeder = threading.Thread(target=submitter, args=(
            url, f"{seed:x}", args.rate, random.Random(rng.random()), ledger, stop_submitting,
            give_up, counter), daemon=True)
        monkey = threading.Thread(target=chaos, args=(
            roles, args.kill_every, random.Random(rng.random()), stop_chaos, kill_log, started),
            daemon=True)
        feeder.start()
        monkey.start()
        stop_chaos.wait(args.seconds)
        stop_chaos.set()
        monkey.join()
        for role in roles:  # whatever the last kill left down comes back
            if not role.alive():
                role.start()
        api.wait_healthy()
        stop_submitting.set()
        feeder.join(60)  # the last submission retries until the API (up again) answers
        give_up.set()
        feeder.join()
        chaos_seconds = time.monotonic() - started

        settle_started = time.monotonic()
        with httpx.Client(base_url=url, timeout=30) as http:
            tasks = settle(http, settle_started + args.settle)
            settle_seconds = time.monotonic() - settle_started
            exits = {role.name: role.stop() for role in roles if role is not api}
            # The API stays up for the checks; the workers stop first so nothing changes.
            violations, numbers = check(ledger, tasks, http)
        exits["api"] = api.stop()
        db_file = sqlite_file(db)
        if db_file is not None:
            with sqlite3.connect(db_file) as conn:
                integrity = ", ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
            numbers["integrity_check"] = integrity
            if integrity != "ok":
                violations.append(f"integrity_check: {integrity}")
        else:
            numbers["integrity_check"] = "not applicable (not a SQLite file)"
        for name, exit_code in exits.items():
            if exit_code != 0:
                violations.append(f"{name} did not stop cleanly on SIGTERM (exit {exit_code})")

        print("\n".join(kill_log[-10:]) if kill_log else "no kills happened", flush=True)
        print(
            f"\nsoak summary (seed {seed}):\n"
            f"  chaos            {chaos_seconds:.0f}s; kills "
            + ", ".join(f"{r.name} {r.kills}" for r in roles) + "\n"
            f"  submissions      {len(ledger.sent)} keys sent, {len(ledger.acked)} acknowledged,"
            f" {ledger.unanswered} requests unanswered and sent again\n"
            f"  tasks            {numbers['tasks']} in the database: {numbers['by_status']}\n"
            f"  repeated         {numbers['ran_more_than_once']} ran more than once; their "
            f"attempts {numbers['repeat_attempt_outcomes']}\n"
            f"  settled in       {settle_seconds:.1f}s\n"
            f"  integrity_check  {numbers['integrity_check']}\n"
            f"  violations       {len(violations)}",
            flush=True,
        )
        for v in violations[:50]:
            print(f"  VIOLATION: {v}", flush=True)
        if not kill_log:
            print("  (no process was killed: run longer for a real soak)", flush=True)
        code = 1 if violations else 0
    except (RunError, subprocess.CalledProcessError) as exc:
        print(f"soak: could not run: {exc}", file=sys.stderr, flush=True)
        code = 2
    finally:
        stop_chaos.set()
        give_up.set()
        for role in roles:
            if role.alive():
                role.stop()
        if code == 0 and not args.keep and args.db is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"soak: logs kept in {workdir}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
