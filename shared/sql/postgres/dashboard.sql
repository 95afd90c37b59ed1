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
-- The due task that has waited longest (earliest run_at at or before now). PostgreSQL has no
-- skip scan, so the recursion does one by hand: it walks the claim index tasks_runnable
-- (priority DESC, run_at, id, partial on queued) once per distinct priority, stopping at the
-- first due row of each, so a backlog of delayed tasks (due later) is never read.
WITH RECURSIVE priorities(p) AS (
    SELECT max(priority) FROM tasks WHERE status = 'queued'
    UNION ALL
    SELECT (SELECT max(priority) FROM tasks WHERE status = 'queued' AND priority < p)
    FROM priorities WHERE p IS NOT NULL
),
firsts AS (
    SELECT (SELECT id FROM tasks
            WHERE status = 'queued' AND priority = p AND run_at <= %(now)s
            ORDER BY priority DESC, run_at, id LIMIT 1) AS id
    FROM priorities WHERE p IS NOT NULL
)
SELECT id, type, priority, run_at, created_at FROM tasks
WHERE id IN (SELECT id FROM firsts WHERE id IS NOT NULL)
ORDER BY run_at, id
LIMIT 1

-- name: recent_workers
-- With how many tasks each one holds, in the same statement: one round trip per overview.
SELECT w.id, w.hostname, w.pid, w.slots, w.started_at, w.last_seen, w.stopped_at,
       coalesce(r.n, 0) AS running
FROM workers w
LEFT JOIN (
    SELECT worker_id, count(*) AS n FROM tasks
    WHERE status = 'running'
    GROUP BY worker_id
) AS r ON r.worker_id = w.id
WHERE w.last_seen >= %(since)s
ORDER BY w.last_seen DESC
LIMIT 50

-- name: task_id_by_key
SELECT id FROM tasks WHERE idempotency_key = %(key)s

-- name: database_size
-- What the system page shows in place of SQLite's page counts.
SELECT pg_database_size(current_database()) AS bytes

-- name: server_version
SELECT current_setting('server_version') AS version

