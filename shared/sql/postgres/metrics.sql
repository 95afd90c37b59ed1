-- Queries behind /metrics on PostgreSQL; names match shared/sql/sqlite/metrics.sql.

-- Depth, totals and the oldest runnable task come from dashboard.sql's task_counts (kept by
-- triggers, migration 009) and oldest_runnable (stops at the first due row): a scrape reads a
-- few rows at any size.

-- name: workers_alive
SELECT count(*) AS n FROM workers WHERE stopped_at IS NULL AND last_seen >= %(since)s

-- name: queue_settings
-- Queues with a limit or a pause (a handful of rows; bounded all the same).
SELECT name, concurrency, paused FROM queues
WHERE paused OR concurrency IS NOT NULL
ORDER BY name LIMIT %(limit)s
