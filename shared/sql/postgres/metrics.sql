-- Queries behind /metrics on PostgreSQL; names match shared/sql/sqlite/metrics.sql.

-- name: live_depth
SELECT status, type, queue, count(*) AS n
FROM tasks
WHERE status IN ('queued', 'running')
GROUP BY status, type, queue

-- name: totals_by_status
SELECT status, count(*) AS n FROM tasks GROUP BY status

-- name: oldest_runnable
SELECT min(run_at) AS run_at FROM tasks WHERE status = 'queued' AND run_at <= %(now)s

-- name: workers_alive
SELECT count(*) AS n FROM workers WHERE stopped_at IS NULL AND last_seen >= %(since)s

-- name: queue_settings
-- Queues with a limit or a pause (a handful of rows; bounded all the same).
SELECT name, concurrency, paused FROM queues
WHERE paused OR concurrency IS NOT NULL
ORDER BY name LIMIT %(limit)s