-- name: task_ids_of_schedule
-- Newest first, keyset-paged like the queue's own lists; status, type and queue narrow it.
-- The row comparison keeps it on tasks_schedule_id (see queue.sql's list_by_status).
SELECT id FROM tasks
WHERE schedule_id = %(schedule_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (schedule_id, id) < (%(schedule_id)s, %(cursor)s)
ORDER BY schedule_id DESC, id DESC
LIMIT %(limit)s

-- name: queued_view_ids
-- Queued tasks in one derived view, newest first from the cursor, among a window of the
-- %(scan)s newest queued tasks from there (tasks_status_id): a bounded read per page however
-- big the backlog of the other views.
SELECT id FROM (
    SELECT id, run_at, attempts, type, schedule_id, queue FROM tasks
    WHERE status = 'queued' AND (status, id) < ('queued', %(cursor)s)  -- see list_by_status
    ORDER BY status DESC, id DESC
    LIMIT %(scan)s
) AS w
WHERE CASE WHEN run_at <= %(now)s THEN 'ready' WHEN attempts > 0 THEN 'retrying'
           ELSE 'scheduled' END = %(view)s
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(schedule_id)s::text IS NULL OR schedule_id = %(schedule_id)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY id DESC
LIMIT %(limit)s

-- name: queued_window_end
-- The last id of that window, where the next window starts.
SELECT id FROM tasks
WHERE status = 'queued' AND (status, id) < ('queued', %(cursor)s)
ORDER BY status DESC, id DESC
LIMIT 1 OFFSET %(offset)s

-- name: run_waiting_now
-- "Run now" on a task that waits (delayed, or in its backoff before a retry): due at once.
UPDATE tasks SET run_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND status = 'queued' AND run_at > %(now)s

-- name: attempt_seconds
-- Time the attempts of these tasks took themselves; a running attempt counts up to now.
SELECT task_id, sum(coalesce(finished_at, %(now)s) - started_at) AS seconds
FROM task_attempts
WHERE task_id = ANY(%(ids)s::text[])
GROUP BY task_id

-- name: search_ids
-- Tasks whose payload, last error or result holds the needle (lower-cased), newest first from
-- the cursor down to the floor, among a window of the %(scan)s newest tasks under the
-- filters: a substring search reads at most a window of rows per page.
SELECT id FROM (
    SELECT id, payload, last_error, result FROM tasks
    WHERE id < %(cursor)s AND id >= %(floor)s
      AND (%(status)s::text IS NULL OR status = %(status)s::text)
      AND (%(type)s::text IS NULL OR type = %(type)s::text)
      AND (%(schedule_id)s::text IS NULL OR schedule_id = %(schedule_id)s::text)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS w
WHERE strpos(lower(payload), %(needle)s) > 0
   OR strpos(lower(coalesce(last_error, '')), %(needle)s) > 0
   OR strpos(lower(coalesce(result, '')), %(needle)s) > 0
ORDER BY id DESC
LIMIT %(limit)s

-- name: search_window_end
-- The last id of that window, where the next one starts.
SELECT id FROM tasks
WHERE id < %(cursor)s AND id >= %(floor)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(schedule_id)s::text IS NULL OR schedule_id = %(schedule_id)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY id DESC
LIMIT 1 OFFSET %(offset)s

-- name: running_task_ids
-- The running tasks and who holds them.
SELECT id, worker_id FROM tasks
WHERE status = 'running'
ORDER BY id DESC
LIMIT %(limit)s

-- name: task_counts
-- Tasks per (queue, type, status): the folded counts plus the deltas not folded yet, in one
-- statement, so one snapshot (migrations/postgres/009_dashboard_indexes.sql).
SELECT queue, type, status, sum(n)::bigint AS n FROM (
    SELECT queue, type, status, n FROM task_counts
    UNION ALL
    SELECT queue, type, status, n FROM task_count_deltas
) AS c
GROUP BY queue, type, status
HAVING sum(n) <> 0

-- The three below count one (queue, type)'s queued tasks of one kind, reading at most
-- %(limit)s index entries (shared/store/counting.py adds them up and caps them). ORDER BY run_at
-- keeps the planner on the index (tasks_queued_due, tasks_queued_retry): else it may choose a
-- sequential scan that stops after %(limit)s matches, which costs what the table holds before
-- them (every finished task, when the backlog is the newest part of the table).

-- name: count_due_up_to
SELECT count(*) AS n FROM (
    SELECT 1 FROM tasks
    WHERE status = 'queued' AND queue = %(queue)s AND type = %(type)s AND run_at <= %(now)s
    ORDER BY run_at
    LIMIT %(limit)s
) AS w

-- name: count_waiting_up_to
SELECT count(*) AS n FROM (
    SELECT 1 FROM tasks
    WHERE status = 'queued' AND queue = %(queue)s AND type = %(type)s AND run_at > %(now)s
    ORDER BY run_at
    LIMIT %(limit)s
) AS w

-- name: count_retrying_up_to
SELECT count(*) AS n FROM (
    SELECT 1 FROM tasks
    WHERE status = 'queued' AND attempts > 0 AND queue = %(queue)s AND type = %(type)s
      AND run_at > %(now)s
    ORDER BY run_at
    LIMIT %(limit)s
) AS w

-- name: schedule_task_counts
-- One schedule's tasks per (queue, type, status): the folded counts plus the deltas not folded
-- yet, in one statement (migrations/postgres/010_schedule_counts.sql).
SELECT queue, type, status, sum(n)::bigint AS n FROM (
    SELECT queue, type, status, n FROM schedule_task_counts
    WHERE schedule_id = %(schedule_id)s
    UNION ALL
    SELECT queue, type, status, n FROM schedule_task_count_deltas
    WHERE schedule_id = %(schedule_id)s
) AS c
GROUP BY queue, type, status
HAVING sum(n) <> 0

-- name: count_schedule_queued_views
-- One schedule's queued tasks split into ready / retrying / scheduled, reading at most
-- %(limit)s of them (on tasks_schedule_active: its queued and running tasks only); the store
-- reads this only when the kept counts say some are queued.
SELECT CASE WHEN run_at <= %(now)s THEN 'ready' WHEN attempts > 0 THEN 'retrying'
            ELSE 'scheduled' END AS key,
       count(*) AS n
FROM (
    SELECT run_at, attempts FROM tasks
    WHERE schedule_id = %(schedule_id)s AND status = 'queued'
      AND (%(type)s::text IS NULL OR type = %(type)s::text)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
    LIMIT %(limit)s
) AS w
GROUP BY 1
