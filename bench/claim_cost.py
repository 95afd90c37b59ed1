"""Writer-thread CPU of one SQLite claim's statements, this tree's against another tree's.

    uv run python bench/claim_cost.py --other /tmp/main-copy [--limits 1 8 64 500]

One process, one database of 5,000 queued tasks, synchronous=OFF; each claim runs in its
own BEGIN IMMEDIATE ... ROLLBACK (every round sees the same rows) and is timed with
time.thread_time, the three ways alternated, seven rounds, medians printed (us per claim):

    this         this tree's usual claim (shared/store/sqlite/store.py claim_picked:
                 claim_pick, claim_picked, insert_picked_attempts) and its decode
    other-json   the other tree's claim_pick + claim_picked + insert_picked_attempts (its
                 usual claim, before session 6) and the decode
    other-update the other tree's `claim` (UPDATE ... RETURNING) + insert_attempt, rows made
                 into Claimed (its early start and the rounds under a limit)

(Commit 555be78 of branch claimsql also timed the per-queue path's pick of given ids.)

Diagnosis for bench/README.md, "Session 6: one claim path"; not part of bench/run.py.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec

from shared.sql import (
    Queries,
    parse,
)
from shared.store.base import Claimed
from shared.store.sqlite import migrations
from shared.store.sqlite.store import claim_picked, decode_picked

Q = Queries("sqlite", "queue")
_CLAIMED = msgspec.json.Decoder(list[Claimed])
INSERT = ("INSERT INTO tasks (id, type, payload, status, priority, run_at, max_attempts,"
          " timeout, created_at, updated_at, queue) VALUES (?,?,?,?,?,?,?,?,?,?,?)")


def ways(conn: sqlite3.Connection, other: dict[str, str]) -> dict[str, Callable[..., list]]:
    def this(params: dict[str, Any]) -> list[Claimed]:
        return decode_picked(claim_picked(conn, params))

    def other_json(params: dict[str, Any]) -> list[Claimed]:
        picked = conn.execute(other["claim_pick"], params).fetchone()[0]
        if picked != "[]":
            moves = {**params, "picked": picked}
            conn.execute(other["claim_picked"], moves)
            conn.execute(other["insert_picked_attempts"], moves)
        return _CLAIMED.decode(picked)

    def returning(statement: str, params: dict[str, Any]) -> list[Claimed]:
        rows = conn.execute(statement, params).fetchall()
        conn.executemany(other["insert_attempt"],
                         [(r[0], r[3], params["worker_id"], params["now"]) for r in rows])
        return [Claimed(id=r[0], type=r[1], payload=msgspec.json.decode(r[2]), attempt=r[3],
                        max_attempts=r[4], timeout=r[5], priority=r[6], run_at=r[7],
                        token=r[8], queue=r[9]) for r in rows]

    def other_update(params: dict[str, Any]) -> list[Claimed]:
        return returning(other["claim"], params)

    return {"this": this, "other-json": other_json, "other-update": other_update}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--other", required=True, help="a checkout of the tree to compare")
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 8, 64, 500])
    args = parser.parse_args()
    other = parse((Path(args.other) / "shared/sql/sqlite/queue.sql").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "claim.db")
        migrations.migrate(path)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        now = time.time()
        conn.executemany(INSERT, [
            (f"t{i:08d}", "shell", msgspec.json.encode({"command": "true", "args": [str(i)],
                                                        "env": {}, "timeout": None}).decode(),
             "queued", i % 3, now - 100 + i * 1e-4, 3, 300.0, now, now, "default")
            for i in range(5000)])
        each = ways(conn, other)
        for limit in args.limits:
            params = {"now": now, "lease_until": now + 30, "worker_id": "w", "limit": limit,
                      "closed": "[]", "only": None}
            reps = max(30, 6000 // limit)
            spent: dict[str, list[float]] = {name: [] for name in each}
            for _round in range(7):
                for name, claim in each.items():
                    total = 0.0
                    for _ in range(reps):
                        conn.execute("BEGIN IMMEDIATE")
                        began = time.thread_time()
                        got = claim(params)
                        total += time.thread_time() - began
                        conn.execute("ROLLBACK")
                        assert len(got) == limit == len({c.token for c in got})
                    spent[name].append(total / reps * 1e6)
            print(f"claim of {limit:>3}: " + "  ".join(
                f"{name} {statistics.median(v):7.1f}" for name, v in spent.items())
                + " us", flush=True)
        conn.close()


if __name__ == "__main__":
    main()
