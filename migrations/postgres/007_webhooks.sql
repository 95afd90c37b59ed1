-- 007: reserved for the webhooks branch (007_webhooks). A placeholder that changes nothing, so
-- that 008_live_output applies on a branch without it (migrations are numbered without gaps).
-- When the webhooks branch is merged its file replaces this one.
SELECT 1;
