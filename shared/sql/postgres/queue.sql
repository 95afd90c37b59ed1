-- Queries of the task queue on PostgreSQL; names and meaning match shared/sql/sqlite/queue.sql.
-- Every transition out of a state names that state in its WHERE, and every transition out of
-- 'running' also names the claim token: a worker whose lease expired (and whose task another
-- worker re-claimed) changes nothing. See docs/state_machine.md. Parameters: psycopg's
-- %(name)s. Under READ COMMITTED an UPDATE that waited for another transaction's row lock
-- re-checks its WHERE against the committed row, so these fences hold across hosts too.

-- name: insert_task
-- Idempotency is the unique index's job: a second submitter with the same key waits for the
-- first to commit, then does nothing (rowcount 0) and reads the first one's task.
INSERT INTO tasks (id, type, payload, status, priority, run_at, max_attempts, timeout,
                   idempotency_key, request_hash, created_at, updated_at, queue)
VALUES (%(id)s, %(type)s, %(payload)s, 'queued', %(priority)s, %(run_at)s, %(max_attempts)s,
        %(timeout)s, %(idempotency_key)s, %(request_hash)s, %(now)s, %(now)s, %(queue)s)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING

-- name: get_task
SELECT * FROM tasks WHERE id = %(id)s

-- name: get_task_by_key
SELECT * FROM tasks WHERE idempotency_key = %(key)s

