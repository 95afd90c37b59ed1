-- 004: task changes, told and kept (mirrors migrations/sqlite/004_task_events.sql).
--
-- Every commit that changes a task's status (insert, claim, finish, retry, rescue, cancel,
-- delete) NOTIFYs channel localflow_tasks in the same transaction, so processes waiting for
-- tasks (GET /api/tasks/{id}?wait=, GET /api/events) on any host wake when it commits, and never
-- for a transaction that rolled back. Identical notifications in one transaction fold into one.
--
-- Each status change is also a row of task_events, written by the same trigger in the same
-- transaction (no code path can forget it, no statement pays a round trip): the durable log
-- GET /api/events serves and resumes from (Last-Event-ID). Its order is (xid, id), read only
-- below the oldest transaction still open (pg_snapshot_xmin), so an event committed late by a
-- transaction that began early is never behind a reader's cursor. Pruned to a time window
-- (task_events_horizon remembers the newest cursor pruned, so a reader can tell it lost some).
CREATE TABLE task_events (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid      bigint NOT NULL,                 -- the writing transaction (pg_current_xact_id)
    task_id  text COLLATE "C" NOT NULL,
    status   text NOT NULL,
    attempts integer NOT NULL,
    type     text NOT NULL,
    time     double precision NOT NULL        -- Unix seconds: the task's updated_at
);
CREATE INDEX task_events_order ON task_events (xid, id);
CREATE INDEX task_events_time ON task_events (time);

CREATE TABLE task_events_horizon (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    xid  bigint NOT NULL,
    id   bigint NOT NULL
);
INSERT INTO task_events_horizon (xid, id) VALUES (0, 0);

CREATE FUNCTION localflow_task_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO task_events (xid, task_id, status, attempts, type, time)
        VALUES (pg_current_xact_id()::text::bigint, NEW.id, NEW.status, NEW.attempts, NEW.type,
                NEW.updated_at);
    END IF;
    PERFORM pg_notify('localflow_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_status_changed AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION localflow_task_changed();

CREATE TRIGGER tasks_added_or_removed AFTER INSERT OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION localflow_task_changed();
