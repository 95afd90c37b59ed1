"""A running task's output, live: the worker stores the tail of each stream now and then.

A shell task's output already passes through bounded buffers (worker/handlers/output.py);
here the worker remembers the buffers of every attempt it runs and, once per interval
(LOCALFLOW_LIVE_OUTPUT_INTERVAL, a second by default), stores the last LIVE_TAIL bytes of
each stream of the attempts whose output grew since the last time, all in one transaction
(Store.save_live_output). So a task that writes 100,000 lines costs one small write a second,
never a write per line, and a thousand running tasks cost one transaction a second, not a
thousand. The same transaction deletes the rows of the attempts that ended since: their final
output is the attempt's own (tasks.result). docs/live_output.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.clock import Clock
from shared.store.base import Claimed, LiveOutput, Store
from worker.handlers.base import WatchOutput
from worker.handlers.output import HeadTail

LIVE_TAIL = 8 * 1024  # bytes of each stream stored while a task runs


@dataclass
class _Watched:
    claimed: Claimed
    out: HeadTail
    err: HeadTail
    stored: tuple[int, int] = (0, 0)  # the streams' byte counts at the last stored flush
    saved: bool = False  # a row may exist: delete it once the attempt ends


class LiveOutputs:
    """The output buffers of the attempts this worker runs, flushed by flush_once."""

    def __init__(self, store: Store, clock: Clock, tail: int = LIVE_TAIL) -> None:
        self.store, self.clock, self.tail = store, clock, tail
        self._watched: dict[str, _Watched] = {}  # by claim token: one per running attempt
        self._ended: list[tuple[str, str]] = []  # (task id, claim token) whose row must go
        self.flushes = 0  # transactions written (each holds every task that had news)

    def watcher(self, claimed: Claimed) -> WatchOutput:
        """What a handler calls with its buffers once its program starts."""

        def watch(out: HeadTail, err: HeadTail) -> None:
            self._watched[claimed.token] = _Watched(claimed, out, err)

        return watch

    def ended(self, claimed: Claimed) -> None:
        """The attempt's handler returned: stop following it; its row goes with the next
        flush (if it ever had one)."""
        watched = self._watched.pop(claimed.token, None)
        if watched is not None and watched.saved:
            self._ended.append((claimed.id, claimed.token))

    async def flush_once(self) -> int:
        """Store the tails that changed and delete the rows of ended attempts, in one
        transaction (none when there is nothing to do). Returns how many tails were stored.
        On a storage error nothing is lost: the next flush tries again."""
        changed: list[tuple[_Watched, tuple[int, int]]] = []
        outputs: list[LiveOutput] = []
        now = self.clock.now()
        for w in self._watched.values():
            totals = (w.out.total, w.err.total)
            if totals == w.stored:
                continue
            changed.append((w, totals))
            outputs.append(LiveOutput(
                task_id=w.claimed.id, token=w.claimed.token, attempt=w.claimed.attempt,
                stdout=_text(w.out.recent(self.tail)), stderr=_text(w.err.recent(self.tail)),
                stdout_bytes=totals[0], stderr_bytes=totals[1], updated_at=now,
            ))
            # Before the write: an attempt that ends while it is under way still gets its
            # row deleted (deleting a row that was never written costs nothing).
            w.saved = True
        ended, self._ended = self._ended, []
        if not outputs and not ended:
            return 0
        try:
            await self.store.save_live_output(outputs, ended, now)
        except BaseException:
            self._ended = ended + self._ended
            raise
        self.flushes += 1
        for w, totals in changed:
            w.stored = totals
        return len(outputs)


def _text(data: bytes) -> str:
    # NUL is not text to PostgreSQL; both stores get the same replacement character.
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
