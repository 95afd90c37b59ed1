"""Checks every /api request passes before its handler (the controllers' before_request).

- A query parameter given twice (`?status=queued&status=failed`) is a 400: Litestar would keep
  one of the values and silently drop the other, so the answer would not be what was asked.
- A conditional header the operation would ignore is a 400 (api/conditional.py).
"""

from __future__ import annotations

from litestar import Request
from litestar.exceptions import ValidationException

from api.conditional import refuse_unhonoured


def refuse_repeated_query(request: Request) -> None:
    if b"&" not in request.scope["query_string"]:
        return  # one parameter or none: nothing can repeat, and nothing need be parsed
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise ValidationException(
                detail=f"invalid request: {name}: given more than once; give it once",
                extra=[{"key": name, "source": "query", "message": "given more than once"}],
            )
        seen.add(name)


async def before_api_request(request: Request) -> None:
    # async although it never awaits: Litestar runs a sync hook in a thread pool, a thread
    # hop per request for checks that take microseconds.
    refuse_repeated_query(request)
    refuse_unhonoured(request)
