"""localflow/http_protocol.py: uvicorn on a real socket, answers read by a real client.

A response with a Content-Length goes out in one write (head and body); a stream's head goes
out at once, before its first chunk; an app that fails between head and body still gets its
head out before the connection closes. The writes are recorded below the protocol's own layer,
on the real transport."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from localflow.http_protocol import OneWriteHttpProtocol

WRITES: list[bytes] = []


class _Recorder:
    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _RecordingProtocol(OneWriteHttpProtocol):
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(_Recorder(transport))


async def _with_server(app: Any, client: Any) -> Any:
    WRITES.clear()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        app, http=_RecordingProtocol, lifespan="off", log_config=None, access_log=False,
    ))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)  # a poll on a condition, not a fixed wait
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(client(reader, writer), 30)
        finally:
            writer.close()
    finally:
        server.should_exit = True
        await serving


def _request(path: str = "/", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n".encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


def test_a_response_of_known_length_is_one_write():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b'{"ok": true}'
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def client(reader: Any, writer: Any) -> list[tuple[bytes, bytes]]:
        answers = []
        for _ in range(3):  # keep-alive: each answer of the connection
            writer.write(_request())
            answers.append(await _read_response(reader))
        return answers

    answers = asyncio.run(_with_server(app, client))
    for head, body in answers:
        assert head.startswith(b"HTTP/1.1 201 ") and body == b'{"ok": true}'
    assert len(WRITES) == 3
    assert all(w.startswith(b"HTTP/1.1 201 ") and w.endswith(b'{"ok": true}') for w in WRITES)


def test_a_head_request_and_an_empty_body_still_get_their_head():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD"
                    else b"hello"})

    async def client(reader: Any, writer: Any) -> bytes:
        writer.write(_request(method="HEAD"))
        return await reader.readuntil(b"\r\n\r\n")

    head = asyncio.run(_with_server(app, client))
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 5" in head


def test_a_streams_head_goes_out_before_its_first_chunk():
    release = asyncio.Event

    async def client_and_app() -> bytes:
        go = release()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream")]})
            await go.wait()  # the first event comes only after the client saw the head
            await send({"type": "http.response.body", "body": b"data: 1\n\n"})

        async def client(reader: Any, writer: Any) -> bytes:
            writer.write(_request("/events"))
            head = await reader.readuntil(b"\r\n\r\n")
            go.set()
            chunk = await reader.readuntil(b"\r\n\r\n")  # "<size>\r\ndata: 1\n\n\r\n"...
            return head + chunk

        return await _with_server(app, client)

    out = asyncio.run(client_and_app())
    assert out.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in out
    assert WRITES[0].endswith(b"\r\n\r\n")  # the head alone, before the event existed


def test_an_app_failing_after_its_head_still_closes_cleanly():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", b"10")]})
        raise RuntimeError("boom")

    async def client(reader: Any, writer: Any) -> bytes:
        writer.write(_request())
        return await reader.read()  # until the server closes the connection

    out = asyncio.run(_with_server(app, client))
    assert out.startswith(b"HTTP/1.1 200 ")  # as before: the head, then the close
