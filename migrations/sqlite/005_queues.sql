-- 005: named queues. A task and a schedule carry the queue they belong to; `queues` holds the
-- settings an operator gave a queue (a global concurrency limit, paused). A queue with no row
-- has no limit and is not paused. Semantics in docs/queues.md.

ALTER TABLE tasks ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE schedules ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';

CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    concurrency INTEGER CHECK (concurrency >= 1),   -- NULL: no limit
    paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    updated_at  REAL NOT NULL
) STRICT;

-- The claim counts the running tasks of each limited queue in its transaction: this keeps that
-- count a walk over the running tasks of one queue, not over the table.
CREATE INDEX tasks_running_queue ON tasks (queue) WHERE status = 'running';
-- GET /api/tasks?queue=..., newest first, keyset-paged.
CREATE INDEX tasks_queue_id ON tasks (queue, id);
-- The claim's per-queue path (shared/store/claiming.py): with queues closed (paused, full)
-- or a worker serving only some, it takes each open queue's most urgent tasks from here
-- instead of walking tasks_runnable past every task it may not take.
CREATE INDEX tasks_queue_runnable ON tasks (queue, priority DESC, run_at, id)
    WHERE status = 'queued';

-- Retention (docs/retention.md): a lease a worker holds while it prunes, so that with many
-- workers one prunes at a time; another takes it over when it expires (its holder died).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    until      REAL NOT NULL
) STRICT;

-- The event log (004) says which queue each changed task is in (GET /api/events).
ALTER TABLE task_events ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
DROP TRIGGER tasks_inserted_event;
DROP TRIGGER tasks_status_event;

CREATE TRIGGER tasks_inserted_event AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_events (task_id, status, attempts, type, time, queue)
    VALUES (NEW.id, NEW.status, NEW.attempts, NEW.type, NEW.updated_at, NEW.queue);
END;

CREATE TRIGGER tasks_status_event AFTER UPDATE OF status ON tasks
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO task_events (task_id, status, attempts, type, time, queue)
    VALUES (NEW.id, NEW.status, NEW.attempts, NEW.type, NEW.updated_at, NEW.queue);
END;
