"""uvicorn's httptools protocol, with a response of known length written in one piece.

uvicorn writes a response's head (status line and headers) as soon as the app sends
`http.response.start`, and its body when the app sends `http.response.body`: two writes, so two
`send` system calls and two TCP segments for a small JSON answer. On a loopback connection the
system call is most of what a write costs, and a submission is one of the API's most frequent
answers (bench/README.md, "The single-submit fast path").

Here the head of a response that declares its Content-Length is held until the body's first
write and goes out with it. A response without a length (a stream: /api/events, chunked
bodies) is written as before, head first, so a client sees the head at once. Nothing else of
uvicorn changes.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# uvicorn writes header names lower-cased, and refuses values with CR or LF: in a head, this
# occurs only as the Content-Length header.
_LENGTH = b"\r\ncontent-length: "


class OneWriteHttpProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # HEAD: uvicorn writes no body at all, so there is nothing to hold the head for.
        if (
            cycle is not None and cycle.scope["method"] != "HEAD"
            and not isinstance(cycle.transport, _HeadWithBody)
        ):
            cycle.transport = _HeadWithBody(cycle.transport)


class _HeadWithBody:
    """The cycle's transport: holds the head of a fixed-length response for the body's first
    write; everything else goes straight to the real transport."""

    __slots__ = ("_head", "_started", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            self._started = True  # the first write is the head (uvicorn's send writes it first)
            if _LENGTH in data:  # a body of known length follows
                self._head = data
                return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def close(self) -> None:
        # An app that failed between its head and its body: the head goes out first, as before.
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
