"""What each index and trigger of `tasks` costs a claim + completion, in instructions: counted
by valgrind (callgrind), so the answer is the same on a busy machine as on a quiet one.

    uv run python bench/schema_cost.py                     # every variant, 2000 tasks
    uv run python bench/schema_cost.py base -status_id     # some

For each variant: a copy of one database of queued tasks, the variant's DDL (an index or
trigger dropped, or replaced), then the worker's statements (queue.sql: the claim's pick,
move and attempt rows, the temp.finishing completion) over N tasks in batches,
`synchronous=OFF`, in a Python process run under `valgrind --tool=callgrind`. Prints
instructions per task against `base` (the schema as migrated). The process's start-up is the
same in every variant and cancels out; the variant's DDL is counted too, but is small next to
the tasks' work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.sql import Queries  # noqa: E402
from shared.store.sqlite.store import claim_picked, decode_picked  # noqa: E402

Q = Queries("sqlite", "queue")

VARIANTS: dict[str, list[str]] = {
    "base": [],
    "-status_id": ["DROP INDEX tasks_status_id"],
    "-counted": ["DROP TRIGGER tasks_counted_update"],
    "-status_event": ["DROP TRIGGER tasks_status_event"],
    "-events_time": ["DROP INDEX task_events_time"],
    "-queued_due": ["DROP INDEX tasks_queued_due", "DROP INDEX tasks_queued_retry"],
    "-finished": ["DROP INDEX tasks_finished"],
    "-schedule_counted": ["DROP TRIGGER tasks_schedule_counted_update"],
    "-webhook": ["DROP TRIGGER tasks_finished_webhook"],
    # tasks_leases and tasks_running_queue as one partial index on running tasks
    "one_running_index": [
        "DROP INDEX tasks_leases", "DROP INDEX tasks_running_queue",
        "CREATE INDEX tasks_running ON tasks (queue, lease_until) WHERE status = 'running'",
    ],
    # the event and count triggers as one trigger (one sub-program per row instead of two)
    "one_status_trigger": [
        "DROP TRIGGER tasks_status_event", "DROP TRIGGER tasks_counted_update",
        """CREATE TRIGGER tasks_status_moved AFTER UPDATE OF status, queue, type ON tasks
        WHEN OLD.status IS NOT NEW.status OR OLD.queue IS NOT NEW.queue
             OR OLD.type IS NOT NEW.type
        BEGIN
            INSERT INTO task_events (task_id, status, attempts, type, time, queue)
            SELECT NEW.id, NEW.status, NEW.attempts, NEW.type, NEW.updated_at, NEW.queue
            WHERE OLD.status IS NOT NEW.status;
            UPDATE task_counts SET n = n - 1
            WHERE queue = OLD.queue AND type = OLD.type AND status = OLD.status;
            INSERT INTO task_counts (queue, type, status, n)
            VALUES (NEW.queue, NEW.type, NEW.status, 1)
            ON CONFLICT (queue, type, status) DO UPDATE SET n = n + 1;
        END""",
    ],
}


def work(src: str, variant: str, n: int, batch: int) -> None:
    """The measured part (run inside valgrind): claim and complete n tasks of a copy of src."""
    path = f"{src}.{variant}"
    shutil.copy(src, path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA temp_store=MEMORY")
    for ddl in VARIANTS[variant]:
        conn.execute(ddl)
    conn.execute(Q.finishing_table)
    now, done = 4e9, 0  # later than every run_at
    while done < n:
        conn.execute("BEGIN IMMEDIATE")
        rows = decode_picked(claim_picked(conn, {
            "now": now, "lease_until": now + 30, "worker_id": "w",
            "limit": min(batch, n - done), "closed": "[]", "only": None}))
        conn.executemany(Q.finishing_add, [(r.id, r.token, r.attempt, now, "{}") for r in rows])
        assert conn.execute(Q.complete_finishing).rowcount == len(rows)
        conn.execute(Q.finish_attempts_finishing)
        conn.execute(Q.finishing_clear)
        conn.execute("COMMIT")
        done += len(rows)
    conn.close()
    os.remove(path)


def instructions(src: str, variant: str, n: int, batch: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--work", src, variant, str(n), str(batch)],
        capture_output=True, text=True, check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--work":
        work(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install -y valgrind)")
    from bench.localflow_side import _pre_enqueue, fresh_db

    with tempfile.TemporaryDirectory() as workdir:
        src = fresh_db(Path(workdir), "src")
        asyncio.run(_pre_enqueue(src, args.tasks))
        with sqlite3.connect(src) as conn:  # one file to copy: the WAL folded in
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        empty = instructions(str(src), "base", 0, args.batch)
        base = instructions(str(src), "base", args.tasks, args.batch)
        print(f"base: {(base - empty) / args.tasks:,.0f} instructions per task "
              f"(claim + attempt row + completion + its attempt row, batches of {args.batch})",
              flush=True)
        for variant in args.variants:
            if variant == "base":
                continue
            got = instructions(str(src), variant, args.tasks, args.batch)
            delta, per_task = (got - base) / args.tasks, (base - empty) / args.tasks
            print(f"{variant:20} {delta:+9,.0f} per task ({100 * delta / per_task:+5.1f} %)",
                  flush=True)


if __name__ == "__main__":
    main()
