"""Request ids and the access log's logger, for the one ASGI layer around every request
(api/front_door.py), which also records metrics by route template.

The request id: an incoming X-Request-ID is kept when it is short and plain (a proxy's or a
client's id correlates their logs with ours), otherwise one is made. It goes back in the
response's X-Request-ID header and is set in shared.logs.REQUEST_ID, so every line logged while
handling the request carries `request_id`.
"""

from __future__ import annotations

import re
from typing import Any

import structlog

from shared.ids import random_bytes

log = structlog.get_logger("localflow.api")

_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED = "unmatched"  # the route label of a path no route matches: never the raw path


def new_request_id() -> str:
    return random_bytes(8).hex()  # an id to correlate lines, not a secret


def incoming_request_id(headers: Any) -> str | None:
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode() if _SANE_ID.fullmatch(value) else None
    return None

