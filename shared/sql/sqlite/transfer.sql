-- Bulk reads and writes for `localflow copy` (localflow/copy.py) on SQLite; names and
-- meaning match shared/sql/postgres/transfer.sql. Every column is listed (shared/store/base.py
-- TRANSFER_COLUMNS), so a copy keeps ids, statuses, timestamps, tokens and keys unchanged.
-- Exports page by id (keyset); imports skip a row that collides with one already there (ON
-- CONFLICT DO NOTHING, whichever unique constraint it meets), so a copy can be run again.

-- name: table_counts
SELECT (SELECT count(*) FROM workers) AS workers,
       (SELECT count(*) FROM schedules) AS schedules,
       (SELECT count(*) FROM tasks) AS tasks,
       (SELECT count(*) FROM task_attempts) AS task_attempts,
       (SELECT count(*) FROM audit) AS audit,
       (SELECT count(*) FROM webhook_deliveries) AS webhook_deliveries

-- name: export_workers
SELECT
    id, hostname, pid, slots, started_at, last_seen, stopped_at
FROM workers WHERE id > :after ORDER BY id LIMIT :limit

-- name: export_schedules
SELECT
    id, name, cron_expr, timezone, task_type, payload, enabled, priority, max_attempts,
    timeout, overlap, missed, next_fire_at, last_fire_at, last_task_id, last_skip_at,
    last_skip_reason, created_at, updated_at, queue, callback_url
FROM schedules WHERE id > :after ORDER BY id LIMIT :limit

-- name: export_tasks
SELECT
    id, type, payload, status, priority, run_at, attempts, max_attempts, timeout,
    idempotency_key, request_hash, claim_token, lease_until, worker_id, cancel_requested,
    result, last_error, created_at, updated_at, started_at, finished_at, schedule_id, fire_time, queue,
    callback_url
FROM tasks WHERE id > :after ORDER BY id LIMIT :limit

-- name: export_attempts
-- The attempts of the tasks of one export_tasks batch (ids after `after`, up to `last`),
-- oldest first per task: a range on the (task_id, id) index.
SELECT
    task_id, attempt, worker_id, started_at, finished_at, outcome, error, output
FROM task_attempts WHERE task_id > :after AND task_id <= :last
ORDER BY task_id, id

-- name: export_deliveries
-- The webhook deliveries of the tasks of one export_tasks batch, like export_attempts.
SELECT
    id, task_id, url, task_status, state, tries, history, next_try_at, lease_until,
    lease_token, created_at, finished_at
FROM webhook_deliveries WHERE task_id > :after AND task_id <= :last
ORDER BY task_id, created_at, id

-- name: insert_worker
INSERT INTO workers (
    id, hostname, pid, slots, started_at, last_seen, stopped_at
) VALUES (
    :id, :hostname, :pid, :slots, :started_at, :last_seen, :stopped_at
)
ON CONFLICT DO NOTHING

-- name: insert_schedule
INSERT INTO schedules (
    id, name, cron_expr, timezone, task_type, payload, enabled, priority, max_attempts,
    timeout, overlap, missed, next_fire_at, last_fire_at, last_task_id, last_skip_at,
    last_skip_reason, created_at, updated_at, queue, callback_url
) VALUES (
    :id, :name, :cron_expr, :timezone, :task_type, :payload, :enabled, :priority,
    :max_attempts, :timeout, :overlap, :missed, :next_fire_at, :last_fire_at, :last_task_id,
    :last_skip_at, :last_skip_reason, :created_at, :updated_at, :queue, :callback_url
)
ON CONFLICT DO NOTHING

-- name: insert_task
INSERT INTO tasks (
    id, type, payload, status, priority, run_at, attempts, max_attempts, timeout,
    idempotency_key, request_hash, claim_token, lease_until, worker_id, cancel_requested,
    result, last_error, created_at, updated_at, started_at, finished_at, schedule_id, fire_time, queue,
    callback_url
) VALUES (
    :id, :type, :payload, :status, :priority, :run_at, :attempts, :max_attempts, :timeout,
    :idempotency_key, :request_hash, :claim_token, :lease_until, :worker_id, :cancel_requested,
    :result, :last_error, :created_at, :updated_at, :started_at, :finished_at, :schedule_id,
    :fire_time, :queue, :callback_url
)
ON CONFLICT DO NOTHING

-- name: insert_attempt
-- The id is the target's own (an identity / rowid); only the order is kept.
INSERT INTO task_attempts (
    task_id, attempt, worker_id, started_at, finished_at, outcome, error, output
) VALUES (
    :task_id, :attempt, :worker_id, :started_at, :finished_at, :outcome, :error, :output
)

-- name: export_audit
SELECT
    id, at, action, target_kind, target_id, count, channel, actor, details
FROM audit WHERE id > :after ORDER BY id LIMIT :limit

-- name: insert_audit
INSERT INTO audit (
    id, at, action, target_kind, target_id, count, channel, actor, details
) VALUES (
    :id, :at, :action, :target_kind, :target_id, :count, :channel, :actor, :details
)
ON CONFLICT DO NOTHING

-- name: insert_delivery
INSERT INTO webhook_deliveries (
    id, task_id, url, task_status, state, tries, history, next_try_at, lease_until,
    lease_token, created_at, finished_at
) VALUES (
    :id, :task_id, :url, :task_status, :state, :tries, :history, :next_try_at, :lease_until, :lease_token, :created_at, :finished_at
)
ON CONFLICT DO NOTHING
