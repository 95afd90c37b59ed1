-- Queries of cron schedules (shared/schedules.py). Exactly-once firing rests on two fences:
-- `advance` moves next_fire_at only from the value the scheduler read (compare-and-set, in the
-- same write transaction as the insert), and tasks_schedule_fire makes a second task for the
-- same (schedule, fire time) impossible even if a clock jump brings that fire time back.

-- name: insert_schedule
INSERT INTO schedules (id, name, cron_expr, timezone, task_type, payload, enabled, priority,
                       max_attempts, timeout, overlap, missed, next_fire_at, created_at,
                       updated_at, queue, callback_url)
VALUES (:id, :name, :cron_expr, :timezone, :task_type, :payload, :enabled, :priority,
        :max_attempts, :timeout, :overlap, :missed, :next_fire_at, :now, :now, :queue, :callback_url)

-- name: get_schedule
SELECT s.*, t.status AS last_task_status
FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id
WHERE s.id = ?

-- name: list_schedules
SELECT s.*, t.status AS last_task_status
FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id
ORDER BY s.name COLLATE NOCASE, s.id
LIMIT :limit

-- name: update_schedule
UPDATE schedules
SET name = :name, cron_expr = :cron_expr, timezone = :timezone, task_type = :task_type,
    payload = :payload, enabled = :enabled, priority = :priority,
    max_attempts = :max_attempts, timeout = :timeout, overlap = :overlap, missed = :missed,
    queue = :queue, callback_url = :callback_url,
    -- Only a change of timing (or pause/resume) moves the next fire; otherwise it keeps
    -- whatever a scheduler committed since the editor read the row.
    next_fire_at = CASE WHEN :recompute THEN :next_fire_at ELSE next_fire_at END,
    updated_at = :now
WHERE id = :id

-- name: delete_schedule
DELETE FROM schedules WHERE id = ?

-- name: due_schedules
SELECT * FROM schedules INDEXED BY schedules_due
WHERE enabled = 1 AND next_fire_at <= :now
ORDER BY next_fire_at
LIMIT :limit

-- name: next_due
SELECT min(next_fire_at) FROM schedules WHERE enabled = 1

-- name: ahead_schedules
-- Schedules whose next fire lies in the future: after the clock went back, some lie further
-- ahead than their cron says they should.
SELECT id, cron_expr, timezone, next_fire_at FROM schedules INDEXED BY schedules_due
WHERE enabled = 1 AND next_fire_at > :now

-- name: advance
-- The compare-and-set: only the scheduler that read :expected moves the schedule on.
UPDATE schedules SET next_fire_at = :next
WHERE id = :id AND enabled = 1 AND next_fire_at = :expected

-- name: record_fire
UPDATE schedules SET last_fire_at = :fire_time, last_task_id = :task_id WHERE id = :id

-- name: record_skip
UPDATE schedules SET last_skip_at = :fire_time, last_skip_reason = :reason WHERE id = :id

-- name: has_active_task
SELECT 1 FROM tasks INDEXED BY tasks_schedule_active
WHERE schedule_id = ? AND status IN ('queued', 'running')
LIMIT 1

-- name: insert_scheduled_task
-- A task made by a schedule. A second task for the same (schedule_id, fire_time) is refused
-- by tasks_schedule_fire; DO NOTHING turns that into rowcount 0 ("already fired").
INSERT INTO tasks (id, type, payload, status, priority, run_at, max_attempts, timeout,
                   schedule_id, fire_time, created_at, updated_at, queue, callback_url)
VALUES (:id, :type, :payload, 'queued', :priority, :run_at, :max_attempts, :timeout,
        :schedule_id, :fire_time, :now, :now, :queue, :callback_url)
ON CONFLICT DO NOTHING

-- name: task_for_fire
SELECT id FROM tasks WHERE schedule_id = :schedule_id AND fire_time = :fire_time
