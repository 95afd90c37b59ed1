-- 004: every commit that changes a task's status (insert, claim, finish, retry, rescue,
-- cancel, delete) NOTIFYs channel localflow_tasks, in the same transaction, so processes
-- waiting for tasks (GET /api/tasks/{id}?wait=, shared/task_watch.py) on any host wake when it
-- commits, and never for a transaction that rolled back. A trigger, so no code path can forget
-- it and no statement pays an extra round trip. Identical notifications in one transaction fold
-- into one delivery; a heartbeat (lease only) or a statement that changed no row sends nothing.
CREATE FUNCTION localflow_task_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('localflow_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_status_changed AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION localflow_task_changed();

CREATE TRIGGER tasks_added_or_removed AFTER INSERT OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION localflow_task_changed();
