"""The SQLite backend (the embedded default): one file, WAL, one writer thread per process.

Module-level `migrate` and `open` are the backend contract of shared/store/base.py (Backend).
"""

from __future__ import annotations

import asyncio
import threading

from shared.settings import Settings
from shared.store.sqlite import migrations
from shared.store.sqlite.store import SQLiteStore


async def migrate(settings: Settings) -> int:
    # It may wait a long time for another process's lock; cancelling this coroutine (a
    # SIGTERM during start-up) stops the waiting thread too, so the process can exit.
    stop = threading.Event()
    try:
        return await asyncio.to_thread(migrations.migrate, settings.db, stop=stop)
    finally:
        stop.set()


async def open(settings: Settings) -> SQLiteStore:
    return await SQLiteStore.open(settings.db, synchronous=settings.synchronous)


__all__ = ["SQLiteStore", "migrate", "open"]
