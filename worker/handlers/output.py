"""A bounded copy of an output stream: its head and its tail, and how much was dropped between.

A task may write gigabytes; the worker keeps at most `limit` bytes of each stream however much
passes through, so its memory does not grow with a task's output. The head says how a program
started, the tail how it ended (the error is usually last): both are worth more than a middle.
"""

from __future__ import annotations


class HeadTail:
    def __init__(self, limit: int) -> None:
        self._tail_cap = limit // 2
        self._head_cap = limit - self._tail_cap
        self._head = bytearray()
        self._tail = bytearray()  # the last bytes seen after the head, at most _tail_cap
        self.total = 0  # bytes seen

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        if len(data) >= self._tail_cap:
            self._tail = bytearray(data[len(data) - self._tail_cap:])
        else:
            self._tail += data
            excess = len(self._tail) - self._tail_cap
            if excess > 0:
                del self._tail[:excess]

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        """The kept bytes as text, with a note where bytes were dropped. Each half is decoded on
        its own: a character cut at a seam becomes U+FFFD, never an error."""
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        if not self.dropped:
            return head + tail
        return f"{head}\n... [{self.dropped} bytes not kept] ...\n{tail}"

    def recent(self, limit: int) -> bytes:
        """The last `limit` bytes kept, for a running task's live view (worker/live_output.py):
        the end of the tail, or of head and tail while nothing has been dropped between them
        (then they are one run of bytes). Starts at a character boundary where it was cut."""
        if self.dropped:
            data = bytes(self._tail[-limit:])
        else:
            data = bytes((self._head + self._tail)[-limit:])
        if len(data) == limit:
            # A cut inside a UTF-8 character: drop its continuation bytes (at most three).
            skip = 0
            while skip < 3 and skip < len(data) and 0x80 <= data[skip] < 0xC0:
                skip += 1
            data = data[skip:]
        return data
