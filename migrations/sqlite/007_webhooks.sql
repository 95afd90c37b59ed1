-- 007: webhooks (docs/webhooks.md). A task (and a schedule, for the tasks it makes) may carry
-- a callback URL. When such a task reaches a final state, a trigger records a delivery in the
-- same transaction, so it is durable before anyone tries it; workers then POST it, signed,
-- until a 2xx or the last try. Every try is kept on the delivery row (`history`, a JSON array).

ALTER TABLE tasks ADD COLUMN callback_url TEXT;
ALTER TABLE schedules ADD COLUMN callback_url TEXT;

CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY,
    task_id      TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    url          TEXT NOT NULL,
    task_status  TEXT NOT NULL,                     -- the final state it reports
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'delivered', 'failed')),
    tries        INTEGER NOT NULL DEFAULT 0,
    history      TEXT NOT NULL DEFAULT '[]',        -- [{at, duration, status_code, error}]
    next_try_at  REAL,                              -- NULL once delivered or given up
    lease_until  REAL,                              -- a deliverer holds it until then
    lease_token  TEXT,
    created_at   REAL NOT NULL,
    finished_at  REAL
) STRICT;

-- The deliverer's claim: pending deliveries by due time.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_try_at)
    WHERE state = 'pending';
-- A task's deliveries (API, dashboard) and the cascade when a task is deleted or pruned.
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id, created_at);

-- Every path into a final state (complete, fail, cancel by API or dashboard, rescue of an
-- expired lease) changes `status`: the delivery is written by the transaction that did it.
CREATE TRIGGER tasks_finished_webhook AFTER UPDATE OF status ON tasks
WHEN NEW.callback_url IS NOT NULL AND OLD.status IS NOT NEW.status
     AND NEW.status IN ('succeeded', 'failed', 'cancelled')
BEGIN
    INSERT INTO webhook_deliveries (id, task_id, url, task_status, next_try_at, created_at)
    VALUES (lower(hex(randomblob(16))), NEW.id, NEW.callback_url, NEW.status, NEW.updated_at,
            NEW.updated_at);
END;
