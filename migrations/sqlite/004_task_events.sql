-- 004: the durable log of task state changes that GET /api/events serves and resumes from
-- (Last-Event-ID). One row per status change, written by a trigger in the transaction that
-- made the change, so no code path can forget it. SQLite commits one writer at a time and
-- AUTOINCREMENT never reuses an id, so id order is commit order: a reader's cursor is the id.
-- Pruned to a time window; task_events_horizon keeps the newest id pruned, so a reader whose
-- cursor is older can tell it lost some. (Wake-ups for these changes: shared/store/sqlite/wake.py.)
CREATE TABLE task_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT NOT NULL,
    status   TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    type     TEXT NOT NULL,
    time     REAL NOT NULL                    -- Unix seconds: the task's updated_at
) STRICT;
CREATE INDEX task_events_time ON task_events (time);

CREATE TABLE task_events_horizon (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    id  INTEGER NOT NULL
) STRICT;
INSERT INTO task_events_horizon (one, id) VALUES (1, 0);

CREATE TRIGGER tasks_inserted_event AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_events (task_id, status, attempts, type, time)
    VALUES (NEW.id, NEW.status, NEW.attempts, NEW.type, NEW.updated_at);
END;

CREATE TRIGGER tasks_status_event AFTER UPDATE OF status ON tasks
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO task_events (task_id, status, attempts, type, time)
    VALUES (NEW.id, NEW.status, NEW.attempts, NEW.type, NEW.updated_at);
END;
