-- 005: named queues (PostgreSQL; mirrors migrations/sqlite/005_queues.sql). A task and a
-- schedule carry the queue they belong to; `queues` holds the settings an operator gave a
-- queue (a global concurrency limit, paused). A queue with no row has no limit and is not
-- paused. The claim locks a limited queue's row (SELECT ... FOR UPDATE) before counting its
-- running tasks, so two claimers on any hosts can never both see room. docs/queues.md.

ALTER TABLE tasks ADD COLUMN queue text NOT NULL DEFAULT 'default';
ALTER TABLE schedules ADD COLUMN queue text NOT NULL DEFAULT 'default';

CREATE TABLE queues (
    name        text COLLATE "C" PRIMARY KEY,
    concurrency integer CHECK (concurrency >= 1),   -- NULL: no limit
    paused      boolean NOT NULL DEFAULT false,
    updated_at  double precision NOT NULL
);

CREATE INDEX tasks_running_queue ON tasks (queue) WHERE status = 'running';
CREATE INDEX tasks_queue_id ON tasks (queue, id);
-- The claim's per-queue path (shared/store/claiming.py): with queues closed (paused, full)
-- or a worker serving only some, it takes each open queue's most urgent tasks from here
-- instead of walking tasks_runnable past every task it may not take.
CREATE INDEX tasks_queue_runnable ON tasks (queue, priority DESC, run_at, id)
    WHERE status = 'queued';

-- Retention (docs/retention.md): a lease a worker holds while it prunes, so that with many
-- workers one prunes at a time; another takes it over when it expires (its holder died).
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    until      double precision NOT NULL
);

-- The event log (004) says which queue each changed task is in (GET /api/events).
ALTER TABLE task_events ADD COLUMN queue text NOT NULL DEFAULT 'default';

CREATE OR REPLACE FUNCTION localflow_task_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO task_events (xid, task_id, status, attempts, type, time, queue)
        VALUES (pg_current_xact_id()::text::bigint, NEW.id, NEW.status, NEW.attempts, NEW.type,
                NEW.updated_at, NEW.queue);
    END IF;
    PERFORM pg_notify('localflow_tasks', '');
    RETURN NULL;
END
$$;
