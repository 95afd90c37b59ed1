"""The PostgreSQL server the bench measures against: one you name (--pg-url), or a throwaway
cluster of the machine's own PostgreSQL started the way the tests start theirs (tests/pg.py),
but with PostgreSQL's durability settings left on (fsync, synchronous_commit), since the
SQLite side commits with synchronous=FULL. Each measurement gets a fresh, migrated database."""

from __future__ import annotations

from dataclasses import dataclass

from shared.store import redact
from tests import pg


@dataclass
class BenchServer:
    server: pg.Server
    throwaway: bool

    def new_database(self) -> str:
        return self.server.create_database()

    def describe(self) -> dict[str, object]:
        import psycopg

        with psycopg.connect(self.server.admin_url, connect_timeout=10) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # fixed names only
                        for name in ("fsync", "synchronous_commit", "shared_buffers")}
        return {"version": version, "url": redact(self.server.admin_url),
                "throwaway_cluster": self.throwaway, **settings}

    def close(self) -> None:
        self.server.close()


def open_server(pg_url: str | None) -> BenchServer:
    """Raises pg.Unavailable (saying why) where no server can be had."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise pg.Unavailable("psycopg is not installed (`uv sync` installs it)") from None
    if pg_url:
        return BenchServer(pg.Server(admin_url=pg_url), throwaway=False)
    cluster = pg.start_cluster(durable=True)
    return BenchServer(pg.Server(admin_url=cluster.url, cluster=cluster), throwaway=True)
