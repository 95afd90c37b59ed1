-- 008: the live tail of a running shell task's output (PostgreSQL; mirrors
-- migrations/sqlite/008_live_output.sql, docs/live_output.md). A row belongs to one claim (its
-- claim token): readers show it only while the task is running with that token, the worker
-- deletes it in its next flush once the attempt ended, and a later claim overwrites it.

CREATE TABLE task_live_output (
    task_id      text COLLATE "C" PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    claim_token  text NOT NULL,
    attempt      integer NOT NULL,
    stdout       text NOT NULL,
    stderr       text NOT NULL,
    stdout_bytes bigint NOT NULL,
    stderr_bytes bigint NOT NULL,
    flushes      integer NOT NULL DEFAULT 1,
    updated_at   double precision NOT NULL
);
