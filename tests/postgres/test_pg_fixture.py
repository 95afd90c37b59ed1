"""The test server's own promises: where no PostgreSQL can be had the cases skip saying why,
and a cluster it starts is really gone at the end."""

from __future__ import annotations

import pytest

from tests import pg


def test_no_binaries_and_no_url_skips_saying_what_to_install(monkeypatch) -> None:
    monkeypatch.delenv(pg.ENV_URL, raising=False)
    monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pg.shutil, "which", lambda name: None)
    with pytest.raises(pg.Unavailable) as caught:
        pg.open_server()
    message = str(caught.value)
    assert "`postgresql` package" in message and pg.ENV_URL in message


def test_a_started_cluster_answers_then_is_gone() -> None:
    import psycopg

    try:
        cluster = pg.start_cluster()
    except pg.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        with psycopg.connect(cluster.url) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
    finally:
        cluster.stop()
    assert cluster.proc is not None and cluster.proc.poll() is not None
    assert cluster.root is not None and not cluster.root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.url, connect_timeout=3)


def _rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def test_a_database_handed_back_is_emptied_to_the_template_for_the_next_test(
    pg_server: pg.Server,
) -> None:
    """What one test wrote (rows, identity counters, a schema version row, an open session
    in a transaction) is gone when the next test gets the same database; the migrations'
    own rows are back."""
    import psycopg

    template_url = pg_server.url_for(pg_server.template())
    seeded = _rows(template_url, "SELECT * FROM task_events_horizon")
    versions = _rows(template_url, "SELECT version, name FROM localflow_schema ORDER BY 1")
    assert seeded and versions

    url = pg_server.checkout()
    lingering = psycopg.connect(url)  # a session the test left open, mid-transaction
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO localflow_schema (version, name) VALUES (99, 'x')")
            conn.execute("DELETE FROM task_events_horizon")
            conn.execute("INSERT INTO task_events (xid, task_id, status, attempts, type, "
                         "time) VALUES (1, 't', 'queued', 0, 'x', 0)")
        lingering.execute("SELECT count(*) FROM tasks")
        pg_server.checkin(url)
        assert pg_server.checkout() == url, "the emptied database is handed out again"
    finally:
        lingering.close()
    try:
        assert _rows(url, "SELECT count(*) FROM task_events") == [(0,)]
        with psycopg.connect(url) as conn:  # identity counters start again
            assert conn.execute("INSERT INTO task_events (xid, task_id, status, attempts, "
                                "type, time) VALUES (1, 't', 'queued', 0, 'x', 0) "
                                "RETURNING id").fetchone() == (1,)
            conn.rollback()
        assert _rows(url, "SELECT * FROM task_events_horizon") == seeded
        assert _rows(url, "SELECT version, name FROM localflow_schema ORDER BY 1") == versions
    finally:
        pg_server.checkin(url)


def test_a_database_whose_schema_changed_is_dropped_not_reused(pg_server: pg.Server) -> None:
    import psycopg

    url = pg_server.checkout()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks ADD COLUMN left_behind integer")
    pg_server.checkin(url)
    name = url.rsplit("/", 1)[1]
    assert _rows(pg_server.admin_url,
                 f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == [(0,)]
    fresh = pg_server.checkout()
    try:
        assert fresh != url
        assert "left_behind" not in {r[0] for r in _rows(
            fresh, "SELECT column_name FROM information_schema.columns "
                   "WHERE table_name = 'tasks'")}
    finally:
        pg_server.checkin(fresh)
