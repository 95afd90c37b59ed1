"""/debug/...: Python's counterpart of Go's pprof, registered only in debug mode (--debug).

- /debug/profile?seconds=N: a CPU profile of the live process (pyinstrument, sampling the
  event-loop thread, where the API and in `serve` the worker run) as HTML or speedscope JSON.
- /debug/tasks: every asyncio task with its stack, then every thread's stack (text).
- /debug/memory: the top allocations by line (tracemalloc, started with debug mode).

The index of these is at /debug/ and, as the seed README promises (Go's spelling), at
/debug/pprof/.

Without debug mode these routes do not exist (404). They are left out of the OpenAPI schema:
they are operator tools, and a fuzzer has no business asking for 60-second profiles.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import time
import traceback
import tracemalloc
from typing import Annotated, Literal

from litestar import Controller, MediaType, Response, get
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from pyinstrument import Profiler
from pyinstrument.renderers import SpeedscopeRenderer

TRACEMALLOC_FRAMES = 8
_profiling = asyncio.Lock()

_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>LocalFlow debug</title></head>
<body style="font-family: sans-serif; max-width: 50em">
<h1>LocalFlow debug</h1>
<ul>
<li><a href="/debug/profile?seconds=5">/debug/profile?seconds=5</a> &mdash; CPU profile of
  this process for N seconds (0.1 to 60), as HTML; <code>&amp;format=speedscope</code> gives
  JSON for <a href="https://www.speedscope.app">speedscope</a>.</li>
<li><a href="/debug/tasks">/debug/tasks</a> &mdash; every asyncio task and thread, with
  stacks.</li>
<li><a href="/debug/memory">/debug/memory</a> &mdash; top memory allocations
  (tracemalloc); <code>?limit=50&amp;group_by=traceback</code>.</li>
</ul></body></html>
"""


def start_tracing() -> None:
    """Trace allocations from now on, for /debug/memory (debug mode calls this at start)."""
    if not tracemalloc.is_tracing():
        tracemalloc.start(TRACEMALLOC_FRAMES)


class DebugController(Controller):
    path = "/debug"
    tags = ["debug"]
    include_in_schema = False

    # /debug/pprof/ as well: the seed README sends people there (Go's pprof index).
    @get(["/", "/pprof"], media_type=MediaType.HTML, summary="Debug endpoints")
    async def index(self) -> str:
        return _INDEX

    @get("/profile", summary="CPU profile of the live process")
    async def profile(
        self,
        seconds: Annotated[float, Parameter(ge=0.1, le=60, description="0.1 to 60")] = 5.0,
        fmt: Annotated[
            Literal["html", "speedscope"], Parameter(query="format")
        ] = "html",
        interval_ms: Annotated[float, Parameter(query="interval_ms", ge=0.1, le=100)] = 1.0,
    ) -> Response[str]:
        if _profiling.locked():
            raise HTTPException(status_code=409, detail="a profile is already being taken; "
                                "wait for it to finish")
        async with _profiling:
            # async_mode="disabled": sample whatever the event-loop thread runs, not only
            # this request's own (sleeping) coroutine.
            profiler = Profiler(interval=interval_ms / 1000, async_mode="disabled")
            profiler.start()
            try:
                await asyncio.sleep(seconds)
            finally:
                profiler.stop()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if fmt == "speedscope":
            # No 1%-of-total pruning: speedscope is a timeline viewer that zooms into short
            # calls itself, and a mostly idle loop would otherwise hide all the real work.
            renderer = SpeedscopeRenderer(processor_options={"filter_threshold": 0})
            body = profiler.output(renderer=renderer)
            name = f"localflow-profile-{stamp}.speedscope.json"
            return Response(body, media_type=MediaType.JSON,
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return Response(profiler.output_html(), media_type=MediaType.HTML)

    @get("/tasks", media_type=MediaType.TEXT, summary="asyncio tasks and thread stacks")
    async def tasks(self) -> str:
        return dump_tasks_and_threads()

    @get("/memory", media_type=MediaType.TEXT, summary="Top memory allocations")
    async def memory(
        self,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 25,
        group_by: Literal["lineno", "filename", "traceback"] = "lineno",
    ) -> str:
        return top_allocations(limit, group_by)


def dump_tasks_and_threads() -> str:
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    out.write(f"{len(tasks)} asyncio tasks\n\n")
    current = asyncio.current_task()
    for task in tasks:
        out.write(f"--- task {task.get_name()}: {task!r}\n")
        if task is current:
            out.write("".join(traceback.format_stack()))
        else:
            out.write("".join(traceback.format_list(_await_chain(task))))
        out.write("\n")
    frames = sys._current_frames()
    threads = threading.enumerate()
    out.write(f"{len(threads)} threads\n\n")
    for thread in threads:
        out.write(f"--- thread {thread.name} (ident {thread.ident}, daemon {thread.daemon})\n")
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            out.write("".join(traceback.format_stack(frame)))
        out.write("\n")
    return out.getvalue()


def _await_chain(task: asyncio.Task) -> traceback.StackSummary:
    """Where a suspended task waits, outermost call first.

    Task.print_stack shows a suspended task's outermost coroutine only; following cr_await
    from coroutine to coroutine gives the whole chain down to the awaited future.
    """
    frames = []
    awaitable: object = task.get_coro()
    for _ in range(200):  # bounded: a chain is never this deep, a cycle must not hang us
        frame = (getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
                 or getattr(awaitable, "ag_frame", None))
        if frame is not None:
            frames.append((frame, frame.f_lineno))
        awaitable = (getattr(awaitable, "cr_await", None)
                     or getattr(awaitable, "gi_yieldfrom", None)
                     or getattr(awaitable, "ag_await", None))
        if awaitable is None:
            break
    return traceback.StackSummary.extract(frames)


def top_allocations(limit: int, group_by: str) -> str:
    out = io.StringIO()
    if not tracemalloc.is_tracing():
        start_tracing()
        out.write("tracemalloc was not tracing; it is now: ask again to see allocations made "
                  "from here on.\n")
        return out.getvalue()
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot().filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<unknown>"),
    ))
    stats = snapshot.statistics(group_by)
    out.write(f"traced memory: {current / 1e6:.1f} MB now, {peak / 1e6:.1f} MB peak; "
              f"top {min(limit, len(stats))} of {len(stats)} by {group_by}\n\n")
    for stat in stats[:limit]:
        out.write(f"{stat.size / 1024:10.1f} KiB {stat.count:8d} blocks  ")
        if group_by == "traceback":
            out.write("\n" + "\n".join(stat.traceback.format(limit=TRACEMALLOC_FRAMES)) + "\n\n")
        else:
            frame = stat.traceback[0]
            out.write(f"{frame.filename}:{frame.lineno if group_by == 'lineno' else ''}\n")
    return out.getvalue()
