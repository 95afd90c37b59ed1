-- Queries of the task queue on PostgreSQL; names and meaning match shared/sql/sqlite/queue.sql.
-- Every transition out of a state names that state in its WHERE, and every transition out of
-- 'running' also names the claim token: a worker whose lease expired (and whose task another
-- worker re-claimed) changes nothing. See docs/state_machine.md. Parameters: psycopg's
-- %(name)s. Under READ COMMITTED an UPDATE that waited for another transaction's row lock
-- re-checks its WHERE against the committed row, so these fences hold across hosts too.

-- name: insert_tasks
-- A batch of new tasks, in order: those of every submission that arrived together (group
-- commit, shared/store/postgres/batch.py), as arrays unnested into rows. Idempotency is the
-- unique index's job: a row whose key is taken (by a committed task, by a concurrent
-- submitter, who is waited for, or by an earlier row of this batch) is not inserted, and the
-- store reads the task that holds the key. Sends the NOTIFY when anything went in.
WITH inserted AS (
    INSERT INTO tasks (id, type, payload, status, priority, run_at, max_attempts, timeout,
                       idempotency_key, request_hash, created_at, updated_at, queue,
                       callback_url)
    SELECT i.id, i.type, i.payload, 'queued', i.priority, i.run_at, i.max_attempts, i.timeout,
           i.idempotency_key, i.request_hash, i.now, i.now, i.queue, i.callback_url
    FROM unnest(%(ids)s::text[], %(types)s::text[], %(payloads)s::text[],
                %(priorities)s::int[], %(run_ats)s::float8[], %(max_attempts)s::int[],
                %(timeouts)s::float8[], %(keys)s::text[], %(hashes)s::text[],
                %(nows)s::float8[], %(queues)s::text[], %(callback_urls)s::text[])
         WITH ORDINALITY
         AS i(id, type, payload, priority, run_at, max_attempts, timeout, idempotency_key,
              request_hash, now, queue, callback_url, n)
    ORDER BY i.n
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
)
SELECT inserted.*, pg_notify('localflow', '') AS notified FROM inserted

-- name: get_tasks_by_keys
SELECT * FROM tasks WHERE idempotency_key = ANY(%(keys)s)

-- name: get_task
SELECT * FROM tasks WHERE id = %(id)s

-- name: get_tasks
SELECT * FROM tasks WHERE id = ANY(%(ids)s)

-- name: claim
-- queued -> running, the most urgent runnable tasks first. SKIP LOCKED: a claimer passes over
-- rows another claimer is taking right now instead of queueing behind it, so workers on many
-- hosts never get the same task and never wait for each other. Each row gets its own token.
-- The pick is a MATERIALIZED CTE, evaluated exactly once: as `id IN (subquery LIMIT n)` the
-- planner may run the subquery again per outer row and, skipping rows it has locked itself
-- meanwhile, claim more than n.
-- (Statement shape: `picked` chooses the rows, `claimed` takes them, `attempt_rows` records
-- the attempts; a change to what may be claimed belongs in `picked` alone.)
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
),
claimed AS (
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
),
-- Each claimed task's attempt row, in the same statement (so the same transaction and the
-- same round trip): a claim is one statement in autocommit, no BEGIN/COMMIT around it.
attempt_rows AS (
    INSERT INTO task_attempts (task_id, attempt, worker_id, started_at)
    SELECT id, attempts, %(worker_id)s, %(now)s FROM claimed
)
SELECT * FROM claimed

-- name: extend_leases
-- Heartbeat for every task a worker holds; answers which it still holds and which a
-- person asked to cancel.
UPDATE tasks
SET lease_until = %(lease_until)s, updated_at = %(now)s
WHERE status = 'running' AND claim_token = ANY(%(tokens)s)
RETURNING id, claim_token, cancel_requested

-- The four outcomes below (complete, fail, release, finish_cancelled) each take a *batch*:
-- arrays, one element per task, unnested into rows `i`. The store coalesces the outcomes that
-- arrive together (shared/store/postgres/batch.py) into one statement: one round trip, one
-- transaction, one commit for all of them, as SQLite's writer thread group-commits. Each row
-- is fenced on its own (id, status 'running', claim token); the attempt row is finished, in
-- the same statement, only for the tasks that passed the fence. A batch of one is the
-- single-task case. The result names the (task, token) pairs that changed.

