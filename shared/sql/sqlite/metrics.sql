-- Queries behind /metrics, run at scrape time on a connection of their own (api/metrics.py),
-- so a scrape never queues behind, or ahead of, an API read.

-- Depth, totals and the oldest runnable task come from dashboard.sql's task_counts (kept by
-- triggers, migration 009) and oldest_runnable (stops at the first due row): a scrape reads a
-- few rows at any size.

-- name: workers_alive
-- Workers (in any process or container) that heartbeated recently and did not stop.
SELECT count(*) AS n FROM workers WHERE stopped_at IS NULL AND last_seen >= :since

-- name: queue_settings
-- Queues with a limit or a pause (a handful of rows; bounded all the same).
SELECT name, concurrency, paused FROM queues
WHERE paused = 1 OR concurrency IS NOT NULL
ORDER BY name LIMIT :limit
