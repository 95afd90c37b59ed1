-- Webhook deliveries (docs/webhooks.md; shared/webhooks.py, worker/webhooks.py). A delivery
-- row is written by the trigger tasks_finished_webhook (migrations/sqlite/007_webhooks.sql),
-- never here. A deliverer claims due ones with a lease; every write back names the lease's
-- token, so a deliverer whose lease ran out (and whose delivery another one took) changes
-- nothing.

-- name: claim_deliveries
UPDATE webhook_deliveries
SET lease_until = :lease_until, lease_token = lower(hex(randomblob(16)))
WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_try_at <= :now
      AND (lease_until IS NULL OR lease_until < :now)
    ORDER BY next_try_at, id
    LIMIT :limit
)
RETURNING id, task_id, url, task_status, tries, lease_token, next_try_at

-- name: record_try
UPDATE webhook_deliveries
SET tries = tries + 1,
    history = json_insert(history, '$[#]', json(:attempt)),
    state = CASE WHEN :delivered THEN 'delivered'
                 WHEN :next_try_at IS NULL THEN 'failed' ELSE 'pending' END,
    next_try_at = CASE WHEN :delivered THEN NULL ELSE :next_try_at END,
    finished_at = CASE WHEN :delivered OR :next_try_at IS NULL THEN :now ELSE NULL END,
    lease_until = NULL, lease_token = NULL
WHERE id = :id AND state = 'pending' AND lease_token = :token

-- name: deliveries_of_task
SELECT * FROM webhook_deliveries WHERE task_id = ? ORDER BY created_at, id

-- name: next_delivery_at
SELECT min(next_try_at) AS at FROM webhook_deliveries WHERE state = 'pending'
