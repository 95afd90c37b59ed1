-- Queries behind /metrics, run at scrape time on a connection of their own (api/metrics.py),
-- so a scrape never queues behind, or ahead of, an API read.

-- name: live_depth
-- Work not finished yet, by state and type. Walks tasks_status_id over the live rows only,
-- so it costs what the backlog is, not what the history is.
SELECT status, type, queue, count(*) AS n
FROM tasks
WHERE status IN ('queued', 'running')
GROUP BY status, type, queue

-- name: totals_by_status
-- Every task by state: a scan of the covering index tasks_status_id (no table rows read).
SELECT status, count(*) AS n FROM tasks GROUP BY status

-- name: oldest_runnable
-- The queued task that has been runnable the longest (run_at passed); tasks_runnable.
SELECT min(run_at) AS run_at FROM tasks WHERE status = 'queued' AND run_at <= :now

-- name: workers_alive
-- Workers (in any process or container) that heartbeated recently and did not stop.
SELECT count(*) AS n FROM workers WHERE stopped_at IS NULL AND last_seen >= :since

-- name: queue_settings
-- Queues with a limit or a pause (a handful of rows; bounded all the same).
SELECT name, concurrency, paused FROM queues
WHERE paused = 1 OR concurrency IS NOT NULL
ORDER BY name LIMIT :limit
