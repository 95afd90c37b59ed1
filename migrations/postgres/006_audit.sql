-- 006: the audit trail (PostgreSQL; mirrors migrations/sqlite/006_audit.sql, docs/audit.md).
-- One row per operator action, written in the transaction that made the change. Never holds
-- a token, password or session secret: `actor` is a short fingerprint.

CREATE TABLE audit (
    id          text COLLATE "C" PRIMARY KEY,  -- a ULID: newest first is id descending
    at          double precision NOT NULL,
    action      text NOT NULL,
    target_kind text NOT NULL,
    target_id   text,                          -- NULL for a bulk action
    count       integer NOT NULL DEFAULT 1 CHECK (count >= 0),
    channel     text NOT NULL,
    actor       text NOT NULL,
    details     text NOT NULL DEFAULT '{}'     -- JSON text, kept as written
);

CREATE INDEX audit_action_id ON audit (action, id COLLATE "C");
CREATE INDEX audit_target_id ON audit (target_id, id COLLATE "C") WHERE target_id IS NOT NULL;
CREATE INDEX audit_at ON audit (at);
