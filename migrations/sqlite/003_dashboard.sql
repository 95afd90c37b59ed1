-- 003: indexes for the dashboard's reads.
-- The throughput chart: tasks finished in the last hours, by status. Without it the chart walks
-- every finished task (0.5 s at a million); with it, only the window.
CREATE INDEX tasks_finished ON tasks (finished_at, status) WHERE finished_at IS NOT NULL;
-- One schedule's tasks, newest first, keyset-paged: without it, every task of the schedule is
-- sorted for each page (a schedule firing every minute makes half a million a year).
CREATE INDEX tasks_schedule_id ON tasks (schedule_id, id) WHERE schedule_id IS NOT NULL;