-- name: complete
-- running -> succeeded
WITH done AS (
    UPDATE tasks
    SET status = 'succeeded', result = i.result, last_error = NULL,
        claim_token = NULL, lease_until = NULL, finished_at = i.now, updated_at = i.now
    FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(attempts)s::int[],
                %(nows)s::float8[], %(results)s::text[])
         AS i(id, token, attempt, now, result)
    WHERE tasks.id = i.id AND tasks.status = 'running' AND tasks.claim_token = i.token
    RETURNING tasks.id, i.token, i.attempt, i.now, i.result
), attempt_rows AS (
    UPDATE task_attempts
    SET finished_at = done.now, outcome = 'succeeded', error = NULL, output = done.result
    FROM done
    WHERE task_attempts.task_id = done.id AND task_attempts.attempt = done.attempt
      AND task_attempts.finished_at IS NULL
)
SELECT id, token FROM done

-- name: fail
-- running -> queued (attempts left, retried at retry_at) or failed (none left, or retry_at
-- NULL: a failure that retrying cannot mend). `outcome` is the attempt's: failed or timeout.
WITH failed AS (
    UPDATE tasks
    SET status = CASE WHEN i.retry_at IS NOT NULL AND tasks.attempts < tasks.max_attempts
                      THEN 'queued' ELSE 'failed' END,
        run_at = CASE WHEN i.retry_at IS NOT NULL AND tasks.attempts < tasks.max_attempts
                      THEN i.retry_at ELSE tasks.run_at END,
        finished_at = CASE WHEN i.retry_at IS NOT NULL AND tasks.attempts < tasks.max_attempts
                           THEN NULL ELSE i.now END,
        result = i.result, last_error = i.error,
        claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = i.now
    FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(attempts)s::int[],
                %(nows)s::float8[], %(results)s::text[], %(errors)s::text[],
                %(retry_ats)s::float8[], %(outcomes)s::text[])
         AS i(id, token, attempt, now, result, error, retry_at, outcome)
    WHERE tasks.id = i.id AND tasks.status = 'running' AND tasks.claim_token = i.token
    RETURNING tasks.id, i.token, tasks.status, i.attempt, i.now, i.result, i.error, i.outcome
), attempt_rows AS (
    UPDATE task_attempts
    SET finished_at = failed.now, outcome = failed.outcome, error = failed.error,
        output = failed.result
    FROM failed
    WHERE task_attempts.task_id = failed.id AND task_attempts.attempt = failed.attempt
      AND task_attempts.finished_at IS NULL
)
SELECT id, token, status FROM failed

-- name: release
-- running -> queued without spending an attempt: the worker is shutting down. The task is
-- runnable at once, so the statement also NOTIFYs (once per transaction, however many rows).
WITH released AS (
    UPDATE tasks
    SET status = 'queued', attempts = tasks.attempts - 1, run_at = i.now,
        claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = i.now
    FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(attempts)s::int[],
                %(nows)s::float8[], %(errors)s::text[])
         AS i(id, token, attempt, now, error)
    WHERE tasks.id = i.id AND tasks.status = 'running' AND tasks.claim_token = i.token
    RETURNING tasks.id, i.token, i.attempt, i.now, i.error
), attempt_rows AS (
    UPDATE task_attempts
    SET finished_at = released.now, outcome = 'released', error = released.error,
        output = NULL
    FROM released
    WHERE task_attempts.task_id = released.id AND task_attempts.attempt = released.attempt
      AND task_attempts.finished_at IS NULL
)
SELECT id, token, pg_notify('localflow', '') FROM released

