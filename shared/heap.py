"""What the cyclic garbage collector looks at, and what start-up leaves behind, once a process
has started.

A started API holds ~77,000 long-lived objects (Litestar's routes, signature models, the
OpenAPI document, every imported module), a worker fewer but still tens of thousands. CPython's
full collection walks all of them; under load (64 requests or tasks in flight, so much
survives the young generations) one ran every ~1,300 submissions and cost 10-40 ms each, about
a sixth of a submission's CPU, and a latency spike for whoever was waiting. None of those
objects becomes garbage while the process runs, so after start-up they are moved out of the
collector's sight (`gc.freeze`); everything made later is collected as before, so memory stays
bounded.

Building the app also leaves freed memory inside the C allocator's heap (Litestar's
signature models and OpenAPI schema are built from many short-lived objects); glibc keeps it
mapped until asked to give it back (`malloc_trim`), ~2 MB of the API's resident memory.
"""

from __future__ import annotations

import ctypes
import gc


def freeze_start_up_objects() -> None:
    """Collect start-up's garbage, exempt what survives from later collections, and hand the
    freed heap back to the system. Call once the process has built its long-lived parts;
    calling again is harmless."""
    gc.collect()
    gc.freeze()
    trim_c_heap()


# Young-generation threshold for the API (CPython's default is 700). With 64 requests in
# flight, each holding its scope, coroutines and buffers, a young collection every 700 net
# allocations kept re-walking the same live request state: `bench/submit_cpu.py` counted
# ~460 young and ~40 middle collections per 8,000 submissions, 7-14 us of collector time per
# submission; at 5,000, 17 and 1 of them, ~1 us. Garbage in cycles still goes at the next
# collection: at most a few thousand more objects wait for it.
API_YOUNG_THRESHOLD = 5000


def collect_young_less_often(threshold: int = API_YOUNG_THRESHOLD) -> None:
    """Raise the young generation's threshold; the older generations' stay as they are."""
    gc.set_threshold(threshold, *gc.get_threshold()[1:])


def trim_c_heap() -> None:
    """Hand the C allocator's free memory back to the system (every arena, glibc's
    `malloc_trim(0)`); elsewhere nothing."""
    # glibc only (malloc_trim is a GNU extension); elsewhere there is nothing to call.
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return
    trim(0)
