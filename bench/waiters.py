"""What parked waiters cost the API: N concurrent GET /api/tasks/{id}?wait=60 on idle tasks.

    uv run python bench/waiters.py                      # 1000 waiters, SQLite, 20 s window
    uv run python bench/waiters.py --waiters 200 --seconds 5
    uv run python bench/waiters.py --db postgresql://user:pw@host/db   # a migrated, empty db

A `localflow api` process (no worker) on a fresh database; N tasks submitted with a one-hour
delay (idle: nothing will finish them); N raw HTTP/1.1 connections each send one
`GET /api/tasks/{id}?wait=60`. Once all are parked, the API process's CPU time (utime+stime of
all its threads, /proc) is read over --seconds: the cost of holding them, as % of one core,
beside the same API's idle CPU with no waiter measured first. Then, from this process (another
process to the API, as a worker would be), tasks are cancelled one at a time through the store
and the time from the cancel's commit to its waiter's answer is taken: the wake-up latency with
N waiters parked. The issue's target: under 5 % of a core for 1000 waiters, answers within a
few milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import httpx

from bench import procs
from shared.queue import Queue
from shared.settings import Settings
from shared.store import open_store


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--waiters", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=20.0, help="CPU measuring window")
    p.add_argument("--wakes", type=int, default=20, help="tasks finished to time wake-ups")
    p.add_argument("--db", help="a PostgreSQL URL (default: a fresh SQLite file)")
    return p.parse_args(argv)


async def park(host: str, port: int, task_id: str, answered: dict[str, float],
               ready: asyncio.Event, counter: list[int], total: int) -> None:
    """One waiter: a raw HTTP/1.1 request (lighter than a client library, so the bench's
    own process is not the bottleneck); records when the answer's head arrived."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /api/tasks/{task_id}?wait=60 HTTP/1.1\r\nHost: {host}\r\n"
                 "Connection: close\r\n\r\n".encode())
    await writer.drain()
    counter[0] += 1
    if counter[0] == total:
        ready.set()
    head = await reader.readuntil(b"\r\n\r\n")
    answered[task_id] = time.time()
    assert b"200" in head.split(b"\r\n", 1)[0], head[:200]
    await reader.read()
    writer.close()


async def main(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="lf-waiters-"))
    db = args.db or str(workdir / "waiters.db")
    api = procs.localflow("api", db, workdir)  # type: ignore[arg-type]
    assert api.url is not None
    host, port = "127.0.0.1", int(api.url.rsplit(":", 1)[1])
    result: dict = {"waiters": args.waiters, "window_seconds": args.seconds,
                    "engine": "postgresql" if args.db else "sqlite"}
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
            ids: list[str] = []
            for start in range(0, args.waiters, 500):
                n = min(500, args.waiters - start)
                r = await client.post("/api/tasks/batch", json={"tasks": [
                    {"type": "shell", "payload": {"command": "true"}, "delay": 3600}
                ] * n})
                r.raise_for_status()
                ids += r.json()["ids"]
        await asyncio.sleep(1.0)
        before = procs.cpu_seconds(api.pid)
        await asyncio.sleep(args.seconds)
        idle = (procs.cpu_seconds(api.pid) - before) / args.seconds

        answered: dict[str, float] = {}
        ready = asyncio.Event()
        counter = [0]
        waiters = [asyncio.create_task(park(host, port, i, answered, ready, counter, len(ids)))
                   for i in ids]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(3.0)  # every request read and parked (parsing, the first reads)
        assert not answered, f"{len(answered)} waiters answered before anything finished"
        before = procs.cpu_seconds(api.pid)
        began = time.monotonic()
        await asyncio.sleep(args.seconds)
        spent = procs.cpu_seconds(api.pid) - before
        parked = spent / (time.monotonic() - began)
        result.update(api_cpu_idle_pct=round(idle * 100, 2),
                      api_cpu_parked_pct=round(parked * 100, 2),
                      api_cpu_parked_extra_pct=round((parked - idle) * 100, 2))

        # Wake-ups from another process: cancel through a store of our own, one at a time.
        store = await open_store(Settings(db=db), migrate_first=False)
        queue = Queue(store)
        lags = []
        try:
            for task_id in ids[:args.wakes]:
                await queue.cancel(task_id)
                committed = time.time()
                deadline = time.monotonic() + 30
                while task_id not in answered and time.monotonic() < deadline:
                    await asyncio.sleep(0.0005)
                lags.append((answered[task_id] - committed) * 1000)
        finally:
            await store.close()
        result.update(wake_ms_p50=round(statistics.median(lags), 2),
                      wake_ms_max=round(max(lags), 2))
        others = [i for i in ids[args.wakes:] if i in answered]
        result["woken_wrongly"] = len(others)
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        api.stop()
    return result


if __name__ == "__main__":
    out = asyncio.run(main(parse_args()))
    print(json.dumps(out, indent=2))
