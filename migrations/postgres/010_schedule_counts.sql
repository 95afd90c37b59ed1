-- 010: a schedule's tasks counted without reading them (PostgreSQL; mirrors
-- migrations/sqlite/010_schedule_counts.sql). Per (schedule, queue, type, status), kept the way
-- 009 keeps task_counts: writers only INSERT delta rows (one per group a statement changed,
-- from the same statement-level triggers' transition tables), a reader sums counts and deltas
-- in one statement, and the occasional fold moves the deltas into schedule_task_counts.
CREATE TABLE schedule_task_counts (
    schedule_id text COLLATE "C" NOT NULL,
    queue       text COLLATE "C" NOT NULL,
    type        text NOT NULL,
    status      text NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (schedule_id, queue, type, status)
);

CREATE TABLE schedule_task_count_deltas (
    schedule_id text COLLATE "C" NOT NULL,
    queue       text COLLATE "C" NOT NULL,
    type        text NOT NULL,
    status      text NOT NULL,
    n           bigint NOT NULL
);
CREATE INDEX schedule_task_count_deltas_schedule ON schedule_task_count_deltas (schedule_id);

INSERT INTO schedule_task_counts (schedule_id, queue, type, status, n)
SELECT schedule_id, queue, type, status, count(*) FROM tasks
WHERE schedule_id IS NOT NULL
GROUP BY schedule_id, queue, type, status;

CREATE OR REPLACE FUNCTION localflow_fold_task_counts() RETURNS void LANGUAGE plpgsql AS $$
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
        WITH gone AS (
            DELETE FROM schedule_task_count_deltas
            RETURNING schedule_id, queue, type, status, n
        )
        INSERT INTO schedule_task_counts AS c (schedule_id, queue, type, status, n)
        SELECT schedule_id, queue, type, status, sum(n) FROM gone
        GROUP BY schedule_id, queue, type, status
        ORDER BY schedule_id, queue, type, status
        ON CONFLICT (schedule_id, queue, type, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
END
$$;

-- 009's trigger function, now also keeping the schedules' counts (same triggers, same
-- transition tables: no new trigger fires per statement).
CREATE OR REPLACE FUNCTION localflow_count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_count_deltas (queue, type, status, n)
        SELECT queue, type, status, count(*) FROM new_rows GROUP BY queue, type, status;
        INSERT INTO schedule_task_count_deltas (schedule_id, queue, type, status, n)
        SELECT schedule_id, queue, type, status, count(*) FROM new_rows
        WHERE schedule_id IS NOT NULL
        GROUP BY schedule_id, queue, type, status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_count_deltas (queue, type, status, n)
        SELECT queue, type, status, -count(*) FROM old_rows GROUP BY queue, type, status;
        INSERT INTO schedule_task_count_deltas (schedule_id, queue, type, status, n)
        SELECT schedule_id, queue, type, status, -count(*) FROM old_rows
        WHERE schedule_id IS NOT NULL
        GROUP BY schedule_id, queue, type, status;
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
        INSERT INTO schedule_task_count_deltas (schedule_id, queue, type, status, n)
        SELECT schedule_id, queue, type, status, sum(d) FROM (
            SELECT schedule_id, queue, type, status, -1 AS d FROM old_rows
            WHERE schedule_id IS NOT NULL
            UNION ALL
            SELECT schedule_id, queue, type, status, 1 AS d FROM new_rows
            WHERE schedule_id IS NOT NULL
        ) AS changed
        GROUP BY schedule_id, queue, type, status
        HAVING sum(d) <> 0;
    END IF;
    IF random() < 1.0 / 64 THEN
        PERFORM localflow_fold_task_counts();
    END IF;
    RETURN NULL;
END
$$;
