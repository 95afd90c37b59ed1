-- 002: cron schedules, and the link from a task to the schedule (and fire time) that made it.
-- Semantics in docs/schedules.md; queries in shared/sql/schedules.sql.

CREATE TABLE schedules (
    id               TEXT PRIMARY KEY,          -- ULID
    name             TEXT NOT NULL,
    cron_expr        TEXT NOT NULL,             -- validated by shared/cron.py
    timezone         TEXT NOT NULL,             -- IANA name the expression is read in
    task_type        TEXT NOT NULL,
    payload          TEXT NOT NULL,             -- JSON, normalised like a task's
    enabled          INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    priority         INTEGER NOT NULL,
    max_attempts     INTEGER CHECK (max_attempts >= 1),  -- NULL: server default at fire time
    timeout          REAL CHECK (timeout > 0),           -- NULL: payload's, else default
    overlap          TEXT NOT NULL CHECK (overlap IN ('allow', 'skip')),
    missed           TEXT NOT NULL CHECK (missed IN ('skip', 'run_once')),
    -- The next fire instant (Unix seconds). NULL while paused. A scheduler fires a schedule by
    -- moving this forward in the same transaction that inserts the task, fenced on its old
    -- value, so two schedulers cannot both fire it.
    next_fire_at     REAL,
    last_fire_at     REAL,
    last_task_id     TEXT,
    last_skip_at     REAL,
    last_skip_reason TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
) STRICT;

-- The scheduler asks "what is due?" and "when is the next fire?": both walk this.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled = 1;

-- Kept when the schedule is deleted: a task's history says which schedule made it.
ALTER TABLE tasks ADD COLUMN schedule_id TEXT;
-- The cron instant a scheduled task was made for; NULL for "run now" and ordinary tasks.
ALTER TABLE tasks ADD COLUMN fire_time REAL;

-- Exactly once, enforced by the database: one task per (schedule, fire time), whatever the
-- number of schedulers, restarts or clock jumps. NULL fire times (run now) never collide.
CREATE UNIQUE INDEX tasks_schedule_fire ON tasks (schedule_id, fire_time)
    WHERE schedule_id IS NOT NULL;
-- The overlap policy asks "has this schedule a task still queued or running?".
CREATE INDEX tasks_schedule_active ON tasks (schedule_id)
    WHERE schedule_id IS NOT NULL AND status IN ('queued', 'running');
