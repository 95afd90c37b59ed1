"""Named queues' policy: listing, and the settings an operator changes (limit, pause).

The limit and the pause are kept where tasks are claimed (shared/store/claiming.py); this
module validates and wakes workers when a change may let them take more.
"""

from __future__ import annotations

import structlog
from msgspec import UNSET

from shared import audit
from shared.errors import InvalidTask
from shared.queue import Queue
from shared.queue_schemas import QUEUE_NAME_RULE, QueueInfo, QueueUpdate, is_queue_name

log = structlog.get_logger("localflow.queues")


class InvalidQueue(InvalidTask):
    """A queue name or setting that cannot be (422); .field names what."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field)


def check_name(name: str, field: str = "name") -> str:
    if not is_queue_name(name):
        raise InvalidQueue(field, f"{field}: {name[:80]!r} is not a queue name "
                                  f"({QUEUE_NAME_RULE})")
    return name


class Queues:
    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.store = queue.store
        self.clock = queue.clock

    async def list(self) -> list[QueueInfo]:
        return await self.store.queues()

    async def get(self, name: str) -> QueueInfo:
        return await self.store.queue(check_name(name))

    async def update(self, name: str, data: QueueUpdate) -> QueueInfo:
        """Set the limit and/or pause; a field not given keeps its value."""
        check_name(name)
        if data.concurrency is not UNSET and data.concurrency is not None and (
            isinstance(data.concurrency, bool) or data.concurrency < 1
        ):
            raise InvalidQueue("concurrency", "concurrency: must be 1 or more, or null for no "
                               "limit (pause the queue to stop it)")
        now = self.clock.now()
        await self.store.set_queue(
            name, concurrency=data.concurrency,
            paused=None if data.paused is UNSET else data.paused, now=now,
            audit=_entries(name, data, now),
        )
        # Resumed, or a limit raised: idle workers look now instead of at their next poll.
        self.queue.on_runnable()
        log.info("queue settings changed", queue=name,
                 concurrency=None if data.concurrency is UNSET else data.concurrency,
                 paused=None if data.paused is UNSET else data.paused)
        return await self.store.queue(name)


def _entries(name: str, data: QueueUpdate, now: float) -> list[audit.AuditEntry]:
    """One audit entry per setting given: a PUT with both a limit and a pause is two actions."""
    entries = []
    if data.concurrency is not UNSET:
        entries.append(audit.entry("queue.limit", "queue", name, now,
                                   details={"concurrency": data.concurrency}))
    if data.paused is not UNSET:
        entries.append(audit.entry("queue.pause" if data.paused else "queue.resume", "queue",
                                   name, now))
    return audit.in_order(entries)
