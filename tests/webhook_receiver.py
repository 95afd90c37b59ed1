"""A real webhook receiver for tests (docs/webhooks.md): an http.server on 127.0.0.1 in a
thread, checking every POST's signature against SECRET and handing each to the test as an
event it can wait on with a deadline."""

from __future__ import annotations

import hashlib
import hmac
import queue
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "test-webhook-secret-0123456789"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    signed_ok: bool


class Receiver:
    """A webhook receiver: records every POST (with whether its signature checks out) and
    answers by path: /ok 200; /flaky/<n> 500 for the first two POSTs of each delivery, then
    200; /hang never answers (until the test ends)."""

    def __init__(self) -> None:
        self.events: queue.Queue[Received] = queue.Queue()
        self.release = threading.Event()
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                timestamp = self.headers.get("X-LocalFlow-Timestamp", "")
                expected = "sha256=" + hmac.new(
                    SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
                ).hexdigest()
                signed_ok = hmac.compare_digest(
                    expected, self.headers.get("X-LocalFlow-Signature", ""))
                receiver.events.put(Received(self.path, dict(self.headers), body, time.time(),
                                             signed_ok))
                delivery = self.headers.get("X-LocalFlow-Delivery", "")
                with receiver.lock:
                    receiver.seen[delivery] = receiver.seen.get(delivery, 0) + 1
                    count = receiver.seen[delivery]
                if self.path.startswith("/hang"):
                    receiver.release.wait(120)
                    return
                code = 500 if self.path.startswith("/flaky") and count <= 2 else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 64  # the default 5 refuses bursts
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, path_prefix: str, timeout: float = 60.0) -> Received:
        """The next POST to a path starting with `path_prefix` (others are kept aside)."""
        deadline = time.monotonic() + timeout
        aside = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no POST to {path_prefix} within {timeout}s")
                try:
                    event = self.events.get(timeout=left)
                except queue.Empty:
                    continue
                if event.path.startswith(path_prefix):
                    return event
                aside.append(event)
        finally:
            for event in aside:
                self.events.put(event)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
