-- 001: tasks, their attempts, and the workers that ran them.
-- Times are Unix seconds (REAL, UTC). The state machine lives in docs/state_machine.md;
-- the CHECK below is its list of states, the queries in shared/sql/queries.sql its edges.

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,          -- ULID: sorts by creation time
    type            TEXT NOT NULL,
    payload         TEXT NOT NULL,             -- JSON
    status          TEXT NOT NULL
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority        INTEGER NOT NULL DEFAULT 0, -- higher runs first
    run_at          REAL NOT NULL,             -- not claimable before this
    attempts        INTEGER NOT NULL DEFAULT 0, -- attempts started so far
    max_attempts    INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout         REAL NOT NULL CHECK (timeout > 0),
    idempotency_key TEXT,
    request_hash    TEXT,                      -- what the key was first used for
    claim_token     TEXT,                      -- fences every transition out of 'running'
    lease_until     REAL,                      -- a running task whose lease passed is rescued
    worker_id       TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result          TEXT,                      -- JSON of the last attempt's handler result
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    started_at      REAL,                      -- first attempt
    finished_at     REAL                       -- reached succeeded, failed or cancelled
) STRICT;

CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Claim walks this in order; partial, so it holds only what can run and stays small.
CREATE INDEX tasks_runnable ON tasks (priority DESC, run_at, id) WHERE status = 'queued';
-- The rescuer looks only at running tasks.
CREATE INDEX tasks_leases ON tasks (lease_until) WHERE status = 'running';
-- Keyset pagination (newest first) with and without filters.
CREATE INDEX tasks_status_id ON tasks (status, id);
CREATE INDEX tasks_type_id ON tasks (type, id);

-- One row per claim. `attempt` is the task's attempt number at that claim; a released attempt
-- (worker shut down) is not spent, so the next claim may carry the same number.
CREATE TABLE task_attempts (
    id          INTEGER PRIMARY KEY,
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT,
    started_at  REAL NOT NULL,
    finished_at REAL,
    outcome     TEXT CHECK (outcome IN
                ('succeeded', 'failed', 'timeout', 'cancelled', 'lost', 'released')),
    error       TEXT,
    output      TEXT                           -- JSON, bounded by the worker
) STRICT;
CREATE INDEX task_attempts_task ON task_attempts (task_id, id);

CREATE TABLE workers (
    id         TEXT PRIMARY KEY,
    hostname   TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    slots      INTEGER NOT NULL,
    started_at REAL NOT NULL,
    last_seen  REAL NOT NULL,
    stopped_at REAL
) STRICT;
