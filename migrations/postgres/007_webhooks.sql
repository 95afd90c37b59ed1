-- 007: webhooks (PostgreSQL; mirrors migrations/sqlite/007_webhooks.sql, docs/webhooks.md).
-- A task (and a schedule, for the tasks it makes) may carry a callback URL. When such a task
-- reaches a final state, a trigger records a delivery in the same transaction, so it is
-- durable before anyone tries it. Every try is kept on the delivery row (`history`, JSON).

ALTER TABLE tasks ADD COLUMN callback_url text;
ALTER TABLE schedules ADD COLUMN callback_url text;

CREATE TABLE webhook_deliveries (
    id           text COLLATE "C" PRIMARY KEY,
    task_id      text COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    url          text NOT NULL,
    task_status  text NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'delivered', 'failed')),
    tries        integer NOT NULL DEFAULT 0,
    history      text NOT NULL DEFAULT '[]',
    next_try_at  double precision,
    lease_until  double precision,
    lease_token  text,
    created_at   double precision NOT NULL,
    finished_at  double precision
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_try_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id, created_at);

CREATE FUNCTION localflow_task_finished_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, task_id, url, task_status, next_try_at, created_at)
    VALUES (replace(gen_random_uuid()::text, '-', ''), NEW.id,
            NEW.callback_url, NEW.status, NEW.updated_at, NEW.updated_at);
    RETURN NULL;
END
$$;

-- Every path into a final state changes `status`: the delivery is written by the
-- transaction that did it.
CREATE TRIGGER tasks_finished_webhook AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (NEW.callback_url IS NOT NULL
                       AND OLD.status IS DISTINCT FROM NEW.status
                       AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION localflow_task_finished_webhook();
