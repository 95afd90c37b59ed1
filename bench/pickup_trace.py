"""Where a task's pickup time goes: a diagnosis run of (c) with timestamps along the path.

    uv run python bench/pickup_trace.py [--tasks 300] [--gap 0.005] [--worker-loop asyncio]

Like (c) in bench/run.py (a `localflow api` process, a separate bench/lf_worker.py process on
one fresh SQLite file, tasks posted one at a time), but both processes run with wrappers that
record wall-clock times (the same clock in both: one machine) at each step:

    created      the task's created_at (the API stamps it before its write transaction)
    api_commit   the API's write transaction committed (on its writer thread)
    api_back     the API's event loop resumed after the commit
    wake_sent    the API began sending the wake-up datagram to the worker's socket (its
                 writer thread, just before the COMMIT: negative from api_back)
    woken        the worker's event loop read the datagram
    claim_call   the worker's loop called Queue.claim
    claim_thread the worker's writer thread took the claim (its transaction about to begin);
                 for an idle worker's claim, run on the event loop (Database.write_on_loop),
                 the loop took the writer's connection
    claim_begin  the claim's transaction began (lock held)
    claim_commit the claim's transaction committed
    claim_back   the worker's loop had the claim's answer
    handler      the handler started (SQLite: before claim_commit and claim_back, since the
                 handlers start while the claim's COMMIT runs; docs/state_machine.md)

and, for that early start, three more: `claim_begin -> hand-over` (the claim's statements ran
and the hook that hands the tasks to the event loop is called, just before the COMMIT),
`hand-over -> placed` (the event loop runs that hand-over: a thread wake-up if the claim ran
on the writer thread, nothing if it ran on the loop) and `placed -> handler` (a slot coroutine
starts the handler).

and prints, for each step, the p50/p90/p99 of the time since the step before, over all tasks.
The wrappers only read the clock; nothing in the path changes. Diagnosis only: the bench's
number is (c) in bench/run.py.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/pickup_trace.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ["created", "api_commit", "api_back", "wake_sent", "woken", "claim_call", "claim_thread",
         "claim_begin",
         "claim_commit", "claim_back", "handler"]


def _trace_writer_batches(events: dict[str, list[Any]]) -> None:
    """Database._run_batch: (started, lock held, committed) of every write transaction."""
    from shared.store.sqlite import database

    run_batch, begin = database.Database._run_batch, database.Database._begin
    begun: list[float] = [0.0]

    def traced_begin(self: Any, conn: Any) -> None:
        begin(self, conn)
        begun[0] = time.time()

    def traced_run_batch(self: Any, ops: list[Any]) -> list[Any]:
        started = time.time()
        out = run_batch(self, ops)
        events.setdefault("batches", []).append((started, begun[0], time.time()))
        return out

    # An idle worker's claim on the event loop (Database.write_on_loop): the loop takes the
    # connection and begins, and the writer thread runs only its COMMIT.
    begin_on_loop, commit_held = database.Database._begin_on_loop, database.Database._commit_held
    held: list[float] = [0.0, 0.0]

    async def traced_begin_on_loop(self: Any, conn: Any) -> None:
        held[0] = time.time()
        await begin_on_loop(self, conn)
        held[1] = time.time()

    def traced_commit_held(self: Any) -> Any:
        out = commit_held(self)
        events.setdefault("batches", []).append((held[0], held[1], time.time()))
        return out

    database.Database._begin = traced_begin  # type: ignore[method-assign]
    database.Database._run_batch = traced_run_batch  # type: ignore[method-assign]
    database.Database._begin_on_loop = traced_begin_on_loop  # type: ignore[method-assign]
    database.Database._commit_held = traced_commit_held  # type: ignore[method-assign]


def _dump_at_exit(events: dict[str, list[Any]]) -> None:
    out = os.environ["PICKUP_TRACE_OUT"]
    atexit.register(lambda: Path(out).write_text(json.dumps(events)))


def run_api(argv: list[str]) -> int:
    """`localflow api` with the API's side of the path recorded."""
    from shared.store.sqlite import store, wake

    events: dict[str, list[Any]] = {"inserts": [], "sends": []}
    _trace_writer_batches(events)
    insert_tasks = store.SQLiteStore.insert_tasks

    async def traced_insert(self: Any, tasks: Any, now: float) -> Any:
        out = await insert_tasks(self, tasks, now)
        events["inserts"].append(([t.id for t, _ in out], now, time.time()))
        return out

    send = wake.WakeNotifier._send

    def traced_send(self: Any) -> None:
        if self.dir.name.endswith(".wake"):  # before: the worker may wake before we return
            events["sends"].append(time.time())
        send(self)

    store.SQLiteStore.insert_tasks = traced_insert  # type: ignore[method-assign]
    wake.WakeNotifier._send = traced_send  # type: ignore[method-assign]
    _dump_at_exit(events)
    from localflow import cli

    return cli.main(argv)


