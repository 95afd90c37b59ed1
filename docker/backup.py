"""Write a consistent snapshot of the LocalFlow database, safe while it is in use.

    python /app/docker/backup.py DEST     # DEST must not exist yet
    python /app/docker/backup.py -        # the snapshot on stdout

From the host, in a one-off container on the compose volume (see docs/containers.md):

    docker compose run --rm --no-deps -T api python /app/docker/backup.py - > backup.db

VACUUM INTO reads through SQLite, honouring the WAL and its locks, and writes one
self-contained, compacted file. Copying the files of a live WAL database can
capture a torn state (the .db without the pages still in -wal).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path


def snapshot(db: Path, dest: Path) -> None:
    if not db.exists():
        raise SystemExit(f"backup: no database at {db}")
    # Read-only: a backup must never create or migrate a database.
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        conn.execute("VACUUM INTO ?", (str(dest),))
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    db = Path(os.environ.get("LOCALFLOW_DB", "localflow.db"))
    if argv[0] != "-":
        snapshot(db, Path(argv[0]))
        print(f"backup: wrote {argv[0]}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "backup.db"
        snapshot(db, dest)
        with dest.open("rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
