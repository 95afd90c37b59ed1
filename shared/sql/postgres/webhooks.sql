-- Webhook deliveries on PostgreSQL; names and meaning match shared/sql/sqlite/webhooks.sql.
-- A delivery row is written by the trigger tasks_finished_webhook
-- (migrations/postgres/007_webhooks.sql), never here.

-- name: claim_deliveries
-- SKIP LOCKED: deliverers on many hosts pass over rows another one is claiming right now.
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_try_at <= %(now)s
      AND (lease_until IS NULL OR lease_until < %(now)s)
    ORDER BY next_try_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET lease_until = %(lease_until)s, lease_token = replace(gen_random_uuid()::text, '-', '')
FROM due WHERE d.id = due.id
RETURNING d.id, d.task_id, d.url, d.task_status, d.tries, d.lease_token, d.next_try_at

-- name: record_try
UPDATE webhook_deliveries
SET tries = tries + 1,
    history = (history::jsonb || jsonb_build_array(%(attempt)s::jsonb))::text,
    state = CASE WHEN %(delivered)s THEN 'delivered'
                 WHEN %(next_try_at)s::float8 IS NULL THEN 'failed' ELSE 'pending' END,
    next_try_at = CASE WHEN %(delivered)s THEN NULL ELSE %(next_try_at)s::float8 END,
    finished_at = CASE WHEN %(delivered)s OR %(next_try_at)s::float8 IS NULL
                       THEN %(now)s::float8 ELSE NULL END,
    lease_until = NULL, lease_token = NULL
WHERE id = %(id)s AND state = 'pending' AND lease_token = %(token)s

-- name: deliveries_of_task
SELECT * FROM webhook_deliveries WHERE task_id = %(id)s ORDER BY created_at, id

-- name: next_delivery_at
SELECT min(next_try_at) AS at FROM webhook_deliveries WHERE state = 'pending'