def run_worker(argv: list[str]) -> None:
    """bench/lf_worker.py with the worker's side of the path recorded."""
    from shared.queue import Queue
    from shared.store.sqlite import database, wake
    from worker.pool import Worker

    events: dict[str, list[Any]] = {"woken": [], "claims": [], "hooks": [], "placed": []}
    _trace_writer_batches(events)
    readable = wake.WakeListener._readable
    before_commit, place = database.Database.before_commit, Worker._place
    wrapped: dict[Any, Any] = {}

    def traced_before_commit(self: Any, fn: Any) -> None:
        # The same wrapper for the same hook, so a hook asked for twice still runs once.
        def hook(fn: Any = fn) -> None:
            events["hooks"].append(time.time())
            fn()

        before_commit(self, wrapped.setdefault(fn, hook))

    def traced_place(self: Any, claimed: Any) -> None:
        events["placed"].append(([c.id for c in claimed], time.time()))
        place(self, claimed)

    def traced_readable(self: Any) -> None:
        events["woken"].append(time.time())
        readable(self)

    claim = Queue.claim

    async def traced_claim(self: Any, *args: Any, **kwargs: Any) -> Any:
        called = time.time()
        out = await claim(self, *args, **kwargs)
        events["claims"].append(([c.id for c in out], called, time.time()))
        return out

    wake.WakeListener._readable = traced_readable  # type: ignore[method-assign]
    Queue.claim = traced_claim  # type: ignore[method-assign]
    database.Database.before_commit = traced_before_commit  # type: ignore[method-assign]
    Worker._place = traced_place  # type: ignore[method-assign]
    _dump_at_exit(events)
    sys.argv = ["lf_worker", *argv]
    import runpy

    runpy.run_module("bench.lf_worker", run_name="__main__")


def _first_at_or_after(times: list[float], t: float) -> float | None:
    return next((x for x in times if x >= t), None)


def _batch_within(batches: list[list[float]], lo: float, hi: float) -> list[float] | None:
    return next((b for b in batches if lo <= b[0] <= hi), None)


