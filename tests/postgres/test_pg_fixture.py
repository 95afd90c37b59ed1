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
