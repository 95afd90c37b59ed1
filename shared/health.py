"""The one database health check, shared by the API's /health and the worker's /health."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.store.base import Store

TIMEOUT = 2.0  # seconds: a database slower than this to answer one tiny read is not healthy


@dataclass(frozen=True)
class DatabaseHealth:
    schema_version: int | None  # None when the database did not answer
    problem: str | None  # None when healthy

    @property
    def ok(self) -> bool:
        return self.problem is None


async def database_health(store: Store, seconds: float = TIMEOUT) -> DatabaseHealth:
    """Healthy when the database answers within `seconds` and is at this LocalFlow's schema."""
    try:
        async with asyncio.timeout(seconds):
            version = await store.schema_version()
    except TimeoutError:
        return DatabaseHealth(None, f"database unavailable: no answer within {seconds:g}s")
    except Exception as exc:
        return DatabaseHealth(None, f"database unavailable: {exc}")
    expected = store.newest_schema_version()
    if version != expected:
        return DatabaseHealth(version, f"schema version {version}, expected {expected}")
    return DatabaseHealth(version, None)
