"""LocalFlow benchmark, beside Huey's SqliteHuey, in one run on this machine.

    uv run python bench/run.py            # full run (~2 minutes on 2 cores)
    uv run python bench/run.py --quick    # seconds: proves the script works, numbers are noise
    uv run python bench/run.py --profile  # also py-spy profiles of the API and the worker
    uv run python bench/run.py --backends sqlite   # without the PostgreSQL half
    uv run python bench/run.py --pg-url postgresql://u:p@host:5432/postgres  # a server of yours

Prints a table and writes bench/results/bench-<time>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench import huey_side, localflow_side, pg_side, profiling
from bench.http_load import wrk_path

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ["submit", "e2e", "scale", "pickup", "idle", "huey"]
BACKENDS = ["sqlite", "postgres"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not numbers")
    p.add_argument("--profile", action="store_true", help="also profile the API and worker")
    p.add_argument("--seconds", type=float, help="duration of each HTTP load (default 10)")
    p.add_argument("--tasks", type=int, help="tasks per end-to-end run (default 20000)")
    p.add_argument("--connections", type=int, default=64, help="HTTP connections (default 64)")
    p.add_argument("--batch-size", type=int, default=100, help="tasks per batch request")
    p.add_argument("--slots", type=int, nargs="+", default=[8, 64], help="worker slots to try")
    p.add_argument("--split", type=int, default=2, metavar="P",
                   help="also run the largest slot count as P worker processes sharing it, "
                        "as `localflow worker` started P times (0: not)")
    p.add_argument("--pickup-tasks", type=int, help="tasks for pickup latency (default 500)")
    p.add_argument("--pickup-gap", type=float, default=0.005, help="seconds between submissions")
    p.add_argument("--idle-seconds", type=float, help="idle CPU window (default 10)")
    p.add_argument("--only", nargs="+", choices=PARTS, default=PARTS, metavar="PART",
                   help=f"run only these parts: {' '.join(PARTS)} (default all)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS,
                   help="queues to measure (default both); PostgreSQL runs (a) and (e)")
    p.add_argument("--pg-url", help="a PostgreSQL server whose user may create databases "
                   "(default: a throwaway cluster of the machine's PostgreSQL, as the tests "
                   "start, with fsync on)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4],
                   help="worker processes to try in (e) scale-out (default 1 2 4)")
    p.add_argument("--scale-tasks", type=int, help="tasks per scale-out run (default 10000)")
    p.add_argument("--scale-slots", type=int, default=8, help="slots per worker process in (e)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = p.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (1.0 if quick else 10.0)
    args.tasks = args.tasks or (300 if quick else 20000)
    args.scale_tasks = args.scale_tasks or (200 if quick else 10000)
    args.pickup_tasks = args.pickup_tasks or (20 if quick else 500)
    args.idle_seconds = args.idle_seconds or (1.0 if quick else 10.0)
    return args


def machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str | None:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return None
        return (out.stdout or out.stderr).strip().splitlines()[0]

    import huey

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "huey": huey.__version__, "wrk": version(["wrk", "--version"]) if wrk_path() else None,
        "py_spy": profiling.pyspy_path(),
    }


def step(name: str, fn: Any, *args: Any) -> Any:
    print(f"... {name}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result = fn(*args)
    except Exception as exc:  # one broken step should not hide the other numbers
        print(f"    FAILED: {exc}", file=sys.stderr, flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}
    print(f"    done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lfbench-"))
    busy = os.getloadavg()[0]
    if busy > 0.5:
        print(f"warning: load average {busy:.1f} before the run: other work on this machine "
              "will lower (and scatter) every number; the ratios suffer less, as LocalFlow and "
              "Huey alternate", file=sys.stderr)
    if wrk_path():
        print(f"load generator: wrk ({wrk_path()})", file=sys.stderr)
    else:
        print("load generator: wrk not found (`apt-get install -y wrk`); using asyncio httpx, "
              "which tops out near 2-3k requests/s per core and so under-reports (a)",
              file=sys.stderr)
    out: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick,
        "command": " ".join(["uv run python bench/run.py", *sys.argv[1:]]),
        "machine": machine(), "load_average_before": os.getloadavg(),
        "localflow": {}, "huey": {}, "postgres": {},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    lf, hu, pg = out["localflow"], out["huey"], out["postgres"]
    server = None
    try:
        lf["disk_before"] = step("disk probe", localflow_side.disk_probe, workdir, 200)
        # Compiled bytecode first, as a deployment has it (bench/procs.py PYCACHE).
        step("bytecode cache", localflow_side.warm_up, workdir)
        if "postgres" in args.backends and {"submit", "scale"} & set(args.only):
            server = step("PostgreSQL server", pg_side.open_server, args.pg_url)
            if isinstance(server, dict):  # no server here: say why, measure SQLite alone
                pg["skipped"], server = server["error"], None
            else:
                pg["server"] = server.describe()
        if "submit" in args.only and "sqlite" in args.backends:
            lf["submit"] = step("(a) HTTP submit", localflow_side.http_submit, workdir,
                                args.seconds, args.connections, args.batch_size)
        if "submit" in args.only and server is not None:
            pg["submit"] = step("(a) HTTP submit, PostgreSQL", localflow_side.http_submit,
                                workdir, args.seconds, args.connections, args.batch_size,
                                server.new_database())
        # (e) the two backends alternate at each process count, as LocalFlow and Huey do below.
        lf["scale_out"], pg["scale_out"] = [], []
        for processes in args.processes if "scale" in args.only else []:
            if "sqlite" in args.backends:
                lf["scale_out"].append(step(
                    f"(e) scale-out, SQLite, {processes} worker processes",
                    localflow_side.scale_out, workdir,
                    str(localflow_side.fresh_db(workdir, f"scale-{processes}")),
                    args.scale_tasks, processes, args.scale_slots))
            if server is not None:
                pg["scale_out"].append(step(
                    f"(e) scale-out, PostgreSQL, {processes} worker processes",
                    localflow_side.scale_out, workdir, server.new_database(),
                    args.scale_tasks, processes, args.scale_slots))
        # LocalFlow and Huey alternate, so a slow spell of the disk hits both alike.
        lf["end_to_end"], hu["runs"] = [], []
        for slots in args.slots if "sqlite" in args.backends else []:
            if "huey" in args.only:
                hu["runs"].append(step(f"(a', b') Huey, {slots} workers",
                                       huey_side.enqueue_and_consume, workdir, args.tasks, slots))
            if "e2e" in args.only:
                lf["end_to_end"].append(step(f"(b) end to end, {slots} slots",
                                             localflow_side.end_to_end, workdir, args.tasks,
                                             slots))
            if "e2e" in args.only and args.split > 1 and slots == max(args.slots):
                # The same slots over P worker processes on one file, as a user runs a second
                # worker to use a second core (docs/containers.md). Measured as (e) is.
                lf["end_to_end_split"] = step(
                    f"(b) end to end, {slots} slots as {args.split} processes",
                    localflow_side.scale_out, workdir,
                    str(localflow_side.fresh_db(workdir, f"e2e-split-{slots}")), args.tasks,
                    args.split, slots // args.split)
        if "pickup" in args.only and "sqlite" in args.backends:
            lf["pickup"] = step("(c) pickup latency", localflow_side.pickup_latency, workdir,
                                args.pickup_tasks, args.pickup_gap)
        if "idle" in args.only and "sqlite" in args.backends:
            lf["idle"] = step("(d) idle worker CPU", localflow_side.idle_cpu, workdir,
                              args.idle_seconds)
        lf["disk_after"] = step("disk probe", localflow_side.disk_probe, workdir, 200)
        if args.profile:
            out["profile"] = profile(args, workdir)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    out["load_average_after"] = os.getloadavg()
    out["ratios"] = ratios(out)
    return out


def profile(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if not profiling.pyspy_path():
        print("py-spy not found (pip install py-spy, or set PY_SPY): no profile",
              file=sys.stderr)
        return {"skipped": "py-spy not found"}
    args.out.mkdir(parents=True, exist_ok=True)
    return {
        "api_under_a": step("profile: API under (a)", profiling.profile_api, workdir, args.out,
                            args.seconds, args.connections),
        "api_under_a_batch": step("profile: API under (a), batches", profiling.profile_api,
                                  workdir, args.out, args.seconds, args.connections,
                                  args.batch_size),
        **{f"worker_under_b_{s}_slots": step(f"profile: worker under (b), {s} slots",
                                             profiling.profile_worker, workdir, args.out,
                                             args.tasks, s) for s in args.slots},
    }


def _ok(d: Any) -> bool:
    return isinstance(d, dict) and "error" not in d


def ratios(out: dict[str, Any]) -> dict[str, Any]:
    lf, runs = out["localflow"], [r for r in out["huey"].get("runs", []) if _ok(r)]
    result: dict[str, Any] = {}
    if runs:
        huey_enqueue = sum(r["enqueue_per_s"] for r in runs) / len(runs)
        sub = lf.get("submit", {})
        if _ok(sub) and "single" in sub:
            result["a_http_single_vs_huey_enqueue"] = sub["single"]["tasks_per_s"] / huey_enqueue
        if _ok(sub) and "tasks_per_s" in sub.get("batch", {}):
            result["a_http_batch_vs_huey_enqueue"] = sub["batch"]["tasks_per_s"] / huey_enqueue
        by_workers = {r["workers"]: r for r in runs}
        for e2e in lf.get("end_to_end", []):
            if _ok(e2e) and e2e["slots"] in by_workers:
                result[f"b_end_to_end_{e2e['slots']}_slots_vs_huey"] = (
                    e2e["tasks_per_s"] / by_workers[e2e["slots"]]["tasks_per_s"]
                )
        split = lf.get("end_to_end_split")
        if _ok(split) and split:
            slots = split["processes"] * split["slots_per_process"]
            if slots in by_workers:
                result[f"b_end_to_end_{slots}_slots_split_vs_huey"] = (
                    split["tasks_per_s"] / by_workers[slots]["tasks_per_s"])
    return result


def table(out: dict[str, Any]) -> str:
    lf, ratio = out["localflow"], out["ratios"]
    huey = {r["workers"]: r for r in out["huey"].get("runs", []) if _ok(r)}
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    def failed(label: str, d: Any) -> bool:
        if d is None:
            return True
        if not _ok(d):
            add(label, "FAILED", str(d.get("error", d))[:300])
            return True
        return False

    d = lf.get("disk_before")
    if not failed("disk probe", d):
        after = lf["disk_after"] if _ok(lf.get("disk_after")) else d
        add("disk: one fsync'd SQLite commit", f"p50 {d['commit_ms']['p50']:.2f} ms",
            f"p90 {d['commit_ms']['p90']:.2f} ms; after the run p50 "
            f"{after['commit_ms']['p50']:.2f} ms (both queues pay this per transaction)")
    sub = lf.get("submit")
    if not failed("(a) LocalFlow HTTP submit", sub):
        s = sub["single"]
        add("(a) LocalFlow POST /api/tasks", f"{s['tasks_per_s']:,.0f} tasks/s",
            f"{s['tool']} c={out['config']['connections']}: p50 "
            f"{s['latency_ms'].get('p50', 0):.1f} ms, p99 {s['latency_ms'].get('p99', 0):.1f} ms, "
            f"{s['errors']} errors; API process CPU {s['api_cpu_percent']:.0f}%")
        b = sub["batch"]
        if "skipped" in b:
            add("(a) LocalFlow POST /api/tasks/batch", "skipped", b["skipped"])
        else:
            add("(a) LocalFlow POST /api/tasks/batch", f"{b['tasks_per_s']:,.0f} tasks/s",
                f"{b['batch_size']} tasks per request, {b['requests_per_s']:,.0f} requests/s, "
                f"{b['errors']} errors")
    if huey:
        rates = [r["enqueue_per_s"] for r in huey.values()]
        add("(a') Huey enqueue, in-process", f"{sum(rates) / len(rates):,.0f} tasks/s",
            "mean of " + ", ".join(f"{r:,.0f}" for r in rates) + "; one thread, no HTTP")
    # Issue 10's targets, as ratios against Huey in the same run.
    for key, label, target in (
        ("a_http_single_vs_huey_enqueue", "(a) ratio single / Huey", "target >= 2x"),
        ("a_http_batch_vs_huey_enqueue", "(a) ratio batch / Huey", "target >= 20x"),
    ):
        if key in ratio:
            add(label, f"{ratio[key]:.2f}x", target)
    for e2e in lf.get("end_to_end", []):
        if failed("(b) LocalFlow end to end", e2e):
            continue
        slots = e2e["slots"]
        add(f"(b) LocalFlow end to end, {slots} slots", f"{e2e['tasks_per_s']:,.0f} tasks/s",
            f"{e2e['tasks']} no-op tasks in {e2e['seconds']:.2f}s; worker CPU "
            f"{e2e['worker_cpu_percent']:.0f}%, {e2e['write_transactions_per_task']:.2f} "
            "commits/task" + (f", {e2e['tasks_per_claim']:.1f} tasks/claim, claim p50 "
                              f"{e2e['claim_ms']['p50']:.1f} ms" if "claims" in e2e else ""))
        if slots in huey:
            h = huey[slots]
            add(f"(b') Huey end to end, {slots} workers", f"{h['tasks_per_s']:,.0f} tasks/s",
                f"thread consumer, {h['tasks']} tasks in {h['consume_seconds']:.2f}s")
        key = f"b_end_to_end_{slots}_slots_vs_huey"
        if key in ratio:
            target = {8: "target >= 4x", 64: "target >= 8x"}.get(slots, "")
            add(f"(b) ratio, {slots} slots / Huey", f"{ratio[key]:.2f}x", target)
        split = lf.get("end_to_end_split")
        if split is not None and slots == split.get("processes", 0) * split.get(
                "slots_per_process", 0) and not failed("(b) end to end, split", split):
            add(f"(b) LocalFlow end to end, {slots} slots as {split['processes']} processes",
                f"{split['tasks_per_s']:,.0f} tasks/s",
                f"{split['processes']} x `localflow worker` of {split['slots_per_process']} "
                f"slots on one file; workers CPU {split['workers_cpu_percent']:.0f}% (of "
                f"{split['processes']} cores), {split['write_transactions_per_task']:.3f} "
                "commits/task")
            key = f"b_end_to_end_{slots}_slots_split_vs_huey"
            if key in ratio:
                add(f"(b) ratio, {slots} slots as {split['processes']} processes / Huey",
                    f"{ratio[key]:.2f}x", "target >= 8x (one core per process)")
    pg = out.get("postgres", {})
    if "skipped" in pg:
        add("PostgreSQL", "skipped", str(pg["skipped"])[:300])
    elif "server" in pg:
        srv = pg["server"]
        add("PostgreSQL server", str(srv["version"]),
            f"{'throwaway cluster' if srv['throwaway_cluster'] else srv['url']}, fsync "
            f"{srv['fsync']}, synchronous_commit {srv['synchronous_commit']}, shared_buffers "
            f"{srv['shared_buffers']}; on this machine, sharing its cores")
    sub = pg.get("submit")
    if sub is not None and not failed("(a) PostgreSQL HTTP submit", sub):
        s = sub["single"]
        add("(a) PostgreSQL POST /api/tasks", f"{s['tasks_per_s']:,.0f} tasks/s",
            f"{s['tool']} c={out['config']['connections']}: p50 "
            f"{s['latency_ms'].get('p50', 0):.1f} ms, p99 {s['latency_ms'].get('p99', 0):.1f} ms, "
            f"{s['errors']} errors; API process CPU {s['api_cpu_percent']:.0f}%")
        b = sub["batch"]
        if "tasks_per_s" in b:
            add("(a) PostgreSQL POST /api/tasks/batch", f"{b['tasks_per_s']:,.0f} tasks/s",
                f"{b['batch_size']} tasks per request, {b['errors']} errors")
    scale = (("SQLite", lf.get("scale_out", [])), ("PostgreSQL", pg.get("scale_out", [])))
    for name, runs in scale:
        for e in runs:
            if failed(f"(e) {name} scale-out", e):
                continue
            add(f"(e) {name}, {e['processes']} worker process{'es' if e['processes'] > 1 else ''}",
                f"{e['tasks_per_s']:,.0f} tasks/s",
                f"{e['tasks']} no-op tasks in {e['seconds']:.2f}s, {e['slots_per_process']} slots "
                f"each; per process {e['per_process']}; workers' CPU "
                f"{e['workers_cpu_percent']:.0f}% of one core, "
                f"{e['write_transactions_per_task']:.2f} commits/task")
    pk = lf.get("pickup")
    if not failed("(c) pickup latency", pk):
        c, s = pk["from_created_ms"], pk["from_client_send_ms"]
        add("(c) pickup: created_at -> handler start", f"p50 {c['p50']:.2f} ms",
            f"p99 {c['p99']:.2f} ms, max {c['max']:.1f} ms; {pk['tasks']} tasks, API and "
            "worker in two processes")
        add("(c) pickup: client send -> handler start", f"p50 {s['p50']:.2f} ms",
            f"p99 {s['p99']:.2f} ms, max {s['max']:.1f} ms")
    idle = lf.get("idle")
    if not failed("(d) idle worker CPU", idle):
        add("(d) idle `localflow worker` CPU", f"{idle['percent_of_one_core']:.2f}% of a core",
            f"{idle['cpu_seconds']:.3f} CPU-s in {idle['seconds']:.1f}s (utime+stime)")
    rss = []  # resident memory (VmRSS) after each run
    lf_sub = lf.get("submit")  # LocalFlow on SQLite (`sub` may be PostgreSQL's by now)
    if _ok(lf_sub) and lf_sub.get("api_rss_mb_idle"):
        # Idle a few seconds after (a), having given back what the load left (the issue's
        # "after the run"); then right after the loads, before that.
        rss.append(f"API {lf_sub['api_rss_idle_seconds']:.0f} s after (a) "
                   f"{lf_sub['api_rss_mb_idle']:.1f} MB "
                   f"(right after {lf_sub['api_rss_mb_after']:.1f})")
    elif _ok(lf_sub) and lf_sub.get("api_rss_mb_after"):
        rss.append(f"API after (a) {lf_sub['api_rss_mb_after']:.1f} MB")
    rss += [f"worker after (b) {e['slots']} slots {e['worker_rss_mb_after']:.0f} MB"
            for e in lf.get("end_to_end", []) if _ok(e) and e.get("worker_rss_mb_after")]
    if _ok(idle) and idle.get("rss_mb"):
        rss.append(f"idle `localflow worker` {idle['rss_mb']:.0f} MB")
    if rss:
        first = rss[0].split(" MB")[0].rsplit(" ", 1)[-1]
        add("(e) memory (RSS)", f"{first} MB", "; ".join(rss))
    before, after = out["load_average_before"][0], out["load_average_after"][0]
    add("machine load average (1 min)", f"{before:.2f} -> {after:.2f}",
        f"{out['machine']['cpus']} CPUs; 'before' is others' work alone, 'after' includes "
        "the bench's own (up to ~2)")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>{vwidth}}  {c}" for a, b, c in rows)


def profile_text(prof: dict[str, Any]) -> str:
    lines = []
    for name, p in prof.items():
        if not _ok(p) or "samples" not in p:
            lines.append(f"{name}: {p}")
            continue
        lines.append(f"\n{name}: {p['samples']} samples, threads {p['threads_pct']}  ({p['raw']})")
        for title, key in (("event loop, self time", "main_self_pct"),
                           ("LocalFlow code, inclusive", "localflow_inclusive_pct")):
            lines.append(f"  {title}:")
            lines.extend(f"    {pct:5.1f}%  {func}" for func, pct in p[key][:12])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(out, indent=2))
    print(table(out))
    if "profile" in out:
        print(profile_text(out["profile"]))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
