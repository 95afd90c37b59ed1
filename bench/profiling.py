"""Sampling profiles of the API under (a) and the worker under (b), with py-spy.

py-spy attaches from outside (no code change, little overhead with --nonblocking); it is not a
project dependency. Install it anywhere, e.g. `pip install py-spy`, or point PY_SPY at it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procs
from bench.http_load import SUBMIT_BODY, batch_body, run_load
from bench.localflow_side import _pre_enqueue, fresh_db

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


def pyspy_path() -> str | None:
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


def _record(pid: int, raw: Path, seconds: float | None = None) -> subprocess.Popen[bytes]:
    argv = [pyspy_path() or "py-spy", "record", "--pid", str(pid), "--rate", "250",
            "--format", "raw", "--threads", "--nonblocking", "-o", str(raw)]
    if seconds:
        argv += ["--duration", str(max(1, round(seconds)))]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_api(
    workdir: Path, out_dir: Path, seconds: float, connections: int, batch_size: int = 0
) -> dict[str, Any]:
    """The API process under (a): single submissions, or batches of `batch_size`."""
    name = f"profile-api-batch{batch_size}" if batch_size else "profile-api"
    db = fresh_db(workdir, name)
    api = procs.localflow("api", db, workdir)
    raw = out_dir / f"{name}.collapsed"
    try:
        url, body = f"{api.url}/api/tasks", SUBMIT_BODY
        if batch_size:
            body, why = batch_body(api.url, batch_size)
            if body is None:
                return {"skipped": why}
            url, connections = f"{url}/batch", max(2, connections // 8)
        spy = _record(api.pid, raw, seconds)
        run_load(url, body, seconds, connections, workdir)
        spy.wait(timeout=60)
    finally:
        api.stop()
    return summarize(raw)


def profile_worker(workdir: Path, out_dir: Path, n: int, slots: int) -> dict[str, Any]:
    db = fresh_db(workdir, "profile-worker")
    asyncio.run(_pre_enqueue(db, n))
    raw = out_dir / f"profile-worker-{slots}.collapsed"
    worker = procs.python_module(
        "bench.lf_worker", workdir, "--db", str(db), "--slots", str(slots), "--expect", str(n),
        "--out", str(workdir / "profile-worker.json"),
    )
    try:
        procs.wait_line(worker, "ready")  # Python is up: py-spy can find the interpreter
        spy = _record(worker.pid, raw)  # records until the worker exits
        worker.popen.wait(timeout=600)
        spy.wait(timeout=60)
    finally:
        worker.stop()
    return summarize(raw)


def _short(file: str) -> str:
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1]
    repo = str(procs.REPO) + "/"
    if file.startswith(repo):
        return file[len(repo):]
    return Path(file).name if "/lib/python" in file else file


def _frame_key(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{_short(m.group('file'))}:{m.group('func')}"


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Per-thread share of samples; the main (event-loop) thread's top functions by self time
    and by inclusive time; the project's own functions by inclusive time."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    main_total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # "thread (1234): MainThread"; the main thread runs the event loop.
        name = frames[0].partition(": ")[2] or frames[0]
        is_main = name == "MainThread"
        threads[re.sub(r"-\d+", "", name)] += count
        if not is_main:
            continue
        main_total += count
        keys = [_frame_key(f) for f in frames[1:]]
        if keys:
            self_time[keys[-1]] += count
        for key in set(keys):
            inclusive[key] += count
            if key.split(":", 1)[0].split("/", 1)[0] in ("api", "shared", "worker", "localflow"):
                ours[key] += count
    total = sum(threads.values()) or 1
    main = main_total or 1

    def table(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / main, 1)) for k, v in counter.most_common(top)]

    return {
        "samples": total, "raw": str(raw),
        "threads_pct": {k: round(100 * v / total, 1) for k, v in threads.items()},
        "main_self_pct": table(self_time),
        "main_inclusive_pct": table(inclusive),
        "localflow_inclusive_pct": table(ours),
    }
