-- 006: reserved for the audit branch (006_audit). A placeholder that changes nothing, so that
-- 008_live_output applies on a branch without it (migrations are numbered without gaps). When
-- the audit branch is merged its file replaces this one.
SELECT 1;
