-- 004: PLACEHOLDER on branch queues only. Issue 14 (branch results) adds the real 004 in
-- parallel; delete this file when merging (migrations must be numbered without gaps).
SELECT 1;
