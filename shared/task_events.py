"""Following the task event log for GET /api/events, for any number of streams at once.

Every status change of every task is a row of the store's event log, written by the
transaction that made it (Store.events_after; migrations/*/004). An API process has one
EventHub: on each task-change wake-up (Store.task_listener, from any process) it reads the new
events once and keeps the latest in a ring shared by all its streams; a stream takes what is
after its own cursor from the ring, or, when it is further behind than the ring reaches (a
reconnect with an old Last-Event-ID, a slow reader), pages through the log itself. So a stream
holds at most one page of events in memory, a slow client only ever reads at its own pace, and
nothing between two cursors is missed while the log still holds it. A fallback re-read every
`fallback` seconds covers a lost wake-up.

Cursors are "A-B" (two decimal integers) compared as pairs: (transaction id, event id) on
PostgreSQL, (0, event id) on SQLite.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
from collections.abc import Callable

import structlog

from shared.store.base import EventPage, Store, TaskEvent

log = structlog.get_logger("localflow.task_events")

PAGE = 500  # events per read of the log, and at most this many in one stream's hands
RING = 10_000  # recent events the hub keeps for its streams
_CURSOR = re.compile(r"^(\d{1,19})-(\d{1,19})$")


def make_cursor(a: int, b: int) -> str:
    return f"{a}-{b}"


def cursor_key(cursor: str) -> tuple[int, int]:
    """("12-345") -> (12, 345); ValueError for anything else."""
    match = _CURSOR.match(cursor)
    if not match:
        raise ValueError(f"not an event cursor: {cursor[:40]!r}")
    return int(match.group(1)), int(match.group(2))


def is_cursor(text: str) -> bool:
    return _CURSOR.match(text) is not None


class EventHub:
    def __init__(self, store: Store, *, fallback: float = 2.0) -> None:
        self.store = store
        self.fallback = fallback
        self._events: list[TaskEvent] = []
        self._keys: list[tuple[int, int]] = []
        self._floor: tuple[int, int] | None = None  # the ring holds every event after this
        self._tail: str | None = None  # cursor of the newest event read
        self._new = asyncio.Event()
        self._streams = 0
        self._started: asyncio.Future[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._again = False
        self._poller: asyncio.Task[None] | None = None
        self.closed = False
        self.reads = 0  # log reads done for the ring (tests and the bench read it)

    # -- for streams -------------------------------------------------------------------------

    async def join(self) -> str:
        """A stream begins: starts the hub if needed; returns the cursor of now."""
        self._streams += 1
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                head = await self.store.events_head()
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started.exception()  # retrieved: a later join raises it itself
                self._started = None
                self._streams -= 1
                raise
            self._tail, self._floor = head, cursor_key(head)
            self._unsubscribe = self.store.task_listener().subscribe(self._on_wake)
            self._started.set_result(None)
        else:
            await asyncio.shield(self._started)
            if self._streams == 1:
                # Idle until now (wake-ups are ignored without streams): the ring is behind
                # the log. Start it afresh at the head, so "now" is now.
                head = await self.store.events_head()
                if cursor_key(head) > cursor_key(self._tail or head):
                    self._events, self._keys = [], []
                    self._tail, self._floor = head, cursor_key(head)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        self._on_wake()  # anything committed since the head was read
        assert self._tail is not None
        return self._tail

    def leave(self) -> None:
        self._streams -= 1

    async def after(self, cursor: str) -> EventPage:
        """At most PAGE events after `cursor`: from the ring if it reaches back so far, else
        from the log."""
        key = cursor_key(cursor)
        if self._floor is not None and key >= self._floor:
            start = bisect.bisect_right(self._keys, key)
            return EventPage(events=self._events[start:start + PAGE], lost=False)
        return await self.store.events_after(cursor, PAGE)

    async def past_pruned(self, cursor: str) -> str:
        """Where a stream goes on from once a page after `cursor` came back lost and empty
        (every event after it was pruned): the log's head, read before checking again that
        the log still holds nothing after `cursor` (what commits later comes after that
        head). Without it the stream would read, and report, the same loss at every turn."""
        head = await self.store.events_head()
        if (await self.store.events_after(cursor, 1)).events:
            return cursor  # committed meanwhile: read as usual
        return head if cursor_key(head) > cursor_key(cursor) else cursor

    async def wait_past(self, cursor: str, seconds: float) -> bool:
        """Wait until the hub has an event after `cursor`, at most `seconds`; True if so."""
        key = cursor_key(cursor)
        deadline = asyncio.get_running_loop().time() + seconds
        while not self.closed:
            if self._keys and self._keys[-1] > key:
                return True
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            event = self._new
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()
        return False

    def release(self) -> None:
        """The server is stopping: every stream ends."""
        self.closed = True
        self._signal()

    async def close(self) -> None:
        self.release()
        for task in (self._poller, self._reading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            unsubscribe()

    # -- reading the log ---------------------------------------------------------------------

    def _on_wake(self) -> None:
        if self._streams <= 0 or self._tail is None:
            return
        if self._reading is not None and not self._reading.done():
            self._again = True
            return
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            self._again = False
            try:
                while True:
                    assert self._tail is not None
                    self.reads += 1
                    page = await self.store.events_after(self._tail, PAGE)
                    self._append(page.events)
                    if len(page.events) < PAGE:
                        break
            except Exception as exc:  # storage trouble: the fallback poll tries again
                log.warning("reading the task event log failed; retrying", error=str(exc))
                return
            if not self._again:
                return

    def _append(self, events: list[TaskEvent]) -> None:
        if self._tail is not None:  # a read begun before a reset may bring older ones
            tail = cursor_key(self._tail)
            events = [e for e in events if cursor_key(e.cursor) > tail]
        if not events:
            return
        self._events.extend(events)
        self._keys.extend(cursor_key(e.cursor) for e in events)
        self._tail = events[-1].cursor
        if len(self._events) > 2 * RING:  # trimmed in chunks: one copy per RING events
            cut = len(self._events) - RING
            self._floor = self._keys[cut - 1]
            del self._events[:cut], self._keys[:cut]
        self._signal()

    def _signal(self) -> None:
        event, self._new = self._new, asyncio.Event()
        event.set()

    async def _poll(self) -> None:
        while self._streams > 0 and not self.closed:
            await asyncio.sleep(self.fallback)
            self._on_wake()
