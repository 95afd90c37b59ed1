-- 003: what the dashboard's throughput chart reads: tasks finished in the last hours, by status.
-- Without it the chart walks every finished task (0.5 s at a million); with it, only the window.
CREATE INDEX tasks_finished ON tasks (finished_at, status) WHERE finished_at IS NOT NULL;
