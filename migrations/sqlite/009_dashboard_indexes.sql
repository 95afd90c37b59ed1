-- 009: what the dashboard and /metrics read at a million tasks without reading a million rows
-- (docs/dashboard.md, "What a refresh costs").
--
-- task_counts holds how many tasks each (queue, type, status) has, kept by the triggers below
-- in the transaction that made the change, so no code path can forget it and a rolled-back
-- change never counts. SQLite has one writer at a time, so there is no contention on its rows.
CREATE TABLE task_counts (
    queue  TEXT NOT NULL,
    type   TEXT NOT NULL,
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (queue, type, status)
) STRICT, WITHOUT ROWID;

INSERT INTO task_counts (queue, type, status, n)
SELECT queue, type, status, count(*) FROM tasks GROUP BY queue, type, status;

CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (queue, type, status, n) VALUES (NEW.queue, NEW.type, NEW.status, 1)
    ON CONFLICT (queue, type, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts SET n = n - 1
    WHERE queue = OLD.queue AND type = OLD.type AND status = OLD.status;
END;

CREATE TRIGGER tasks_counted_update AFTER UPDATE OF status, queue, type ON tasks
WHEN OLD.status IS NOT NEW.status OR OLD.queue IS NOT NEW.queue OR OLD.type IS NOT NEW.type
BEGIN
    UPDATE task_counts SET n = n - 1
    WHERE queue = OLD.queue AND type = OLD.type AND status = OLD.status;
    INSERT INTO task_counts (queue, type, status, n) VALUES (NEW.queue, NEW.type, NEW.status, 1)
    ON CONFLICT (queue, type, status) DO UPDATE SET n = n + 1;
END;

-- Ready / scheduled / retrying depend on the clock, so no trigger can keep them. These two
-- small indexes let the store count them up to a cap, reading index entries only:
-- queued tasks by run_at (due: run_at <= now; waiting: run_at > now), per queue and type so a
-- type or queue filter is a range too; and the queued tasks that have had an attempt (the
-- retrying ones are those among them not due yet), few unless many tasks are failing.
CREATE INDEX tasks_queued_due ON tasks (queue, type, run_at) WHERE status = 'queued';
CREATE INDEX tasks_queued_retry ON tasks (queue, type, run_at)
    WHERE status = 'queued' AND attempts > 0;
