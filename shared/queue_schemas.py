"""Named queues: what GET /api/queues answers and PUT /api/queues/{name} takes (docs/queues.md)."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared.schemas import QUEUE_NAME_PATTERN

MAX_CONCURRENCY = 100_000
# At most this many of the queue's tasks run at once, across every worker process and host.
Concurrency = Annotated[int, Meta(ge=1, le=MAX_CONCURRENCY)]
_NAME = re.compile(QUEUE_NAME_PATTERN)
QUEUE_NAME_RULE = "letters, digits, '-', '_' and '.', 1 to 64 characters"


def is_queue_name(text: str) -> bool:
    return bool(_NAME.match(text))


class QueueInfo(msgspec.Struct, kw_only=True):
    name: str
    counts: dict[str, int]  # tasks by status: every status is a key (0 if none)
    concurrency: int | None  # None: no limit
    paused: bool


class QueueUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT /api/queues/{name}: either field, or both. `concurrency: null` removes the limit;
    `paused: true` stops workers taking the queue's tasks (running ones finish)."""

    concurrency: Concurrency | UnsetType | None = UNSET
    paused: bool | UnsetType = UNSET


class QueueGate(msgspec.Struct, kw_only=True, frozen=True):
    """A queue's stored settings, as the claim reads them."""

    name: str
    concurrency: int | None
    paused: bool
