"""How soon a thread waiting for the GIL gets it: LocalFlow's processes run an event loop and
a database writer thread side by side.

The writer spends most of its time inside SQLite with the GIL released; each time it comes
back (after a statement, a COMMIT's fsync) it needs the GIL for a few microseconds. While the
event loop is busy in Python it holds the GIL until CPython's switch interval asks it to let
go: 5 ms by default. Under load that wait is the writer's pace: a write transaction of 32
submissions took 3.6 ms, most of it waiting, and the requests behind it waited with it. At
0.5 ms the writer gets back within a fraction of a transaction, so the writer and the loop run
side by side on two cores; the loop pays a few more GIL hand-overs (microseconds each).
Measured with wrk on `localflow api` (bench/README.md, "Session 4: single submissions"):
batches of 100 went from 13-25k to 39-44k tasks/s; single submissions' CPU per request fell.
Only processes that serve HTTP set it: for `localflow worker` alone, whose writer transactions
are few and large (a claim of hundreds of tasks), 20 us to 1 ms measured the same or worse.
"""

from __future__ import annotations

import sys

SWITCH_INTERVAL_SECONDS = 0.0005


def hand_over_sooner() -> None:
    """Set this process's GIL switch interval (process-wide; call once at start-up)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