-- name: claim
-- queued -> running, the most urgent runnable tasks first. SKIP LOCKED: a claimer passes over
-- rows another claimer is taking right now instead of queueing behind it, so workers on many
-- hosts never get the same task and never wait for each other. Each row gets its own token.
-- The pick is a MATERIALIZED CTE, evaluated exactly once: as `id IN (subquery LIMIT n)` the
-- planner may run the subquery again per outer row and, skipping rows it has locked itself
-- meanwhile, claim more than n.
WITH picked AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE status = 'queued' AND run_at <= %(now)s
      -- Queues (docs/queues.md): not the paused or full ones (%(closed)s), and only the
      -- worker's own if it serves some (%(only)s, NULL for all). Limits are kept by the
      -- caller's LIMIT, under the queue rows' locks (shared/store/claiming.py).
      AND queue <> ALL(%(closed)s::text[])
      AND (%(only)s::text[] IS NULL OR queue = ANY(%(only)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks
SET status = 'running',
    attempts = tasks.attempts + 1,
    claim_token = replace(gen_random_uuid()::text, '-', ''),
    lease_until = %(lease_until)s,
    worker_id = %(worker_id)s,
    started_at = coalesce(tasks.started_at, %(now)s),
    updated_at = %(now)s
FROM picked
WHERE tasks.id = picked.id AND tasks.status = 'queued'
RETURNING tasks.*

-- name: insert_attempt
INSERT INTO task_attempts (task_id, attempt, worker_id, started_at)
VALUES (%(id)s, %(attempt)s, %(worker_id)s, %(now)s)

-- name: extend_leases
-- Heartbeat for every task a worker holds; answers which it still holds and which a
-- person asked to cancel.
UPDATE tasks
SET lease_until = %(lease_until)s, updated_at = %(now)s
WHERE status = 'running' AND claim_token = ANY(%(tokens)s)
RETURNING id, claim_token, cancel_requested

-- name: complete
-- running -> succeeded
UPDATE tasks
SET status = 'succeeded', result = %(result)s, last_error = NULL,
    claim_token = NULL, lease_until = NULL, finished_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND status = 'running' AND claim_token = %(token)s

-- name: fail
-- running -> queued (attempts left, retried at retry_at) or failed (none left, or retry
-- false: a failure that retrying cannot mend)
UPDATE tasks
SET status = CASE WHEN %(retry)s AND attempts < max_attempts THEN 'queued' ELSE 'failed' END,
    run_at = CASE WHEN %(retry)s AND attempts < max_attempts THEN %(retry_at)s ELSE run_at END,
    finished_at = CASE WHEN %(retry)s AND attempts < max_attempts THEN NULL ELSE %(now)s END,
    result = %(result)s, last_error = %(error)s,
    claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = %(now)s
WHERE id = %(id)s AND status = 'running' AND claim_token = %(token)s
RETURNING status

-- name: release
-- running -> queued without spending an attempt: the worker is shutting down.
UPDATE tasks
SET status = 'queued', attempts = attempts - 1, run_at = %(now)s,
    claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = %(now)s
WHERE id = %(id)s AND status = 'running' AND claim_token = %(token)s

-- name: finish_cancelled
-- running -> cancelled, after the worker stopped the task a person cancelled
UPDATE tasks
SET status = 'cancelled', last_error = %(error)s, result = %(result)s,
    claim_token = NULL, lease_until = NULL, finished_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND status = 'running' AND claim_token = %(token)s

-- name: finish_attempt
UPDATE task_attempts
SET finished_at = %(now)s, outcome = %(outcome)s, error = %(error)s, output = %(output)s
WHERE task_id = %(id)s AND attempt = %(attempt)s AND finished_at IS NULL

-- name: cancel_queued
-- queued -> cancelled: it will never run
UPDATE tasks
SET status = 'cancelled', finished_at = %(now)s, updated_at = %(now)s, last_error = 'cancelled'
WHERE id = %(id)s AND status = 'queued'

-- name: request_cancel
-- a running task is stopped by the worker that holds it, which then marks it cancelled
UPDATE tasks
SET cancel_requested = true, updated_at = %(now)s
WHERE id = %(id)s AND status = 'running'

-- name: rescue_expired
-- running -> queued (attempts left) or failed: the worker holding it stopped heartbeating.
-- A task someone asked to cancel is cancelled instead of retried. Rescuers on several hosts
-- may run this at once: the second waits for the first's row locks, then finds the rows no
-- longer running and leaves them be.
UPDATE tasks
SET status = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN attempts < max_attempts THEN 'queued'
        ELSE 'failed' END,
    finished_at = CASE
        WHEN cancel_requested OR attempts >= max_attempts THEN %(now)s ELSE NULL END,
    run_at = %(now)s,
    last_error = 'lease expired: the worker running attempt ' || attempts
                 || ' stopped heartbeating (crashed or killed)',
    claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = %(now)s
WHERE status = 'running' AND lease_until < %(now)s
RETURNING id, attempts, status

-- name: lose_attempt
UPDATE task_attempts
SET finished_at = %(now)s, outcome = 'lost',
    error = 'lease expired: the worker stopped heartbeating (crashed or killed)'
WHERE task_id = %(id)s AND attempt = %(attempt)s AND finished_at IS NULL

-- name: next_run_at
-- The earliest run_at a worker could claim: closed (paused, full) and other workers' queues
-- left out, so due tasks it may not take never keep it from idling.
SELECT min(run_at) FROM tasks
WHERE status = 'queued' AND queue <> ALL(%(closed)s::text[])
  AND (%(only)s::text[] IS NULL OR queue = ANY(%(only)s::text[]))

-- name: counts_by_status
SELECT status, count(*) AS n FROM tasks GROUP BY status

-- name: list_attempts
SELECT * FROM task_attempts WHERE task_id = %(id)s ORDER BY id

-- name: list_all
SELECT * FROM tasks WHERE id < %(cursor)s ORDER BY id DESC LIMIT %(limit)s

-- name: list_by_status
SELECT * FROM tasks WHERE status = %(status)s AND id < %(cursor)s ORDER BY id DESC
LIMIT %(limit)s

-- name: list_by_type
SELECT * FROM tasks WHERE type = %(type)s AND id < %(cursor)s ORDER BY id DESC LIMIT %(limit)s

-- name: list_by_status_and_type
SELECT * FROM tasks
WHERE status = %(status)s AND type = %(type)s AND id < %(cursor)s ORDER BY id DESC
LIMIT %(limit)s

-- name: upsert_worker
INSERT INTO workers (id, hostname, pid, slots, started_at, last_seen)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(slots)s, %(now)s, %(now)s)
ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen, stopped_at = NULL

-- name: stop_worker
UPDATE workers SET stopped_at = %(now)s, last_seen = %(now)s WHERE id = %(id)s

-- name: cancel_requests_for_worker
SELECT id FROM tasks
WHERE status = 'running' AND worker_id = %(worker_id)s AND cancel_requested

-- name: retry_task
-- failed/cancelled -> queued, runnable now, with `extra` more attempts. The attempt count
-- keeps counting so the history in task_attempts stays in order.
UPDATE tasks
SET status = 'queued', run_at = %(now)s, max_attempts = attempts + %(extra)s,
    cancel_requested = false, finished_at = NULL, updated_at = %(now)s
WHERE id = %(id)s AND status IN ('failed', 'cancelled')

-- name: delete_task
-- any state but running (its worker still holds it); attempts go with it (ON DELETE CASCADE)
DELETE FROM tasks WHERE id = %(id)s AND status != 'running'

-- name: notify
-- Wakes every listener (shared/store/postgres/listener.py). Sent inside the transaction that
-- made work runnable: PostgreSQL delivers it at COMMIT, and never if the transaction rolls
-- back, so a woken worker always finds the work committed. Repeats in one transaction fold
-- into one delivery.
SELECT pg_notify('localflow', '')

-- name: list_by_queue
SELECT * FROM tasks
WHERE queue = %(queue)s AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(type)s::text IS NULL OR type = %(type)s) AND id < %(cursor)s
ORDER BY queue DESC, id DESC LIMIT %(limit)s

