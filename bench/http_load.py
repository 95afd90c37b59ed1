"""Load generators for POST /api/tasks: wrk when installed (C, not the bottleneck), else an
asyncio httpx loop (Python: ~2-3k requests/s per core, so it under-reports a fast server)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SUBMIT_BODY: dict[str, Any] = {"type": "shell", "payload": {"command": "true"}}


@dataclass
class LoadResult:
    tool: str
    seconds: float
    requests: int
    ok: int  # 2xx answers
    errors: int  # non-2xx answers and socket errors
    latency_ms: dict[str, float] = field(default_factory=dict)
    command: str = ""

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_load(url: str, body: Any, seconds: float, connections: int, workdir: Path) -> LoadResult:
    if wrk_path():
        return run_wrk(url, body, seconds, connections, workdir)
    return asyncio.run(run_httpx(url, body, seconds, connections))


def run_wrk(url: str, body: Any, seconds: float, connections: int, workdir: Path) -> LoadResult:
    script = workdir / f"post-{time.monotonic_ns()}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{json.dumps(body)}]==]\n"
    )
    # One wrk thread: this machine has two cores and the server under test needs one.
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out, " ".join([*argv[:-3], script.name, url]))


def parse_wrk(out: str, command: str) -> LoadResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if total is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    requests = int(total.group(1))
    seconds = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in sock.groups()) if sock else 0
    )
    latency = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        latency[f"p{pct}"] = float(value) * scale
    ok = requests - (int(non2xx.group(1)) if non2xx else 0)
    return LoadResult("wrk", seconds, requests, ok, errors, latency, command)


async def run_httpx(url: str, body: Any, seconds: float, concurrency: int) -> LoadResult:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    counts = {"ok": 0, "bad": 0}
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def one_connection() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    resp = await client.post(url, content=payload, headers=headers)
                    good = 200 <= resp.status_code < 300
                except httpx.HTTPError:
                    good = False
                latencies.append((time.perf_counter() - sent) * 1000)
                counts["ok" if good else "bad"] += 1

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies \
        else (lambda q: 0.0)
    return LoadResult(
        "httpx (wrk not installed)", elapsed, counts["ok"] + counts["bad"], counts["ok"],
        counts["bad"], {"p50": pick(0.50), "p99": pick(0.99)},
        f"asyncio httpx, {concurrency} concurrent requests, {seconds:g}s",
    )


def batch_body(base_url: str, size: int) -> tuple[Any | None, str]:
    """Find the body shape POST /api/tasks/batch accepts; (None, why) if it is not there."""
    items = [SUBMIT_BODY] * size
    note = ""
    for body in ({"tasks": items}, items):
        try:
            resp = httpx.post(f"{base_url}/api/tasks/batch", json=body, timeout=30)
        except httpx.HTTPError as exc:
            return None, f"request failed: {exc!r}"
        if resp.status_code in (404, 405):
            return None, f"endpoint answers {resp.status_code}: not built yet"
        if 200 <= resp.status_code < 300:
            return body, ""
        note = f"endpoint answers {resp.status_code}: {resp.text[:200]}"
    return None, note
