-- Queries of cron schedules on PostgreSQL; names and meaning match
-- shared/sql/sqlite/schedules.sql. Exactly-once firing rests on the same two fences:
-- `advance` moves next_fire_at only from the value the scheduler read (compare-and-set, in the
-- same transaction as the insert), and tasks_schedule_fire makes a second task for the same
-- (schedule, fire time) impossible whichever host's scheduler tries.

-- name: insert_schedule
INSERT INTO schedules (id, name, cron_expr, timezone, task_type, payload, enabled, priority,
                       max_attempts, timeout, overlap, missed, next_fire_at, created_at,
                       updated_at, queue, callback_url)
VALUES (%(id)s, %(name)s, %(cron_expr)s, %(timezone)s, %(task_type)s, %(payload)s,
        %(enabled)s, %(priority)s, %(max_attempts)s, %(timeout)s, %(overlap)s, %(missed)s,
        %(next_fire_at)s, %(now)s, %(now)s, %(queue)s,
        %(callback_url)s)

-- name: get_schedule
SELECT s.*, t.status AS last_task_status
FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id
WHERE s.id = %(id)s

-- name: list_schedules
-- lower() in the "C" collation folds ASCII letters only, like SQLite's NOCASE.
SELECT s.*, t.status AS last_task_status
FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id
ORDER BY lower(s.name) COLLATE "C", s.id
LIMIT %(limit)s

-- name: update_schedule
UPDATE schedules
SET name = %(name)s, cron_expr = %(cron_expr)s, timezone = %(timezone)s,
    task_type = %(task_type)s, payload = %(payload)s, enabled = %(enabled)s,
    priority = %(priority)s, max_attempts = %(max_attempts)s, timeout = %(timeout)s,
    overlap = %(overlap)s, missed = %(missed)s, queue = %(queue)s,
    callback_url = %(callback_url)s,
    -- Only a change of timing (or pause/resume) moves the next fire; otherwise it keeps
    -- whatever a scheduler committed since the editor read the row.
    next_fire_at = CASE WHEN %(recompute)s THEN %(next_fire_at)s ELSE next_fire_at END,
    updated_at = %(now)s
WHERE id = %(id)s

-- name: delete_schedule
DELETE FROM schedules WHERE id = %(id)s

-- name: due_schedules
-- SKIP LOCKED: a scheduler on another host that is firing a schedule right now keeps it;
-- this one moves on to the rest instead of waiting. `advance` still fences each fire.
SELECT * FROM schedules
WHERE enabled AND next_fire_at <= %(now)s
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: next_due
SELECT min(next_fire_at) FROM schedules WHERE enabled

-- name: ahead_schedules
-- Schedules whose next fire lies in the future: after the clock went back, some lie further
-- ahead than their cron says they should.
SELECT id, cron_expr, timezone, next_fire_at FROM schedules
WHERE enabled AND next_fire_at > %(now)s

-- name: advance
-- The compare-and-set: only the scheduler that read `expected` moves the schedule on.
UPDATE schedules SET next_fire_at = %(next)s
WHERE id = %(id)s AND enabled AND next_fire_at = %(expected)s

-- name: record_fire
UPDATE schedules SET last_fire_at = %(fire_time)s, last_task_id = %(task_id)s
WHERE id = %(id)s

-- name: record_skip
UPDATE schedules SET last_skip_at = %(fire_time)s, last_skip_reason = %(reason)s
WHERE id = %(id)s

-- name: has_active_task
SELECT 1 FROM tasks
WHERE schedule_id = %(id)s AND status IN ('queued', 'running')
LIMIT 1

-- name: insert_scheduled_task
-- A task made by a schedule. A second task for the same (schedule_id, fire_time) is refused
-- by tasks_schedule_fire; DO NOTHING turns that into rowcount 0 ("already fired").
INSERT INTO tasks (id, type, payload, status, priority, run_at, max_attempts, timeout,
                   schedule_id, fire_time, created_at, updated_at, queue, callback_url)
VALUES (%(id)s, %(type)s, %(payload)s, 'queued', %(priority)s, %(run_at)s, %(max_attempts)s,
        %(timeout)s, %(schedule_id)s, %(fire_time)s, %(now)s, %(now)s, %(queue)s,
        %(callback_url)s)
ON CONFLICT DO NOTHING

-- name: task_for_fire
SELECT id FROM tasks WHERE schedule_id = %(schedule_id)s AND fire_time = %(fire_time)s
