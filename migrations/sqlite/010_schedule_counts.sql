-- 010: a schedule's tasks counted without reading them (the task list under ?schedule=:
-- docs/dashboard.md, "What a refresh costs"). Like task_counts (009), kept by triggers in the
-- transaction that made the change, per (schedule, queue, type, status) so a type or queue
-- filter under a schedule filter is still exact. Only tasks a schedule made fire these
-- triggers' bodies (WHEN ... schedule_id IS NOT NULL): a task submitted by hand costs one
-- comparison per trigger.
CREATE TABLE schedule_task_counts (
    schedule_id TEXT NOT NULL,
    queue       TEXT NOT NULL,
    type        TEXT NOT NULL,
    status      TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, queue, type, status)
) STRICT, WITHOUT ROWID;

INSERT INTO schedule_task_counts (schedule_id, queue, type, status, n)
SELECT schedule_id, queue, type, status, count(*) FROM tasks
WHERE schedule_id IS NOT NULL
GROUP BY schedule_id, queue, type, status;

CREATE TRIGGER tasks_schedule_counted_insert AFTER INSERT ON tasks
WHEN NEW.schedule_id IS NOT NULL
BEGIN
    INSERT INTO schedule_task_counts (schedule_id, queue, type, status, n)
    VALUES (NEW.schedule_id, NEW.queue, NEW.type, NEW.status, 1)
    ON CONFLICT (schedule_id, queue, type, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_schedule_counted_delete AFTER DELETE ON tasks
WHEN OLD.schedule_id IS NOT NULL
BEGIN
    UPDATE schedule_task_counts SET n = n - 1
    WHERE schedule_id = OLD.schedule_id AND queue = OLD.queue AND type = OLD.type
      AND status = OLD.status;
END;

CREATE TRIGGER tasks_schedule_counted_update AFTER UPDATE OF status, queue, type, schedule_id
ON tasks
WHEN (OLD.schedule_id IS NOT NULL OR NEW.schedule_id IS NOT NULL)
 AND (OLD.status IS NOT NEW.status OR OLD.queue IS NOT NEW.queue OR OLD.type IS NOT NEW.type
      OR OLD.schedule_id IS NOT NEW.schedule_id)
BEGIN
    UPDATE schedule_task_counts SET n = n - 1
    WHERE schedule_id = OLD.schedule_id AND queue = OLD.queue AND type = OLD.type
      AND status = OLD.status;
    INSERT INTO schedule_task_counts (schedule_id, queue, type, status, n)
    SELECT NEW.schedule_id, NEW.queue, NEW.type, NEW.status, 1 WHERE NEW.schedule_id IS NOT NULL
    ON CONFLICT (schedule_id, queue, type, status) DO UPDATE SET n = n + 1;
END;
