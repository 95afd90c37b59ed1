-- 001: tasks, their attempts, and the workers that ran them (PostgreSQL; mirrors
-- migrations/sqlite/001_init.sql column for column).
-- Times are Unix seconds (double precision, UTC), as on SQLite: both stores hand back the
-- same floats, the queue's arithmetic (leases, backoff, cron) stays in one unit, and a copy
-- from SQLite moves values without converting them.
-- Ids are ULIDs compared with `<` for keyset paging: COLLATE "C" makes them sort byte-wise,
-- as SQLite's BINARY does, whatever the database's locale.

CREATE TABLE tasks (
    id              text COLLATE "C" PRIMARY KEY,
    type            text NOT NULL,
    payload         text NOT NULL,             -- JSON text, byte-for-byte what was stored
    status          text NOT NULL
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority        integer NOT NULL DEFAULT 0, -- higher runs first
    run_at          double precision NOT NULL, -- not claimable before this
    attempts        integer NOT NULL DEFAULT 0, -- attempts started so far
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout         double precision NOT NULL CHECK (timeout > 0),
    idempotency_key text,
    request_hash    text,                      -- what the key was first used for
    claim_token     text,                      -- fences every transition out of 'running'
    lease_until     double precision,          -- a running task whose lease passed is rescued
    worker_id       text,
    cancel_requested boolean NOT NULL DEFAULT false,
    result          text,                      -- JSON of the last attempt's handler result
    last_error      text,
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL,
    started_at      double precision,          -- first attempt
    finished_at     double precision           -- reached succeeded, failed or cancelled
);

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
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     text COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    worker_id   text,
    started_at  double precision NOT NULL,
    finished_at double precision,
    outcome     text CHECK (outcome IN
                ('succeeded', 'failed', 'timeout', 'cancelled', 'lost', 'released')),
    error       text,
    output      text                           -- JSON, bounded by the worker
);
CREATE INDEX task_attempts_task ON task_attempts (task_id, id);

CREATE TABLE workers (
    id         text PRIMARY KEY,
    hostname   text NOT NULL,
    pid        integer NOT NULL,
    slots      integer NOT NULL,
    started_at double precision NOT NULL,
    last_seen  double precision NOT NULL,
    stopped_at double precision
);
