"""CPU per `POST /api/tasks` in one process, without sockets: the API's ASGI app on a fresh
SQLite file, N submissions with 64 in flight (as wrk's 64 connections), time.process_time()
(all threads: the event loop and the database writer) over N. On a shared machine CPU time is
steadier than wall time; alternate variants in one sitting (`--runs`).

    uv run python bench/submit_cpu.py --tasks 4000 --runs 4
    uv run python bench/submit_cpu.py --tasks 4000 --runs 4 --compare-no-freeze
    uv run python bench/submit_cpu.py --tasks 4000 --runs 4 --compare-litestar  # api/fast_submit.py
    uv run python bench/submit_cpu.py --tasks 8000 --runs 4 --compare-young-700  # shared/heap.py
    uv run python bench/submit_cpu.py --tasks 3000 --profile tottime    # cProfile, top 40

uvicorn's HTTP parsing is not counted (~100 us more per request in a real `localflow api`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import create_app
from api.fast_submit import FastSubmit
from bench.asgi_post import post_json
from shared.heap import API_YOUNG_THRESHOLD, collect_young_less_often, freeze_start_up_objects
from shared.queue import Queue
from shared.settings import Settings
from shared.store import open_store
from shared.store.sqlite import migrations

BODY = b'{"type":"shell","payload":{"command":"true"}}'
IN_FLIGHT = 64


class GcPauses:
    """Wall time of each cyclic collection (gc.callbacks), per generation."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._began)

    def summary(self) -> str:
        return " ".join(f"gen{g}:{len(p)}x,{sum(p) * 1e3:.0f}ms,max{max(p, default=0) * 1e3:.1f}"
                        for g, p in self.pauses.items())


def without_fast_path(app: Any) -> None:
    """Take api/fast_submit.py's layer out: every submission goes through Litestar's route."""
    above = app.asgi_handler
    while not isinstance(above.app, FastSubmit):
        above = above.app
    above.app = above.app.app


async def measure(
    tasks: int, freeze: bool, profile: str | None, litestar: bool = False,
    young_threshold: int | None = API_YOUNG_THRESHOLD,
) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "submit.db")
        migrations.migrate(db)
        settings = Settings(db=db)
        store = await open_store(settings, migrate_first=False)
        app = create_app(Queue(store, settings=settings), settings)
        if litestar:
            without_fast_path(app)
        if freeze:
            freeze_start_up_objects()  # as localflow/http_server.py does
        if young_threshold:
            collect_young_less_often(young_threshold)  # as localflow/http_server.py does
        statuses: list[int] = []

        async def submit() -> None:
            statuses.append(await post_json(app, "/api/tasks", BODY))

        for _ in range(200):  # warm-up: Litestar's caches
            await submit()
        statuses.clear()
        limit = asyncio.Semaphore(IN_FLIGHT)

        async def limited() -> None:
            async with limit:
                await submit()

        profiler = cProfile.Profile() if profile else None
        pauses = GcPauses()
        gc.callbacks.append(pauses)
        cpu0 = time.process_time()
        if profiler:
            profiler.enable()
        await asyncio.gather(*(limited() for _ in range(tasks)))
        if profiler:
            profiler.disable()
        cpu = time.process_time() - cpu0
        gc.callbacks.remove(pauses)
        await store.close()
        if set(statuses) != {201}:
            raise RuntimeError(f"unexpected answers: {sorted(set(statuses))}")
        if profiler:
            pstats.Stats(profiler).sort_stats(profile).print_stats(40)
        return cpu / tasks * 1e6, pauses.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare-no-freeze", action="store_true",
                        help="alternate with runs that skip shared/heap.py's gc.freeze")
    parser.add_argument("--compare-litestar", action="store_true",
                        help="alternate with runs through Litestar's route (no fast path)")
    parser.add_argument("--profile", metavar="SORT", help="cProfile one run, sorted by SORT")
    parser.add_argument("--compare-young-700", action="store_true",
                        help="alternate with runs at CPython's young-generation threshold")
    parser.add_argument("--one", choices=["freeze", "no-freeze", "litestar", "young-700"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        asyncio.run(measure(args.tasks, True, args.profile))
        return
    if args.one:  # one measurement in this process (a frozen heap stays frozen)
        us, pauses = asyncio.run(measure(args.tasks, args.one != "no-freeze", None,
                                         litestar=args.one == "litestar",
                                         young_threshold=None if args.one == "young-700"
                                         else API_YOUNG_THRESHOLD))
        print(f"{us:.0f} us CPU per submission; collections {pauses}")
        return
    variants = ["freeze"]
    if args.compare_no_freeze:
        variants.append("no-freeze")
    if args.compare_litestar:
        variants.append("litestar")
    if args.compare_young_700:
        variants.append("young-700")
    for _ in range(args.runs):
        for variant in variants:
            out = subprocess.run([sys.executable, __file__, "--tasks", str(args.tasks),
                                  "--one", variant], capture_output=True, text=True, check=True)
            name = {"freeze": "default"}.get(variant, variant)  # the fast path, a frozen heap
            label = f"{name:9} " if len(variants) > 1 else ""
            print(f"{label}{out.stdout.strip().splitlines()[-1]}", flush=True)


if __name__ == "__main__":
    main()
