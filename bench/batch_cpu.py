"""CPU per task of `POST /api/tasks/batch` in one process, without sockets: the API's ASGI app
on a fresh SQLite file, N batch requests of 100 tasks with 8 in flight (as bench/run.py's 8
connections), CPU time over N x 100 tasks, split into the event loop's thread
(time.thread_time() there) and the rest (the database writer thread). On a shared machine CPU
time is steadier than wall time; alternate variants in one sitting (`--runs`).

    uv run python bench/batch_cpu.py --requests 300 --runs 4
    uv run python bench/batch_cpu.py --requests 300 --runs 4 --compare-no-triggers
    uv run python bench/batch_cpu.py --requests 300 --profile tottime   # cProfile of the loop

`--compare-no-triggers` alternates with a scratch copy of the schema whose AFTER INSERT
triggers on `tasks` (the event log's and the kept counts') are dropped: what they cost the
insert. uvicorn's HTTP parsing is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import create_app
from bench.asgi_post import post_json
from shared.heap import freeze_start_up_objects
from shared.queue import Queue
from shared.settings import Settings
from shared.store import open_store
from shared.store.sqlite import migrations

ITEM = {"type": "shell", "payload": {"command": "true"}}
IN_FLIGHT = 8
INSERT_TRIGGERS = ("tasks_inserted_event", "tasks_counted_insert")


async def measure(
    requests: int, size: int, triggers: bool, profile: str | None, keys: bool,
    pg_url: str | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = pg_url or str(Path(tmp) / "batch.db")
        if not pg_url:
            migrations.migrate(db)
        if not triggers and not pg_url:
            with sqlite3.connect(db) as conn:
                for name in INSERT_TRIGGERS:
                    conn.execute(f"DROP TRIGGER {name}")
        settings = Settings(db=db)
        store = await open_store(settings, migrate_first=False)
        app = create_app(Queue(store, settings=settings), settings)
        freeze_start_up_objects()  # as localflow/http_server.py does
        statuses: list[int] = []
        counter = iter(range(10**9))

        def body() -> bytes:
            if not keys:
                return msgspec.json.encode({"tasks": [ITEM] * size})
            return msgspec.json.encode({"tasks": [
                {**ITEM, "idempotency_key": f"k{next(counter)}"} for _ in range(size)
            ]})

        plain = body()

        async def submit() -> None:
            statuses.append(await post_json(app, "/api/tasks/batch", body() if keys else plain))

        for _ in range(20):  # warm-up: Litestar's caches
            await submit()
        statuses.clear()
        limit = asyncio.Semaphore(IN_FLIGHT)

        async def limited() -> None:
            async with limit:
                await submit()

        profiler = cProfile.Profile() if profile else None
        cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        await asyncio.gather(*(limited() for _ in range(requests)))
        if profiler:
            profiler.disable()
        cpu = time.process_time() - cpu0
        loop_cpu = time.thread_time() - loop0
        wall = time.perf_counter() - wall0
        await store.close()
        if set(statuses) != {201}:
            raise RuntimeError(f"unexpected answers: {sorted(set(statuses))}")
        if profiler:
            pstats.Stats(profiler).sort_stats(profile).print_stats(45)
        tasks = requests * size
        return {"us_per_task": cpu / tasks * 1e6, "loop_us": loop_cpu / tasks * 1e6,
                "writer_us": (cpu - loop_cpu) / tasks * 1e6, "tasks_per_s": tasks / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--size", type=int, default=100, help="tasks per batch request")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", action="store_true", help="every task has an idempotency key")
    parser.add_argument("--compare-no-triggers", action="store_true",
                        help="alternate with runs whose tasks table has no AFTER INSERT triggers")
    parser.add_argument("--profile", metavar="SORT", help="cProfile one run, sorted by SORT")
    parser.add_argument("--postgres", action="store_true",
                        help="a throwaway PostgreSQL cluster (tests/pg.py, durable), a fresh "
                        "migrated database per run; the CPU is the API process's only")
    parser.add_argument("--one", choices=["triggers", "no-triggers"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        asyncio.run(measure(args.requests, args.size, True, args.profile, args.keys))
        return
    if args.one:  # one measurement in a fresh process
        r = asyncio.run(measure(args.requests, args.size, args.one == "triggers", None,
                                args.keys, args.db))
        print(f"{r['us_per_task']:.1f} us CPU per task (event loop {r['loop_us']:.1f}, "
              f"writer {r['writer_us']:.1f}); {r['tasks_per_s']:,.0f} tasks/s wall")
        return
    variants = ["triggers", "no-triggers"] if args.compare_no_triggers else ["triggers"]
    server = None
    if args.postgres:
        from bench.pg_side import open_server

        server = open_server(None)
    try:
        _runs(args, variants, server)
    finally:
        if server is not None:
            server.close()


def _runs(args: argparse.Namespace, variants: list[str], server: Any) -> None:
    for _ in range(args.runs):
        for variant in variants:
            cmd = [sys.executable, __file__, "--requests", str(args.requests), "--size",
                   str(args.size), "--one", variant] + (["--keys"] if args.keys else [])
            if server is not None:
                cmd += ["--db", server.new_database()]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            label = f"{variant:11} " if args.compare_no_triggers else ""
            print(f"{label}{out.stdout.strip().splitlines()[-1]}", flush=True)


if __name__ == "__main__":
    main()