-- name: unclaim
-- running -> queued as if never claimed: claimed ahead by a worker that never started it;
-- or, with %(cancelled)s (a person cancelled it while it waited), -> cancelled as a queued
-- task is (cancel_queued): it never ran, so no attempt is spent.
-- Its attempt row goes (it never ran); runnable again at once, so it NOTIFYs like release.
WITH unclaimed AS (
    UPDATE tasks
    SET status = CASE WHEN %(cancelled)s THEN 'cancelled' ELSE 'queued' END,
        attempts = tasks.attempts - 1,
        started_at = CASE WHEN tasks.attempts = 1 THEN NULL ELSE tasks.started_at END,
        finished_at = CASE WHEN %(cancelled)s THEN i.now ELSE tasks.finished_at END,
        last_error = CASE WHEN %(cancelled)s THEN 'cancelled' ELSE tasks.last_error END,
        claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = i.now
    FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(attempts)s::int[], %(nows)s::float8[])
         AS i(id, token, attempt, now)
    WHERE tasks.id = i.id AND tasks.status = 'running' AND tasks.claim_token = i.token
    RETURNING tasks.id, i.token, i.attempt
), attempt_rows AS (
    DELETE FROM task_attempts
    USING unclaimed
    WHERE task_attempts.task_id = unclaimed.id AND task_attempts.attempt = unclaimed.attempt
)
SELECT id, token, pg_notify('localflow', '') FROM unclaimed

-- name: finish_cancelled
-- running -> cancelled, after the worker stopped the task a person cancelled
WITH cancelled AS (
    UPDATE tasks
    SET status = 'cancelled', last_error = i.error, result = i.result,
        claim_token = NULL, lease_until = NULL, finished_at = i.now, updated_at = i.now
    FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(attempts)s::int[],
                %(nows)s::float8[], %(results)s::text[], %(errors)s::text[])
         AS i(id, token, attempt, now, result, error)
    WHERE tasks.id = i.id AND tasks.status = 'running' AND tasks.claim_token = i.token
    RETURNING tasks.id, i.token, i.attempt, i.now, i.result, i.error
), attempt_rows AS (
    UPDATE task_attempts
    SET finished_at = cancelled.now, outcome = 'cancelled', error = cancelled.error,
        output = cancelled.result
    FROM cancelled
    WHERE task_attempts.task_id = cancelled.id AND task_attempts.attempt = cancelled.attempt
      AND task_attempts.finished_at IS NULL
)
SELECT id, token FROM cancelled

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
-- longer running and leaves them be. Each rescued task's open attempt row is finished as
-- lost in the same statement.
WITH rescued AS (
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
), attempt_rows AS (
    UPDATE task_attempts
    SET finished_at = %(now)s, outcome = 'lost',
        error = 'lease expired: the worker stopped heartbeating (crashed or killed)'
    FROM rescued
    WHERE task_attempts.task_id = rescued.id AND task_attempts.attempt = rescued.attempts
      AND task_attempts.finished_at IS NULL
)
SELECT id, pg_notify('localflow', '') FROM rescued

-- name: next_run_at
-- The earliest run_at a worker could claim: closed (paused, full) and other workers' queues
-- left out, so due tasks it may not take never keep it from idling.
SELECT min(run_at) FROM tasks
WHERE status = 'queued' AND queue <> ALL(%(closed)s::text[])
  AND (%(only)s::text[] IS NULL OR queue = ANY(%(only)s::text[]))

-- name: list_attempts
SELECT * FROM task_attempts WHERE task_id = %(id)s ORDER BY id

-- name: list_all
SELECT * FROM tasks WHERE id < %(cursor)s ORDER BY id DESC LIMIT %(limit)s

-- name: list_by_status
-- The row comparison keeps the planner on tasks_status_id: with `status = x AND id < c ORDER BY
-- id DESC` it walks the primary key backwards and filters, which reads every newer task of
-- other states first (300,000 queued ones before the first failed: 230 ms, against 0.4 ms).
SELECT * FROM tasks
WHERE status = %(status)s AND (status, id) < (%(status)s, %(cursor)s)
ORDER BY status DESC, id DESC
LIMIT %(limit)s

-- name: list_by_type
-- As list_by_status, on tasks_type_id.
SELECT * FROM tasks
WHERE type = %(type)s AND (type, id) < (%(type)s, %(cursor)s)
ORDER BY type DESC, id DESC
LIMIT %(limit)s

-- name: list_by_status_and_type
SELECT * FROM tasks
WHERE status = %(status)s AND type = %(type)s AND (status, id) < (%(status)s, %(cursor)s)
ORDER BY status DESC, id DESC
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

-- name: statuses
SELECT id, status FROM tasks WHERE id = ANY(%(ids)s)

