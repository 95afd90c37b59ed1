-- 003: indexes for the dashboard's reads (mirrors migrations/sqlite/003_dashboard.sql).
-- The throughput chart: tasks finished in the last hours, by status.
CREATE INDEX tasks_finished ON tasks (finished_at, status) WHERE finished_at IS NOT NULL;
-- One schedule's tasks, newest first, keyset-paged.
CREATE INDEX tasks_schedule_id ON tasks (schedule_id, id) WHERE schedule_id IS NOT NULL;
