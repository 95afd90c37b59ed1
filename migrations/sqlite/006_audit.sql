-- 006: the audit trail (docs/audit.md). One row per operator action (cancel, retry, delete,
-- schedule and queue changes), written in the transaction that made the change, so a change
-- is never committed without its record. Never holds a token, password or session secret:
-- `actor` is a short fingerprint (e.g. "token 3f9a1c2e", "session 7b2d90aa", "no token").

CREATE TABLE audit (
    id          TEXT PRIMARY KEY,          -- a ULID: newest first is id descending
    at          REAL NOT NULL,             -- Unix seconds
    action      TEXT NOT NULL,             -- e.g. task.cancel, schedule.pause, queue.limit
    target_kind TEXT NOT NULL,             -- task, schedule, queue
    target_id   TEXT,                      -- the one target; NULL for a bulk action
    count       INTEGER NOT NULL DEFAULT 1 CHECK (count >= 0),  -- targets acted on
    channel     TEXT NOT NULL,             -- api, dashboard, cli, internal
    actor       TEXT NOT NULL,             -- a non-secret identity (see above)
    details     TEXT NOT NULL DEFAULT '{}' -- JSON: bulk filter and ids, new limit, fields...
) STRICT;

-- GET /api/audit?action=... and ?target=..., newest first, keyset-paged.
CREATE INDEX audit_action_id ON audit (action, id);
CREATE INDEX audit_target_id ON audit (target_id, id) WHERE target_id IS NOT NULL;
-- Retention prunes by age.
CREATE INDEX audit_at ON audit (at);
