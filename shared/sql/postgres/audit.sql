-- The audit trail (docs/audit.md) on PostgreSQL; names and meaning match
-- shared/sql/sqlite/audit.sql.
-- Listing is newest first by id (ULIDs), keyset-paged: one query per filter combination so
-- each walks its own index (audit_action_id, audit_target_id, the primary key).

-- name: insert_audit
-- Written in the transaction of the action it records (shared/audit.py).
INSERT INTO audit (id, at, action, target_kind, target_id, count, channel, actor, details)
VALUES (%(id)s, %(at)s, %(action)s, %(target_kind)s, %(target_id)s, %(count)s, %(channel)s, %(actor)s, %(details)s)

-- name: list_all
SELECT id, at, action, target_kind, target_id, count, channel, actor, details FROM audit WHERE id < %(cursor)s ORDER BY id DESC LIMIT %(limit)s

-- name: list_by_action
SELECT id, at, action, target_kind, target_id, count, channel, actor, details FROM audit WHERE action = %(action)s AND id < %(cursor)s
ORDER BY id DESC LIMIT %(limit)s

-- name: list_by_target
SELECT id, at, action, target_kind, target_id, count, channel, actor, details FROM audit WHERE target_id = %(target)s AND id < %(cursor)s
ORDER BY id DESC LIMIT %(limit)s

-- name: list_by_action_and_target
SELECT id, at, action, target_kind, target_id, count, channel, actor, details FROM audit
WHERE target_id = %(target)s AND action = %(action)s AND id < %(cursor)s
ORDER BY id DESC LIMIT %(limit)s

-- name: prune
-- Retention: the oldest first, a small batch per transaction (shared/retention.py).
DELETE FROM audit WHERE id IN (
    SELECT id FROM audit WHERE at < %(before)s ORDER BY at LIMIT %(limit)s
)