-- name: events_after
-- The event log (migrations/postgres/004), in (xid, id) order, only below the oldest open
-- transaction: a transaction that began before and commits after a reader passed could still
-- add events, and they would land behind its cursor.
SELECT * FROM task_events
WHERE (xid, id) > (%(xid)s, %(id)s)
  AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY xid, id
LIMIT %(limit)s

-- name: events_horizon
SELECT xid, id FROM task_events_horizon

-- name: events_head
SELECT xid, id FROM task_events
WHERE xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY xid DESC, id DESC
LIMIT 1

-- name: events_newest
-- The newest event committed, readable or not (Store.events_newest): task_events_order's end.
SELECT xid, id FROM task_events ORDER BY xid DESC, id DESC LIMIT 1

-- name: events_since
-- Where a reader starts for a time (Store.events_since): the earliest kept event stamped at or
-- after the time (a seek of task_events_time), the oldest stamp kept (its first entry) and the
-- horizon. The caller never starts past events_head (events_after reads below the oldest open
-- transaction only).
SELECT first.xid, first.id, (SELECT min(time) FROM task_events) AS oldest,
       h.xid AS horizon_xid, h.id AS horizon_id
FROM task_events_horizon h
LEFT JOIN LATERAL (
    SELECT xid, id FROM task_events WHERE time >= %(since)s ORDER BY time, xid, id LIMIT 1
) first ON true

-- name: events_prune
DELETE FROM task_events
WHERE time < %(before)s AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
RETURNING xid, id

-- name: events_raise_horizon
UPDATE task_events_horizon SET xid = %(xid)s, id = %(id)s WHERE (xid, id) < (%(xid)s, %(id)s)

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
-- queued -> running for the ids the caller picked (the per-queue path), with their attempt
-- rows in the same statement, as `claim`.
WITH claimed AS (
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
),
attempt_rows AS (
    INSERT INTO task_attempts (task_id, attempt, worker_id, started_at)
    SELECT id, attempts, %(worker_id)s, %(now)s FROM claimed
)
SELECT * FROM claimed

-- name: take_lease
INSERT INTO leases (name, holder, until) VALUES (%(name)s, %(holder)s, %(until)s)
ON CONFLICT (name) DO UPDATE SET holder = %(holder)s, until = %(until)s
WHERE leases.until < %(now)s OR leases.holder = %(holder)s

-- name: prune_batch
-- As on SQLite. SKIP LOCKED: a row a worker is updating right now waits for the next pass.
-- MATERIALIZED, as in the claim: an IN (subquery ... LIMIT ... SKIP LOCKED) the planner may
-- rescan can pick other rows on each scan and delete more than :limit (the contract test
-- caught 5 for a limit of 3).
WITH doomed AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE finished_at < %(before)s AND status = %(status)s
      AND id NOT IN (SELECT last_task_id FROM schedules WHERE last_task_id IS NOT NULL)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM tasks WHERE id IN (SELECT id FROM doomed)

-- name: live_output_save
-- As on SQLite (migrations/postgres/008): fenced on the claim.
INSERT INTO task_live_output (task_id, claim_token, attempt, stdout, stderr, stdout_bytes,
                              stderr_bytes, flushes, updated_at)
SELECT id, claim_token, %(attempt)s, %(stdout)s, %(stderr)s, %(stdout_bytes)s,
       %(stderr_bytes)s, 1, %(now)s
FROM tasks WHERE id = %(task_id)s AND status = 'running' AND claim_token = %(token)s
ON CONFLICT (task_id) DO UPDATE SET
    flushes = CASE WHEN task_live_output.claim_token = excluded.claim_token
                   THEN task_live_output.flushes + 1 ELSE 1 END,
    claim_token = excluded.claim_token, attempt = excluded.attempt,
    stdout = excluded.stdout, stderr = excluded.stderr,
    stdout_bytes = excluded.stdout_bytes, stderr_bytes = excluded.stderr_bytes,
    updated_at = excluded.updated_at

-- name: live_output_clear
DELETE FROM task_live_output WHERE task_id = %(task_id)s AND claim_token = %(token)s

-- name: live_outputs
SELECT o.* FROM task_live_output o JOIN tasks t ON t.id = o.task_id
WHERE o.task_id = ANY(%(ids)s) AND t.status = 'running' AND t.claim_token = o.claim_token