def diagnose(tasks: int, gap: float, slots: int, loop: str = "uvloop") -> dict[str, Any]:
    import httpx

    from bench import procs
    from bench.localflow_side import SUBMIT_BODY, _percentiles, fresh_db

    workdir = Path(tempfile.mkdtemp(prefix="lf-pickup-trace-"))
    db = fresh_db(workdir, "pickup")
    api_out, worker_out = workdir / "api-trace.json", workdir / "worker-trace.json"
    port = procs.free_port()
    api = procs._start(
        [sys.executable, "-m", "bench.pickup_trace", "api", "api", "--addr", f"127.0.0.1:{port}"],
        workdir / "api.log",
        procs.clean_env(LOCALFLOW_DB=str(db), PICKUP_TRACE_OUT=str(api_out)),
    )
    api.url = f"http://127.0.0.1:{port}"
    procs._wait_healthy(api)
    result = workdir / "pickup.json"
    worker = procs._start(
        [sys.executable, "-m", "bench.pickup_trace", "worker", "--db", str(db), "--slots",
         str(slots), "--expect", str(tasks), "--out", str(result), "--loop", loop],
        workdir / "worker.log", procs.clean_env(PICKUP_TRACE_OUT=str(worker_out)),
        stdout=procs.subprocess.PIPE,
    )
    try:
        procs.wait_line(worker, "ready")
        with httpx.Client(base_url=api.url, timeout=10) as client:
            for _ in range(tasks):
                client.post("/api/tasks", json=SUBMIT_BODY).raise_for_status()
                time.sleep(gap)
        worker.popen.wait(timeout=60)
    finally:
        worker.stop()
        api.stop()
    a, w = json.loads(api_out.read_text()), json.loads(worker_out.read_text())
    starts = json.loads(result.read_text())["starts"]
    # Read: the database and the logs go (a failed run keeps them, for its logs).
    shutil.rmtree(workdir, ignore_errors=True)
    claims = {i: (called, back) for ids, called, back in w["claims"] for i in ids}
    rows, traced_ids = [], []
    for ids, created, back in a["inserts"]:
        tid = ids[0]
        api_batch = _batch_within(a["batches"], created, back)
        sent = _first_at_or_after(a["sends"], created)
        woken = _first_at_or_after(w["woken"], sent) if sent else None
        if tid not in claims or tid not in starts or None in (api_batch, sent, woken):
            continue
        called, claim_back = claims[tid]
        claim_batch = _batch_within(w["batches"], called, claim_back)
        if claim_batch is None:
            continue
        rows.append([created, api_batch[2], back, sent, woken, called, claim_batch[0],
                     claim_batch[1],
                     claim_batch[2], claim_back, starts[tid], api_batch[0], api_batch[1]])
        traced_ids.append(tid)
    steps = {}
    for k in range(1, len(STEPS)):
        steps[f"{STEPS[k - 1]} -> {STEPS[k]}"] = _percentiles(
            sorted((r[k] - r[k - 1]) * 1000 for r in rows))
    # From the API's commit to the worker holding the lock: what the wake-up path costs
    # beyond the API's own write (a wake-up sent before the API's COMMIT shortens it).
    begin = STEPS.index("claim_begin")
    steps["api_commit -> claim_begin"] = _percentiles(sorted((r[begin] - r[1]) * 1000
                                                             for r in rows))
    # The handler starts during the claim's COMMIT (SQLite): from the lock to the handler,
    # and the handler's start against the commit's end (negative: started before it).
    handler = STEPS.index("handler")
    steps["claim_begin -> handler"] = _percentiles(sorted((r[handler] - r[begin]) * 1000
                                                          for r in rows))
    commit = STEPS.index("claim_commit")
    steps["claim_commit -> handler"] = _percentiles(sorted((r[handler] - r[commit]) * 1000
                                                           for r in rows))
    # The API's side in order (the rows carry its write batch's start and lock): where the
    # time between the stamp and the wake-up goes, before the commit's fsync.
    for name, (i, j) in {"created -> api_thread": (0, 11), "api_thread -> api_begin": (11, 12),
                         "api_begin -> wake_sent": (12, 3),
                         "wake_sent -> api_commit": (3, 1)}.items():
        steps[name] = _percentiles(sorted((r[j] - r[i]) * 1000 for r in rows))
    # The early start's hand-over (the claim's hook on the writer thread -> the event loop).
    placed: dict[str, float] = {}
    for ids, at in w["placed"]:
        for i in ids:
            placed.setdefault(i, at)  # the first placing is the early start's
    handovers = []
    for r, tid in zip(rows, traced_ids, strict=True):
        hook = _first_at_or_after(w["hooks"], r[begin])
        if hook is not None and tid in placed and hook <= placed[tid] <= r[handler]:
            handovers.append((r[begin], hook, placed[tid], r[handler]))
    for name, (i, j) in {"claim_begin -> hand-over": (0, 1), "hand-over -> placed": (1, 2),
                         "placed -> handler": (2, 3)}.items():
        if handovers:
            steps[name] = _percentiles(sorted((h[j] - h[i]) * 1000 for h in handovers))
    # The worker's whole side (from the call; from the API's commit, which it waits for).
    call = STEPS.index("claim_call")
    steps["claim_call -> handler"] = _percentiles(sorted((r[handler] - r[call]) * 1000
                                                         for r in rows))
    steps["api_commit -> handler"] = _percentiles(sorted((r[handler] - r[1]) * 1000
                                                         for r in rows))
    steps["created -> handler (total)"] = _percentiles(sorted((r[handler] - r[0]) * 1000
                                                              for r in rows))
    return {"tasks": tasks, "traced": len(rows), "gap_ms": gap * 1000, "steps_ms": steps,
            "load_average": os.getloadavg()[0]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "api":
        sys.exit(run_api(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        run_worker(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=300)
    p.add_argument("--gap", type=float, default=0.005)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--worker-loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = p.parse_args()
    load = os.getloadavg()[0]
    out = diagnose(args.tasks, args.gap, args.slots, args.worker_loop)
    print(f"{out['traced']}/{out['tasks']} tasks traced; load average {load:.2f} -> "
          f"{out['load_average']:.2f}")
    for step, pct in out["steps_ms"].items():
        print(f"  {step:32} p50 {pct['p50']:7.3f}  p90 {pct['p90']:7.3f}  "
              f"p99 {pct['p99']:7.3f}  max {pct['max']:8.3f} ms")


if __name__ == "__main__":
    main()
