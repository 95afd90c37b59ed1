"""What the cyclic garbage collector looks at, once a process has started.

A started API holds ~77,000 long-lived objects (Litestar's routes, signature models, the
OpenAPI document, every imported module), a worker fewer but still tens of thousands. CPython's
full collection walks all of them; under load (64 requests or tasks in flight, so much
survives the young generations) one ran every ~1,300 submissions and cost 10-40 ms each, about
a sixth of a submission's CPU, and a latency spike for whoever was waiting. None of those
objects becomes garbage while the process runs, so after start-up they are moved out of the
collector's sight (`gc.freeze`); everything made later is collected as before, so memory stays
bounded.
"""

from __future__ import annotations

import gc


def freeze_start_up_objects() -> None:
    """Collect start-up's garbage, then exempt what survives from later collections.
    Call once the process has built its long-lived parts; calling again is harmless."""
    gc.collect()
    gc.freeze()
