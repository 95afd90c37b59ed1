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

-- name: counts_by_status
-- Tasks per stored status: a walk of the (status, id) index.
SELECT status, count(*) AS n FROM tasks INDEXED BY tasks_status_id GROUP BY status

-- name: counts_by_status_of_type
SELECT status, count(*) AS n FROM tasks INDEXED BY tasks_type_id WHERE type = :type
GROUP BY status

-- name: counts_by_status_of_schedule
SELECT status, count(*) AS n FROM tasks INDEXED BY tasks_schedule_id
WHERE schedule_id = :schedule_id AND (:type IS NULL OR type = :type)
GROUP BY status

-- name: queued_views
-- Queued tasks split the way a person asks about them: ready (due now), retrying (an attempt
-- failed and the backoff is not over), scheduled (delayed, not due yet). Derived, not stored.
SELECT CASE WHEN run_at <= :now THEN 'ready' WHEN attempts > 0 THEN 'retrying'
            ELSE 'scheduled' END AS view,
       count(*) AS n
FROM tasks INDEXED BY tasks_runnable
WHERE status = 'queued'
  AND (:type IS NULL OR type = :type)
  AND (:schedule_id IS NULL OR schedule_id = :schedule_id)
GROUP BY view

-- name: queued_view_ids
-- One derived view of the queued tasks, newest first, keyset-paged like the queue's lists.
SELECT id FROM tasks INDEXED BY tasks_status_id
WHERE status = 'queued' AND id < :cursor
  AND CASE WHEN run_at <= :now THEN 'ready' WHEN attempts > 0 THEN 'retrying'
           ELSE 'scheduled' END = :view
  AND (:type IS NULL OR type = :type)
  AND (:schedule_id IS NULL OR schedule_id = :schedule_id)
ORDER BY id DESC
LIMIT :limit

-- name: run_waiting_now
-- "Run now" on a task that waits (delayed, or in its backoff before a retry): due at once.
-- The one write here; a task in any other state is left as it is.
UPDATE tasks SET run_at = :now, updated_at = :now
WHERE id = :id AND status = 'queued' AND run_at > :now

-- name: attempt_seconds
-- Time the attempts of these tasks (a JSON list of ids) took themselves: what "Took" means.
-- Backoff waits between attempts are not work; a running attempt counts up to :now.
SELECT task_id, sum(coalesce(finished_at, :now) - started_at) AS seconds
FROM task_attempts INDEXED BY task_attempts_task
WHERE task_id IN (SELECT value FROM json_each(:ids))
GROUP BY task_id
