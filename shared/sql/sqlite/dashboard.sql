-- Read-only queries behind the dashboard's overview and system pages. None of them writes.

-- name: throughput
-- Finished tasks per time bucket (seconds wide), for the overview chart.
-- Read a slice of the window at a time (:since to :until): one long read would hold a snapshot
-- open and keep the WAL from being checkpointed meanwhile.
SELECT CAST(finished_at / :bucket AS INTEGER) AS bucket, status, count(*) AS n
FROM tasks INDEXED BY tasks_finished
WHERE finished_at >= :since AND finished_at < :until AND status IN ('succeeded', 'failed')
GROUP BY bucket, status

-- name: oldest_runnable
-- The due task that has waited longest (earliest run_at at or before now). Walks the claim index
-- (priority DESC, run_at, id) once per distinct priority of the queued tasks, stopping at the
-- first due row of each, so a backlog of delayed tasks (due later) is never read.
WITH RECURSIVE priorities(p) AS (
    SELECT max(priority) FROM tasks INDEXED BY tasks_runnable WHERE status = 'queued'
    UNION ALL
    SELECT (SELECT max(priority) FROM tasks INDEXED BY tasks_runnable
            WHERE status = 'queued' AND priority < priorities.p)
    FROM priorities WHERE priorities.p IS NOT NULL
),
firsts(id) AS (
    SELECT (SELECT id FROM tasks INDEXED BY tasks_runnable
            WHERE status = 'queued' AND priority = priorities.p AND run_at <= :now
            ORDER BY run_at, id LIMIT 1)
    FROM priorities WHERE priorities.p IS NOT NULL
)
SELECT id, type, priority, run_at, created_at FROM tasks
WHERE id IN (SELECT id FROM firsts WHERE id IS NOT NULL)
ORDER BY run_at, id
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
-- Newest first, keyset-paged like the queue's own lists; status, type and queue narrow it.
SELECT id FROM tasks INDEXED BY tasks_schedule_id
WHERE schedule_id = :schedule_id
  AND (:status IS NULL OR status = :status)
  AND (:type IS NULL OR type = :type)
  AND (:queue IS NULL OR queue = :queue)
  AND id < :cursor
ORDER BY id DESC
LIMIT :limit

-- name: queued_view_ids
-- Queued tasks in one derived view, newest first from :cursor, among a window of the :scan
-- newest queued tasks from there: finding the 60 retrying tasks among a million delayed ones
-- costs at most a window per page, never the whole backlog. Rows are read only until :limit
-- are found.
SELECT id FROM (
    SELECT id, run_at, attempts, type, schedule_id, queue FROM tasks INDEXED BY tasks_status_id
    WHERE status = 'queued' AND id < :cursor
    ORDER BY id DESC
    LIMIT :scan
)
WHERE CASE WHEN run_at <= :now THEN 'ready' WHEN attempts > 0 THEN 'retrying'
           ELSE 'scheduled' END = :view
  AND (:type IS NULL OR type = :type)
  AND (:schedule_id IS NULL OR schedule_id = :schedule_id)
  AND (:queue IS NULL OR queue = :queue)
LIMIT :limit

-- name: queued_window_end
-- The last id of that window (read from the index alone), where the next window starts.
SELECT id FROM tasks INDEXED BY tasks_status_id
WHERE status = 'queued' AND id < :cursor
ORDER BY id DESC
LIMIT 1 OFFSET :offset

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

-- name: search_ids
-- Tasks whose payload, last error or result holds :needle (lower-cased ASCII), newest first
-- from :cursor down to :floor, among a window of the :scan newest tasks under the filters:
-- a substring search reads at most a window of rows per page, never the whole table.
SELECT id FROM (
    SELECT id, payload, last_error, result FROM tasks
    WHERE id < :cursor AND id >= :floor
      AND (:status IS NULL OR status = :status)
      AND (:type IS NULL OR type = :type)
      AND (:schedule_id IS NULL OR schedule_id = :schedule_id)
      AND (:queue IS NULL OR queue = :queue)
    ORDER BY id DESC
    LIMIT :scan
)
WHERE instr(lower(payload), :needle) > 0
   OR instr(lower(coalesce(last_error, '')), :needle) > 0
   OR instr(lower(coalesce(result, '')), :needle) > 0
LIMIT :limit

-- name: search_window_end
-- The last id of that window, where the next one starts.
SELECT id FROM tasks
WHERE id < :cursor AND id >= :floor
  AND (:status IS NULL OR status = :status)
  AND (:type IS NULL OR type = :type)
  AND (:schedule_id IS NULL OR schedule_id = :schedule_id)
  AND (:queue IS NULL OR queue = :queue)
ORDER BY id DESC
LIMIT 1 OFFSET :offset

-- name: running_task_ids
-- The running tasks and who holds them (the running rows only, by their partial index).
SELECT id, worker_id FROM tasks INDEXED BY tasks_leases
WHERE status = 'running'
ORDER BY id DESC
LIMIT :limit

-- name: task_counts
-- Tasks per (queue, type, status), kept by triggers (migrations/sqlite/009_dashboard_indexes.sql):
-- a read of a few rows, whatever the table holds.
SELECT queue, type, status, n FROM task_counts WHERE n <> 0

-- The three below count one (queue, type)'s queued tasks of one kind, reading at most :limit
-- index entries (shared/store/counting.py adds them up and caps them).

-- name: count_due_up_to
SELECT count(*) AS n FROM (
    SELECT 1 FROM tasks INDEXED BY tasks_queued_due
    WHERE status = 'queued' AND queue = :queue AND type = :type AND run_at <= :now
    LIMIT :limit
)

-- name: count_waiting_up_to
SELECT count(*) AS n FROM (
    SELECT 1 FROM tasks INDEXED BY tasks_queued_due
    WHERE status = 'queued' AND queue = :queue AND type = :type AND run_at > :now
    LIMIT :limit
)

-- name: count_retrying_up_to
SELECT count(*) AS n FROM (
    SELECT 1 FROM tasks INDEXED BY tasks_queued_retry
    WHERE status = 'queued' AND attempts > 0 AND queue = :queue AND type = :type
      AND run_at > :now
    LIMIT :limit
)

-- name: schedule_task_counts
-- One schedule's tasks per (queue, type, status), kept by migration 010's triggers.
SELECT queue, type, status, n FROM schedule_task_counts
WHERE schedule_id = :schedule_id AND n <> 0

-- name: count_schedule_queued_views
-- One schedule's queued tasks split into ready / retrying / scheduled, reading at most :limit
-- of them (on tasks_schedule_active: its queued and running tasks only, few unless it fires
-- faster than its tasks run); the store reads this only when the kept counts say some are
-- queued.
SELECT CASE WHEN run_at <= :now THEN 'ready' WHEN attempts > 0 THEN 'retrying'
            ELSE 'scheduled' END AS key,
       count(*) AS n
FROM (
    SELECT run_at, attempts FROM tasks INDEXED BY tasks_schedule_active
    WHERE schedule_id = :schedule_id AND status IN ('queued', 'running') AND status = 'queued'
      AND (:type IS NULL OR type = :type) AND (:queue IS NULL OR queue = :queue)
    LIMIT :limit
)
GROUP BY key
