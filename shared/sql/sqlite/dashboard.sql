-- Read-only queries behind the dashboard's overview and system pages. None of them writes.

-- name: throughput
-- Finished tasks per time bucket (seconds wide), for the overview chart.
SELECT CAST(finished_at / :bucket AS INTEGER) AS bucket, status, count(*) AS n
FROM tasks INDEXED BY tasks_finished
WHERE finished_at >= :since AND status IN ('succeeded', 'failed')
GROUP BY bucket, status

-- name: oldest_runnable
-- The task that has waited longest among those due now. Walks (status, id), so it stops at the
-- first due row instead of sorting the backlog.
SELECT id, type, priority, run_at, created_at FROM tasks INDEXED BY tasks_status_id
WHERE status = 'queued' AND run_at <= :now
ORDER BY id
LIMIT 1

-- name: recent_workers
SELECT id, hostname, pid, slots, started_at, last_seen, stopped_at FROM workers
WHERE last_seen >= :since
ORDER BY last_seen DESC
LIMIT 50

-- name: running_by_worker
SELECT worker_id, count(*) AS n FROM tasks INDEXED BY tasks_leases
WHERE status = 'running'
GROUP BY worker_id

-- name: task_id_by_key
SELECT id FROM tasks WHERE idempotency_key = ?

-- name: page_stats
SELECT page_count, page_size, freelist_count
FROM pragma_page_count(), pragma_page_size(), pragma_freelist_count()

-- name: sqlite_version
SELECT sqlite_version() AS version

-- name: task_ids_of_schedule
-- Newest first, keyset-paged like the queue's own lists; status and type narrow it further.
SELECT id FROM tasks INDEXED BY tasks_schedule_id
WHERE schedule_id = :schedule_id
  AND (:status IS NULL OR status = :status)
  AND (:type IS NULL OR type = :type)
  AND id < :cursor
ORDER BY id DESC
LIMIT :limit
