-- The audit trail (docs/audit.md) on SQLite; names and meaning match
-- shared/sql/postgres/audit.sql.
-- Listing is newest first by id (ULIDs), keyset-paged: one query per filter combination so
-- each walks its own index (audit_action_id, audit_target_id, the primary key).

-- name: insert_audit
-- Written in the transaction of the action it records (shared/audit.py).
INSERT INTO audit (id, at, action, target_kind, target_id, count, channel, actor, details)
VALUES (:id, :at, :action, :target_kind, :target_id, :count, :channel, :actor, :details)

-- name: list_all
SELECT id, at, action, target_kind, target_id, count, channel, actor, details FROM audit WHERE id < :cursor ORDER BY id DESC LIMIT :limit

-- name: list_by_action
SELECT id, at, action, target_kind, target_id, count, channel, actor, details FROM audit WHERE action = :action AND id < :cursor
ORDER BY id DESC LIMIT :limit

-- name: list_by_target
SELECT id, at, action, target_kind, target_id, count, channel, actor, details FROM audit WHERE target_id = :target AND id < :cursor
ORDER BY id DESC LIMIT :limit

-- name: list_by_action_and_target
SELECT id, at, action, target_kind, target_id, count, channel, actor, details FROM audit
WHERE target_id = :target AND action = :action AND id < :cursor
ORDER BY id DESC LIMIT :limit

-- name: prune
-- Retention: the oldest first, a small batch per transaction (shared/retention.py).
DELETE FROM audit WHERE id IN (
    SELECT id FROM audit WHERE at < :before ORDER BY at LIMIT :limit
)
