-- 002: cron schedules, and the link from a task to the schedule (and fire time) that made it.
-- Mirrors migrations/sqlite/002_schedules.sql; semantics in docs/schedules.md.

CREATE TABLE schedules (
    id               text COLLATE "C" PRIMARY KEY,  -- ULID
    name             text NOT NULL,
    cron_expr        text NOT NULL,             -- validated by shared/cron.py
    timezone         text NOT NULL,             -- IANA name the expression is read in
    task_type        text NOT NULL,
    payload          text NOT NULL,             -- JSON, normalised like a task's
    enabled          boolean NOT NULL,
    priority         integer NOT NULL,
    max_attempts     integer CHECK (max_attempts >= 1),  -- NULL: server default at fire time
    timeout          double precision CHECK (timeout > 0), -- NULL: payload's, else default
    overlap          text NOT NULL CHECK (overlap IN ('allow', 'skip')),
    missed           text NOT NULL CHECK (missed IN ('skip', 'run_once')),
    -- The next fire instant (Unix seconds). NULL while paused. A scheduler fires a schedule by
    -- moving this forward in the same transaction that inserts the task, fenced on its old
    -- value, so two schedulers cannot both fire it.
    next_fire_at     double precision,
    last_fire_at     double precision,
    last_task_id     text COLLATE "C",
    last_skip_at     double precision,
    last_skip_reason text,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL
);

-- The scheduler asks "what is due?" and "when is the next fire?": both walk this.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;

-- Kept when the schedule is deleted: a task's history says which schedule made it.
ALTER TABLE tasks ADD COLUMN schedule_id text COLLATE "C";
-- The cron instant a scheduled task was made for; NULL for "run now" and ordinary tasks.
ALTER TABLE tasks ADD COLUMN fire_time double precision;

-- Exactly once, enforced by the database: one task per (schedule, fire time), whatever the
-- number of schedulers, hosts, restarts or clock jumps. NULL fire times (run now) never
-- collide (NULLs are distinct in a unique index, as on SQLite).
CREATE UNIQUE INDEX tasks_schedule_fire ON tasks (schedule_id, fire_time)
    WHERE schedule_id IS NOT NULL;
-- The overlap policy asks "has this schedule a task still queued or running?".
CREATE INDEX tasks_schedule_active ON tasks (schedule_id)
    WHERE schedule_id IS NOT NULL AND status IN ('queued', 'running');
