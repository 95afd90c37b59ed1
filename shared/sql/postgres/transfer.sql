-- Bulk reads and writes for `localflow copy` (localflow/copy.py) on PostgreSQL; names and
-- meaning match shared/sql/sqlite/transfer.sql. Every column is listed (shared/store/base.py
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
FROM workers WHERE id > %(after)s ORDER BY id LIMIT %(limit)s

-- name: export_schedules
SELECT
    id, name, cron_expr, timezone, task_type, payload, enabled, priority, max_attempts,
    timeout, overlap, missed, next_fire_at, last_fire_at, last_task_id, last_skip_at,
    last_skip_reason, created_at, updated_at, queue, callback_url
FROM schedules WHERE id > %(after)s ORDER BY id LIMIT %(limit)s

-- name: export_tasks
SELECT
    id, type, payload, status, priority, run_at, attempts, max_attempts, timeout,
    idempotency_key, request_hash, claim_token, lease_until, worker_id, cancel_requested,
    result, last_error, created_at, updated_at, started_at, finished_at, schedule_id, fire_time, queue,
    callback_url
FROM tasks WHERE id > %(after)s ORDER BY id LIMIT %(limit)s

-- name: export_attempts
-- The attempts of the tasks of one export_tasks batch (ids after `after`, up to `last`),
-- oldest first per task: a range on the (task_id, id) index.
SELECT
    task_id, attempt, worker_id, started_at, finished_at, outcome, error, output
FROM task_attempts WHERE task_id > %(after)s AND task_id <= %(last)s
ORDER BY task_id, id

-- name: export_deliveries
-- The webhook deliveries of the tasks of one export_tasks batch, like export_attempts.
SELECT
    id, task_id, url, task_status, state, tries, history, next_try_at, lease_until,
    lease_token, created_at, finished_at
FROM webhook_deliveries WHERE task_id > %(after)s AND task_id <= %(last)s
ORDER BY task_id, created_at, id

-- name: insert_worker
INSERT INTO workers (
    id, hostname, pid, slots, started_at, last_seen, stopped_at
) VALUES (
    %(id)s, %(hostname)s, %(pid)s, %(slots)s, %(started_at)s, %(last_seen)s, %(stopped_at)s
)
ON CONFLICT DO NOTHING
RETURNING id

-- name: insert_schedule
INSERT INTO schedules (
    id, name, cron_expr, timezone, task_type, payload, enabled, priority, max_attempts,
    timeout, overlap, missed, next_fire_at, last_fire_at, last_task_id, last_skip_at,
    last_skip_reason, created_at, updated_at, queue, callback_url
) VALUES (
    %(id)s, %(name)s, %(cron_expr)s, %(timezone)s, %(task_type)s, %(payload)s, %(enabled)s,
    %(priority)s, %(max_attempts)s, %(timeout)s, %(overlap)s, %(missed)s, %(next_fire_at)s,
    %(last_fire_at)s, %(last_task_id)s, %(last_skip_at)s, %(last_skip_reason)s, %(created_at)s,
    %(updated_at)s, %(queue)s, %(callback_url)s
)
ON CONFLICT DO NOTHING
RETURNING id

-- name: insert_task
INSERT INTO tasks (
    id, type, payload, status, priority, run_at, attempts, max_attempts, timeout,
    idempotency_key, request_hash, claim_token, lease_until, worker_id, cancel_requested,
    result, last_error, created_at, updated_at, started_at, finished_at, schedule_id, fire_time, queue,
    callback_url
) VALUES (
    %(id)s, %(type)s, %(payload)s, %(status)s, %(priority)s, %(run_at)s, %(attempts)s,
    %(max_attempts)s, %(timeout)s, %(idempotency_key)s, %(request_hash)s, %(claim_token)s,
    %(lease_until)s, %(worker_id)s, %(cancel_requested)s, %(result)s, %(last_error)s,
    %(created_at)s, %(updated_at)s, %(started_at)s, %(finished_at)s, %(schedule_id)s,
    %(fire_time)s, %(queue)s, %(callback_url)s
)
ON CONFLICT DO NOTHING
RETURNING id

-- name: insert_attempt
-- The id is the target's own (an identity / rowid); only the order is kept.
INSERT INTO task_attempts (
    task_id, attempt, worker_id, started_at, finished_at, outcome, error, output
) VALUES (
    %(task_id)s, %(attempt)s, %(worker_id)s, %(started_at)s, %(finished_at)s, %(outcome)s,
    %(error)s, %(output)s
)

-- name: export_audit
SELECT
    id, at, action, target_kind, target_id, count, channel, actor, details
FROM audit WHERE id > %(after)s ORDER BY id LIMIT %(limit)s

-- name: insert_audit
INSERT INTO audit (
    id, at, action, target_kind, target_id, count, channel, actor, details
) VALUES (
    %(id)s, %(at)s, %(action)s, %(target_kind)s, %(target_id)s, %(count)s, %(channel)s, %(actor)s, %(details)s
)
ON CONFLICT DO NOTHING
RETURNING id

-- name: insert_delivery
INSERT INTO webhook_deliveries (
    id, task_id, url, task_status, state, tries, history, next_try_at, lease_until,
    lease_token, created_at, finished_at
) VALUES (
    %(id)s, %(task_id)s, %(url)s, %(task_status)s, %(state)s, %(tries)s, %(history)s, %(next_try_at)s, %(lease_until)s, %(lease_token)s, %(created_at)s, %(finished_at)s
)
ON CONFLICT DO NOTHING
