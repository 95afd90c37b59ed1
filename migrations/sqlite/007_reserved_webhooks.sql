-- Placeholder on the dashperf branch only, so that 009_dashboard_indexes applies here (the
-- runner wants 1..n without gaps). Delete this file when merging: the real 007_webhooks (webhooks) comes from
-- its own branch.
SELECT 1;
