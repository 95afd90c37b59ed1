-- 009: what the dashboard and /metrics read at a million tasks without reading a million rows
-- (PostgreSQL; mirrors migrations/sqlite/009_dashboard_indexes.sql, docs/dashboard.md).
--
-- How many tasks each (queue, type, status) has, kept in the transaction that made the change,
-- so no code path can forget it and a rolled-back change never counts. Unlike SQLite, many
-- writers commit at once here, and one counter row per (queue, type, status) would be a hot
-- row every claim and finish of every worker waits on. So writers only ever INSERT into
-- task_count_deltas (no row is shared, nothing waits), one row per (queue, type, status) a
-- statement changed (statement-level triggers with transition tables: a claim of 64 tasks
-- adds two rows, not 128). A reader sums task_counts and the deltas in one statement (one
-- snapshot); now and then (about one statement in 64) a writer folds the deltas into
-- task_counts, one folder at a time (an advisory lock it only tries for).
CREATE TABLE task_counts (
    queue  text COLLATE "C" NOT NULL,
    type   text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (queue, type, status)
);

CREATE TABLE task_count_deltas (
    queue  text COLLATE "C" NOT NULL,
    type   text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL
);

INSERT INTO task_counts (queue, type, status, n)
SELECT queue, type, status, count(*) FROM tasks GROUP BY queue, type, status;

-- Folds the deltas into task_counts: called by a writer's trigger now and then, under an
-- advisory lock it only tries for (a second folder would just wait for the first's rows).
CREATE FUNCTION localflow_fold_task_counts() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- "LFcounts" in ASCII: any constant, as long as every LocalFlow uses the same one.
    IF pg_try_advisory_xact_lock(5496189725614961779) THEN
        WITH gone AS (
            DELETE FROM task_count_deltas RETURNING queue, type, status, n
        )
        INSERT INTO task_counts AS c (queue, type, status, n)
        SELECT queue, type, status, sum(n) FROM gone
        GROUP BY queue, type, status
        ORDER BY queue, type, status
        ON CONFLICT (queue, type, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
END
$$;

CREATE FUNCTION localflow_count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_count_deltas (queue, type, status, n)
        SELECT queue, type, status, count(*) FROM new_rows GROUP BY queue, type, status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_count_deltas (queue, type, status, n)
        SELECT queue, type, status, -count(*) FROM old_rows GROUP BY queue, type, status;
    ELSE
        -- Most updates (heartbeats, results) change no count: they net to nothing here.
        INSERT INTO task_count_deltas (queue, type, status, n)
        SELECT queue, type, status, sum(d) FROM (
            SELECT queue, type, status, -1 AS d FROM old_rows
            UNION ALL
            SELECT queue, type, status, 1 AS d FROM new_rows
        ) AS changed
        GROUP BY queue, type, status
        HAVING sum(d) <> 0;
    END IF;
    IF random() < 1.0 / 64 THEN
        PERFORM localflow_fold_task_counts();
    END IF;
    RETURN NULL;
END
$$;

-- Transition tables allow one event per trigger and no column list, hence three.
CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION localflow_count_tasks();
CREATE TRIGGER tasks_counted_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION localflow_count_tasks();
CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION localflow_count_tasks();

-- Ready / scheduled / retrying depend on the clock, so no trigger can keep them. These two
-- small indexes let the store count them up to a cap, reading index entries only: queued
-- tasks by run_at per queue and type (a type or queue filter is a range too), and the queued
-- tasks that have had an attempt (retrying: those among them not due yet).
CREATE INDEX tasks_queued_due ON tasks (queue, type, run_at) WHERE status = 'queued';
CREATE INDEX tasks_queued_retry ON tasks (queue, type, run_at)
    WHERE status = 'queued' AND attempts > 0;
