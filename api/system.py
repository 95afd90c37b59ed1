"""/health: liveness and readiness in one answer."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from api.deps import QueueDep
from shared.health import database_health


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
        db = await database_health(queue.store)
        body: dict[str, Any] = {"status": "ok" if db.ok else "unavailable"}
        if db.schema_version is not None:
            body["schema_version"] = db.schema_version
        if not db.ok:
            body["error"] = db.problem
        return Response(body, status_code=200 if db.ok else 503)
