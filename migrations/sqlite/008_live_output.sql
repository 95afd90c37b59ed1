-- 008: the live tail of a running shell task's output (docs/live_output.md). A worker stores
-- the last few KiB of each stream of the attempt it runs, at most once a second and only when
-- they changed, all its running tasks in one transaction. A row belongs to one claim (its
-- claim token): readers show it only while the task is running with that token, the worker
-- deletes it in its next flush once the attempt ended, and a later claim overwrites it. The
-- final output is the attempt's own (task_attempts.output, tasks.result).

CREATE TABLE task_live_output (
    task_id      TEXT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    claim_token  TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    stdout       TEXT NOT NULL,       -- the last bytes of stdout (bounded by the worker)
    stderr       TEXT NOT NULL,
    stdout_bytes INTEGER NOT NULL,    -- bytes the attempt wrote to stdout so far, all of them
    stderr_bytes INTEGER NOT NULL,
    flushes      INTEGER NOT NULL DEFAULT 1,  -- how many times this attempt's tail was stored
    updated_at   REAL NOT NULL
) STRICT;
