"""The PostgreSQL store: psycopg 3 (async, with its pool), the optional extra
`localflow[postgres]`. Claims use FOR UPDATE SKIP LOCKED, wake-ups LISTEN/NOTIFY; the
queries are in shared/sql/postgres/*.sql, the schema in migrations/postgres/."""
