-- Queries of the task queue. Every transition out of a state names that state in its WHERE,
-- and every transition out of 'running' also names the claim token: a worker whose lease
-- expired (and whose task another worker re-claimed) changes nothing. See docs/state_machine.md.

-- name: insert_task
INSERT INTO tasks (id, type, payload, status, priority, run_at, max_attempts, timeout,
                   idempotency_key, request_hash, created_at, updated_at, queue, callback_url)
VALUES (:id, :type, :payload, 'queued', :priority, :run_at, :max_attempts, :timeout,
        :idempotency_key, :request_hash, :now, :now, :queue, :callback_url)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING

-- name: insert_new_tasks
-- Tasks without idempotency keys: every row is new, so no conflict clause. The rows come as
-- one JSON array of [id, type, payload text, priority, run_at, max_attempts, timeout, now,
-- queue, callback_url] arrays, so any number of them (every keyless submission of a write
-- transaction) is one statement and one sqlite3_step: the writer thread lets go of the GIL
-- once for all of them, where executemany takes it back after every row and waits, each
-- time, for the event loop to give it up (bench/README.md, "Session 4: single submissions").
INSERT INTO tasks (id, type, payload, status, priority, run_at, max_attempts, timeout,
                   created_at, updated_at, queue, callback_url)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       'queued', json_extract(value, '$[3]'), json_extract(value, '$[4]'),
       json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),
       json_extract(value, '$[7]'), json_extract(value, '$[8]'), json_extract(value, '$[9]')
FROM json_each(?)

-- name: get_task
SELECT * FROM tasks WHERE id = ?

-- name: present_ids
-- Which of these ids (a JSON array) are tasks.
SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?))

-- name: get_tasks
-- Any number of ids in one read (a JSON array: no limit on bound variables).
SELECT * FROM tasks WHERE id IN (SELECT value FROM json_each(?))

-- name: get_task_by_key
SELECT * FROM tasks WHERE idempotency_key = ?

-- name: claim
-- queued -> running in one statement, for the claims whose answer is needed on the writer
-- thread: the early start (its handlers start before COMMIT) and the rounds under a queue
-- limit (each counts down the rooms). There claim_pick's JSON arrays only cost: the three
-- statements took 13 % more writer CPU than this one for a claim of 1 task, 4-15 % for 8,
-- 0-7 % for 64 (bench/README.md, "Session 6: one claim path"). So claim_pick's selection and
-- claim_picked's SET stand here again, on purpose: a change to what may be claimed, or to
-- what a claim sets, belongs in claim_pick, claim_picked, here and in claim_ids.
UPDATE tasks
SET status = 'running',
    attempts = attempts + 1,
    claim_token = lower(hex(randomblob(8))),
    lease_until = :lease_until,
    worker_id = :worker_id,
    started_at = coalesce(started_at, :now),
    updated_at = :now
WHERE id IN (
    SELECT id FROM tasks INDEXED BY tasks_runnable
    WHERE status = 'queued' AND run_at <= :now
      AND queue NOT IN (SELECT value FROM json_each(:closed))
      AND (:only IS NULL OR queue IN (SELECT value FROM json_each(:only)))
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)
-- Only what a Claimed holds (shared/store/sqlite/store.py, _claimed: in this order).
RETURNING id, type, payload, attempts, max_attempts, timeout, priority, run_at, claim_token,
          queue

