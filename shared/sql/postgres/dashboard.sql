-- Read-only queries behind the dashboard's overview and system pages, on PostgreSQL; names
-- match shared/sql/sqlite/dashboard.sql where the question is the same.

-- name: throughput
-- Finished tasks per time bucket (seconds wide), for the overview chart. floor(), not a cast:
-- PostgreSQL's cast to an integer rounds, SQLite's truncates.
SELECT floor(finished_at / %(bucket)s)::bigint AS bucket, status, count(*) AS n
FROM tasks
WHERE finished_at >= %(since)s AND status IN ('succeeded', 'failed')
GROUP BY 1, 2

-- name: oldest_runnable
SELECT id, type, priority, run_at, created_at FROM tasks
WHERE status = 'queued' AND run_at <= %(now)s
ORDER BY id
LIMIT 1

-- name: recent_workers
SELECT id, hostname, pid, slots, started_at, last_seen, stopped_at FROM workers
WHERE last_seen >= %(since)s
ORDER BY last_seen DESC
LIMIT 50

-- name: running_by_worker
SELECT worker_id, count(*) AS n FROM tasks
WHERE status = 'running'
GROUP BY worker_id

-- name: task_id_by_key
SELECT id FROM tasks WHERE idempotency_key = %(key)s

-- name: database_size
-- What the system page shows in place of SQLite's page counts.
SELECT pg_database_size(current_database()) AS bytes

-- name: server_version
SELECT current_setting('server_version') AS version

-- name: task_ids_of_schedule
-- Newest first, keyset-paged like the queue's own lists; status and type narrow it further.
SELECT id FROM tasks
WHERE schedule_id = %(schedule_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND id < %(cursor)s
ORDER BY id DESC
LIMIT %(limit)s
