"""/health: liveness and readiness in one answer."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from api.deps import QueueDep
from shared import migrate


class SystemController(Controller):
    tags = ["system"]

    @get(
        "/health", summary="Liveness and readiness", exclude_from_auth=True,
        responses={503: ResponseSpec(
            data_container=dict[str, Any], generate_examples=False,
            description="The database is unreachable or not migrated; `error` says which",
        )},
    )
    async def health(self, queue: QueueDep) -> Response[dict[str, Any]]:
        """200 when the database answers and is migrated, 503 otherwise."""
        try:
            version = await queue.db.schema_version()
        except Exception as exc:
            return Response({"status": "unavailable", "error": str(exc)}, status_code=503)
        expected = migrate.newest_version()
        ok = version == expected
        body = {"status": "ok" if ok else "unavailable", "schema_version": version}
        if not ok:
            body["error"] = f"schema version {version}, expected {expected}"
        return Response(body, status_code=200 if ok else 503)