-- name: claim_pick
-- (json_extract, not ->>: that operator needs SQLite 3.38, newer than some systems' sqlite3.)
-- The usual claim (SQLiteStore.claim: no queue limit, no queue probed, no early start) is
-- three statements that each run whole in one call: this pick, claim_picked and
-- insert_picked_attempts. Safe apart: the transaction holds SQLite's one write lock from
-- BEGIN IMMEDIATE on, so no other claimer (in any process) can take a task in between.
-- The pick answers one row of two JSON arrays:
-- `claimed`, the tasks as Claimed objects (attempt as after the claim, a new token each),
-- and `moves`, [rowid, token, id, attempt] of each, which the other two statements read.
-- Why arrays: sqlite3 builds a Python row and takes the GIL back for every row it steps
-- through, and msgspec decodes `claimed` straight into Claimed (bench/README.md, "Session
-- 4: 64 slots"). Why two: the other statements then parse four short values a row, not the
-- task's payload (bench/README.md, "Session 6: one claim path").
-- The token is drawn once a row, in the subquery (which a LIMIT under an aggregate keeps
-- from being flattened into the outer query), so both arrays carry the same one.
-- (REAL columns as 17-digit numbers: JSON would print 15 digits, not always the same float.)
SELECT json_group_array(json_object(
           'id', id, 'type', type, 'payload', json(payload), 'attempt', attempts + 1,
           'max_attempts', max_attempts, 'timeout', json(printf('%!.17g', timeout)),
           'priority', priority, 'run_at', json(printf('%!.17g', run_at)),
           'token', token, 'queue', queue)) AS claimed,
       json_group_array(json_array(rowid, token, id, attempts + 1)) AS moves
FROM (
    -- Named, or the planner may pick tasks_status_id and sort every queued row per claim.
    SELECT rowid, *, lower(hex(randomblob(8))) AS token FROM tasks INDEXED BY tasks_runnable
    WHERE status = 'queued' AND run_at <= :now
      -- Queues (docs/queues.md): not the paused or full ones (:closed, a JSON array), and
      -- only the worker's own if it serves some (:only, NULL for all). Limits are kept by
      -- the caller's :limit (shared/store/claiming.py).
      AND queue NOT IN (SELECT value FROM json_each(:closed))
      AND (:only IS NULL OR queue IN (SELECT value FROM json_each(:only)))
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)

-- name: claim_picked
-- queued -> running for what claim_pick answered (:moves), each with its own token.
UPDATE tasks
SET status = 'running',
    attempts = attempts + 1,
    claim_token = json_extract(m.value, '$[1]'),
    lease_until = :lease_until,
    worker_id = :worker_id,
    started_at = coalesce(started_at, :now),
    updated_at = :now
FROM json_each(:moves) AS m
-- (+: found by rowid, not through the status index)
WHERE tasks.rowid = json_extract(m.value, '$[0]') AND +tasks.status = 'queued'

-- name: insert_picked_attempts
INSERT INTO task_attempts (task_id, attempt, worker_id, started_at)
SELECT json_extract(m.value, '$[2]'), json_extract(m.value, '$[3]'), :worker_id, :now
FROM json_each(:moves) AS m

-- name: insert_attempt
INSERT INTO task_attempts (task_id, attempt, worker_id, started_at)
VALUES (?, ?, ?, ?)

-- name: extend_leases
-- Heartbeat for every task a worker holds; answers which it still holds and which a
-- person asked to cancel.
UPDATE tasks
SET lease_until = :lease_until, updated_at = :now
WHERE status = 'running'
  AND claim_token IN (SELECT value FROM json_each(:tokens))
RETURNING id, claim_token, cancel_requested

-- name: complete
-- running -> succeeded
UPDATE tasks
SET status = 'succeeded', result = :result, last_error = NULL,
    claim_token = NULL, lease_until = NULL, finished_at = :now, updated_at = :now
WHERE id = :id AND status = 'running' AND claim_token = :token

-- Completions that arrive together are written as one batch (SQLiteStore._complete_many):
-- each statement has a fixed cost per execution (its triggers, its cursors on every index of
-- tasks), so a batch through a per-connection temporary table costs about a quarter of the
-- writer time of one statement pair per task (bench/README.md, "Worker end to end").

-- name: finishing_table
CREATE TEMP TABLE IF NOT EXISTS finishing (
    id      TEXT PRIMARY KEY,
    token   TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    now     REAL NOT NULL,
    result  TEXT
) WITHOUT ROWID

-- name: finishing_add
INSERT INTO temp.finishing (id, token, attempt, now, result) VALUES (?, ?, ?, ?, ?)

-- name: finishing_fill
-- temp.finishing from one JSON array of [id, token, attempt, result] sharing one :now: one
-- call instead of a step (and a GIL retake) per row (claim_pick says why).
INSERT INTO temp.finishing (id, token, attempt, now, result)
SELECT json_extract(f.value, '$[0]'), json_extract(f.value, '$[1]'),
       json_extract(f.value, '$[2]'), :now, json_extract(f.value, '$[3]')
FROM json_each(:items) AS f

-- name: complete_finishing
-- running -> succeeded for each row of temp.finishing, fenced like `complete`. No RETURNING:
-- in the usual case every task is still ours and the row count says so (each row answered
-- would be a step and a GIL retake: claim_pick). Short of that, the store takes it back,
-- runs finishing_drop_stale and runs it again, so what it completes, what
-- finish_attempts_finishing finishes and what the store answers are the same rows.
-- (IN and correlated subqueries, not UPDATE ... FROM: with FROM the planner walks every
-- running task.)
UPDATE tasks
SET status = 'succeeded', last_error = NULL, claim_token = NULL, lease_until = NULL,
    (result, finished_at, updated_at) =
        (SELECT f.result, f.now, f.now FROM temp.finishing AS f WHERE f.id = tasks.id)
WHERE id IN (SELECT id FROM temp.finishing) AND status = 'running'
  AND claim_token = (SELECT f.token FROM temp.finishing AS f WHERE f.id = tasks.id)

-- name: finishing_drop_stale
-- Out of temp.finishing: the rows whose task is no longer running under the row's token (its
-- lease was lost, a person cancelled it, it was unclaimed and claimed again). Neither the task
-- nor the attempt row of that number is ours to finish (after an unclaim the same number can
-- be the new claim's open attempt). Answers their ids.
DELETE FROM temp.finishing
WHERE NOT EXISTS (SELECT 1 FROM tasks
                  WHERE tasks.id = finishing.id AND tasks.status = 'running'
                    AND tasks.claim_token = finishing.token)
RETURNING id

-- name: finish_attempts_finishing
UPDATE task_attempts
SET outcome = 'succeeded', error = NULL,
    (finished_at, output) =
        (SELECT f.now, f.result FROM temp.finishing AS f WHERE f.id = task_attempts.task_id)
WHERE (task_id, attempt) IN (SELECT id, attempt FROM temp.finishing)
  AND finished_at IS NULL

-- name: finishing_clear
DELETE FROM temp.finishing

-- name: fail
-- running -> queued (attempts left, retried at :retry_at) or failed (none left, or :retry
-- false: a failure that retrying cannot mend)
UPDATE tasks
SET status = CASE WHEN :retry AND attempts < max_attempts THEN 'queued' ELSE 'failed' END,
    run_at = CASE WHEN :retry AND attempts < max_attempts THEN :retry_at ELSE run_at END,
    finished_at = CASE WHEN :retry AND attempts < max_attempts THEN NULL ELSE :now END,
    result = :result, last_error = :error,
    claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = :now
WHERE id = :id AND status = 'running' AND claim_token = :token
RETURNING status

-- name: release
-- running -> queued without spending an attempt: the worker is shutting down.
UPDATE tasks
SET status = 'queued', attempts = attempts - 1, run_at = :now,
    claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = :now
WHERE id = :id AND status = 'running' AND claim_token = :token

-- name: unclaim
-- running -> queued as if never claimed: claimed ahead by a worker that never started it;
-- or, with :cancelled = 1 (a person cancelled it while it waited), -> cancelled as a queued
-- task is (cancel_queued): it never ran, so no attempt is spent.
-- (SET reads the row as it was: attempts = 1 means this claim was its first.)
UPDATE tasks
SET status = CASE WHEN :cancelled THEN 'cancelled' ELSE 'queued' END,
    attempts = attempts - 1,
    started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END,
    finished_at = CASE WHEN :cancelled THEN :now ELSE finished_at END,
    last_error = CASE WHEN :cancelled THEN 'cancelled' ELSE last_error END,
    claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = :now
WHERE id = :id AND status = 'running' AND claim_token = :token

-- name: delete_attempt
DELETE FROM task_attempts WHERE task_id = :id AND attempt = :attempt

-- name: finish_cancelled
-- running -> cancelled, after the worker stopped the task a person cancelled
UPDATE tasks
SET status = 'cancelled', last_error = :error, result = :result,
    claim_token = NULL, lease_until = NULL, finished_at = :now, updated_at = :now
WHERE id = :id AND status = 'running' AND claim_token = :token

-- name: finish_attempt
UPDATE task_attempts
SET finished_at = :now, outcome = :outcome, error = :error, output = :output
WHERE task_id = :id AND attempt = :attempt AND finished_at IS NULL

-- name: cancel_queued
-- queued -> cancelled: it will never run
UPDATE tasks
SET status = 'cancelled', finished_at = :now, updated_at = :now, last_error = 'cancelled'
WHERE id = :id AND status = 'queued'

-- name: request_cancel
-- a running task is stopped by the worker that holds it, which then marks it cancelled
UPDATE tasks
SET cancel_requested = 1, updated_at = :now
WHERE id = :id AND status = 'running'

-- name: rescue_expired
-- running -> queued (attempts left) or failed: the worker holding it stopped heartbeating.
-- A task someone asked to cancel is cancelled instead of retried.
UPDATE tasks
SET status = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN attempts < max_attempts THEN 'queued'
        ELSE 'failed' END,
    finished_at = CASE
        WHEN cancel_requested OR attempts >= max_attempts THEN :now ELSE NULL END,
    run_at = :now,
    last_error = 'lease expired: the worker running attempt ' || attempts
                 || ' stopped heartbeating (crashed or killed)',
    claim_token = NULL, lease_until = NULL, worker_id = NULL, updated_at = :now
WHERE status = 'running' AND lease_until < :now
RETURNING id, attempts, status

-- name: lose_attempt
UPDATE task_attempts
SET finished_at = :now, outcome = 'lost',
    error = 'lease expired: the worker stopped heartbeating (crashed or killed)'
WHERE task_id = :id AND attempt = :attempt AND finished_at IS NULL

-- name: next_run_at
-- The earliest run_at a worker could claim: closed (paused, full) and other workers' queues
-- left out, so due tasks it may not take never keep it from idling.
SELECT min(run_at) FROM tasks INDEXED BY tasks_runnable
WHERE status = 'queued'
  AND queue NOT IN (SELECT value FROM json_each(:closed))
  AND (:only IS NULL OR queue IN (SELECT value FROM json_each(:only)))

-- name: list_attempts
SELECT * FROM task_attempts WHERE task_id = ? ORDER BY id

-- name: list_all
SELECT * FROM tasks WHERE id < :cursor ORDER BY id DESC LIMIT :limit

-- name: list_by_status
SELECT * FROM tasks WHERE status = :status AND id < :cursor ORDER BY id DESC LIMIT :limit

-- name: list_by_type
SELECT * FROM tasks WHERE type = :type AND id < :cursor ORDER BY id DESC LIMIT :limit

-- name: list_by_status_and_type
SELECT * FROM tasks INDEXED BY tasks_status_id
WHERE status = :status AND type = :type AND id < :cursor ORDER BY id DESC LIMIT :limit

-- name: upsert_worker
INSERT INTO workers (id, hostname, pid, slots, started_at, last_seen)
VALUES (:id, :hostname, :pid, :slots, :now, :now)
ON CONFLICT (id) DO UPDATE SET last_seen = :now, stopped_at = NULL

-- name: stop_worker
UPDATE workers SET stopped_at = :now, last_seen = :now WHERE id = :id

-- name: cancel_requests_for_worker
SELECT id FROM tasks INDEXED BY tasks_leases
WHERE status = 'running' AND worker_id = ? AND cancel_requested = 1

-- name: retry_task
-- failed/cancelled -> queued, runnable now, with :extra more attempts. The attempt count keeps
-- counting so the history in task_attempts stays in order.
UPDATE tasks
SET status = 'queued', run_at = :now, max_attempts = attempts + :extra,
    cancel_requested = 0, finished_at = NULL, updated_at = :now
WHERE id = :id AND status IN ('failed', 'cancelled')

-- name: delete_task
-- any state but running (its worker still holds it); attempts go with it (ON DELETE CASCADE)
DELETE FROM tasks WHERE id = :id AND status != 'running'

-- name: statuses
-- Any number of ids in one read (a JSON array: no limit on bound variables).
SELECT id, status FROM tasks WHERE id IN (SELECT value FROM json_each(?))

-- name: events_after
-- The event log (migrations/sqlite/004): id order is commit order (one writer at a time).
SELECT * FROM task_events WHERE id > :id ORDER BY id LIMIT :limit

-- name: events_horizon
SELECT id FROM task_events_horizon

-- name: events_head
SELECT coalesce((SELECT max(id) FROM task_events), (SELECT id FROM task_events_horizon)) AS id

-- name: events_since
-- Where a reader starts for a time (Store.events_since), in one read: the earliest kept event
-- stamped at or after :since (a seek of task_events_time, whose entries end with the id), the
-- oldest stamp kept (the index's first entry), the horizon and the head.
SELECT (SELECT id FROM task_events WHERE time >= :since ORDER BY time, id LIMIT 1) AS first,
       (SELECT min(time) FROM task_events) AS oldest,
       (SELECT id FROM task_events_horizon) AS horizon,
       coalesce((SELECT max(id) FROM task_events), (SELECT id FROM task_events_horizon)) AS head

-- name: events_prune_until
SELECT max(id) AS id FROM task_events WHERE time < :before

-- name: events_prune
DELETE FROM task_events WHERE id <= :id

-- name: events_raise_horizon
UPDATE task_events_horizon SET id = max(id, :id)

-- name: list_by_queue
-- ?queue=, with or without status and type: the queue's tasks newest first.
SELECT * FROM tasks INDEXED BY tasks_queue_id
WHERE queue = :queue AND (:status IS NULL OR status = :status)
  AND (:type IS NULL OR type = :type) AND id < :cursor
ORDER BY queue DESC, id DESC LIMIT :limit

-- name: queue_gates
-- The settings that close a queue or limit it (a handful of rows).
SELECT name, concurrency, paused FROM queues WHERE paused = 1 OR concurrency IS NOT NULL

-- name: running_in_queues
SELECT queue, count(*) AS n FROM tasks INDEXED BY tasks_running_queue
WHERE status = 'running' AND queue IN (SELECT value FROM json_each(:names))
GROUP BY queue

-- name: all_queue_settings
SELECT name, concurrency, paused FROM queues

-- name: queue_settings
SELECT name, concurrency, paused FROM queues WHERE name = ?

-- name: set_queue
-- Creates the settings row on first use; a field not given (:set_* false) keeps its value.
INSERT INTO queues (name, concurrency, paused, updated_at)
VALUES (:name, :concurrency, coalesce(:paused, 0), :now)
ON CONFLICT (name) DO UPDATE
SET concurrency = CASE WHEN :set_concurrency THEN :concurrency ELSE concurrency END,
    paused = coalesce(:paused, paused),
    updated_at = :now

-- name: queues_with_work
-- The queues that have queued tasks: a loose index scan (one index probe per queue, not a
-- walk over every queued task).
WITH RECURSIVE q(name) AS (
    SELECT min(queue) FROM tasks INDEXED BY tasks_queue_runnable WHERE status = 'queued'
    UNION ALL
    SELECT (SELECT min(queue) FROM tasks INDEXED BY tasks_queue_runnable
            WHERE status = 'queued' AND queue > q.name)
    FROM q WHERE q.name IS NOT NULL
)
SELECT name FROM q WHERE name IS NOT NULL

-- name: claim_candidates_in_queue
-- The most urgent runnable tasks of one queue (shared/store/claiming.py merges the queues').
SELECT id, priority, run_at FROM tasks INDEXED BY tasks_queue_runnable
WHERE status = 'queued' AND queue = :queue AND run_at <= :now
ORDER BY priority DESC, run_at, id
LIMIT :limit

-- name: claim_ids
-- queued -> running for the tasks the caller picked (the claim's per-queue path); as `claim`,
-- and for the same reason its own statement: the JSON route (a pick of these ids answering
-- claim_pick's arrays, then claim_picked) took 14-19 % more writer CPU, and one `claim` with
-- an arm for :ids 0-7 % more on both paths (bench/README.md, "Session 6: one claim path").
UPDATE tasks
SET status = 'running',
    attempts = attempts + 1,
    claim_token = lower(hex(randomblob(8))),
    lease_until = :lease_until,
    worker_id = :worker_id,
    started_at = coalesce(started_at, :now),
    updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'queued'
-- Only what a Claimed holds (shared/store/sqlite/store.py, _claimed: in this order).
RETURNING id, type, payload, attempts, max_attempts, timeout, priority, run_at, claim_token,
          queue

-- name: take_lease
-- Take the named lease if it is free, expired, or already ours; rowcount 1 if we hold it.
INSERT INTO leases (name, holder, until) VALUES (:name, :holder, :until)
ON CONFLICT (name) DO UPDATE SET holder = :holder, until = :until
WHERE leases.until < :now OR leases.holder = :holder

-- name: prune_batch
-- Up to :limit finished tasks of one status that finished before :before (oldest first, over
-- tasks_finished); attempts go with them (ON DELETE CASCADE). A schedule's last task is kept,
-- so the schedule still shows how its last run ended.
DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks INDEXED BY tasks_finished
    WHERE finished_at < :before AND status = :status
      AND id NOT IN (SELECT last_task_id FROM schedules WHERE last_task_id IS NOT NULL)
    ORDER BY finished_at
    LIMIT :limit
)

-- name: live_output_save
-- A running attempt's recent output (migrations/sqlite/008), fenced on its claim: an attempt
-- that ended meanwhile stores nothing. `WHERE` is required before ON CONFLICT after a SELECT.
INSERT INTO task_live_output (task_id, claim_token, attempt, stdout, stderr, stdout_bytes,
                              stderr_bytes, flushes, updated_at)
SELECT id, claim_token, :attempt, :stdout, :stderr, :stdout_bytes, :stderr_bytes, 1, :now
FROM tasks WHERE id = :task_id AND status = 'running' AND claim_token = :token
ON CONFLICT (task_id) DO UPDATE SET
    flushes = CASE WHEN task_live_output.claim_token = excluded.claim_token
                   THEN task_live_output.flushes + 1 ELSE 1 END,
    claim_token = excluded.claim_token, attempt = excluded.attempt,
    stdout = excluded.stdout, stderr = excluded.stderr,
    stdout_bytes = excluded.stdout_bytes, stderr_bytes = excluded.stderr_bytes,
    updated_at = excluded.updated_at

-- name: live_output_clear
DELETE FROM task_live_output WHERE task_id = :task_id AND claim_token = :token

-- name: live_outputs
-- Only while the task runs the claim the output belongs to: a row left by a worker that died
-- (nobody cleared it) is never shown, and the next claim replaces it.
SELECT o.* FROM task_live_output o JOIN tasks t ON t.id = o.task_id
WHERE o.task_id IN (SELECT value FROM json_each(?))
  AND t.status = 'running' AND t.claim_token = o.claim_token