-- name: queue_gates
SELECT name, concurrency, paused FROM queues WHERE paused OR concurrency IS NOT NULL

-- name: lock_limited_queues
-- The claim's fence for concurrency limits: the rows of the limited queues this worker may
-- take, locked until the claim commits (in name order: two claimers never deadlock). A
-- second claimer waits here, then counts running tasks in a new statement -- a new snapshot
-- under READ COMMITTED -- that sees what the first one claimed. Re-read: the values now.
SELECT name, concurrency, paused FROM queues
WHERE name = ANY(%(names)s::text[]) ORDER BY name FOR UPDATE

-- name: running_in_queues
SELECT queue, count(*) AS n FROM tasks
WHERE status = 'running' AND queue = ANY(%(names)s::text[])
GROUP BY queue

-- name: counts_by_queue
SELECT queue, status, count(*) AS n FROM tasks GROUP BY queue, status

-- name: counts_of_queue
SELECT status, count(*) AS n FROM tasks WHERE queue = %(name)s GROUP BY status

-- name: all_queue_settings
SELECT name, concurrency, paused FROM queues

-- name: queue_settings
SELECT name, concurrency, paused FROM queues WHERE name = %(name)s

-- name: set_queue
INSERT INTO queues (name, concurrency, paused, updated_at)
VALUES (%(name)s, %(concurrency)s, coalesce(%(paused)s, false), %(now)s)
ON CONFLICT (name) DO UPDATE
SET concurrency = CASE WHEN %(set_concurrency)s THEN %(concurrency)s
                       ELSE queues.concurrency END,
    paused = coalesce(%(paused)s, queues.paused),
    updated_at = %(now)s

-- name: queues_with_work
-- The queues that have queued tasks: a loose index scan (one index probe per queue).
WITH RECURSIVE q(name) AS (
    SELECT min(queue) FROM tasks WHERE status = 'queued'
    UNION ALL
    SELECT (SELECT min(queue) FROM tasks WHERE status = 'queued' AND queue > q.name)
    FROM q WHERE q.name IS NOT NULL
)
SELECT name FROM q WHERE name IS NOT NULL

-- name: claim_candidates_in_queue
-- The most urgent runnable tasks of one queue, locked (SKIP LOCKED, as in `claim`).
SELECT id, priority, run_at FROM tasks
WHERE status = 'queued' AND queue = %(queue)s AND run_at <= %(now)s
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: claim_ids
UPDATE tasks
SET status = 'running',
    attempts = attempts + 1,
    claim_token = replace(gen_random_uuid()::text, '-', ''),
    lease_until = %(lease_until)s,
    worker_id = %(worker_id)s,
    started_at = coalesce(started_at, %(now)s),
    updated_at = %(now)s
WHERE id = ANY(%(ids)s::text[]) AND status = 'queued'
RETURNING *

-- name: take_lease
INSERT INTO leases (name, holder, until) VALUES (%(name)s, %(holder)s, %(until)s)
ON CONFLICT (name) DO UPDATE SET holder = %(holder)s, until = %(until)s
WHERE leases.until < %(now)s OR leases.holder = %(holder)s

-- name: prune_batch
-- As on SQLite. SKIP LOCKED: a row a worker is updating right now waits for the next pass.
DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks
    WHERE finished_at < %(before)s AND status = %(status)s
      AND id NOT IN (SELECT last_task_id FROM schedules WHERE last_task_id IS NOT NULL)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
