"""A real local HTTP endpoint for outbound-call tests: answers what it is told, records what it receives.

Each request takes the next scripted `Reply` (then `default`): a status and JSON body, after `delay` seconds (a
remote that takes its time), or `hang`, which holds the request open until `release()` (or the test ends), as an
endpoint that never answers does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True)
class Reply:
    """What the endpoint answers one request with."""

    status: int = 200
    body: Any = None
    hang: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as the endpoint saw it (header names lower-cased), and when it arrived (`time.time()`)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        """The body as JSON."""
        return orjson.loads(self.body)


@dataclass
class Endpoint:
    """The endpoint's script and record; `url(path)` addresses it."""

    port: int = 0
    replies: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/") -> str:
        """`http://127.0.0.1:<port><path>`."""
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *replies: Reply, default: Reply | None = None) -> None:
        """Answer the next requests with `replies`, then with `default` (200 with no body unless given)."""
        with self._lock:
            self.replies = list(replies)
            self.default = default or Reply()
            self._released.clear()

    def release(self) -> None:
        """Let every hanging request go (they answer 504)."""
        self._released.set()

    def paths(self) -> list[str]:
        """The path of every request so far, in the order they arrived."""
        with self._lock:
            return [request.path for request in self.received]

    def requests_to(self, path: str) -> list[Received]:
        """What reached `path`, in order."""
        with self._lock:
            return [request for request in self.received if request.path == path]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length", "0") or "0")
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.received.append(
                Received(handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()}, body)
            )
            reply = self.replies.pop(0) if self.replies else self.default
            self.in_flight += 1
        try:
            if reply.hang:
                self._released.wait(60)
                reply = Reply(504)
            elif reply.delay:
                self._released.wait(reply.delay)
            content = b"" if reply.body is None else orjson.dumps(reply.body)
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            handler.wfile.write(content)
        except OSError:
            pass  # the caller gave up (deadline) or died (SIGKILL): nobody reads this answer
        finally:
            with self._lock:
                self.in_flight -= 1


@contextmanager
def running_endpoint() -> Iterator[Endpoint]:
    """An endpoint on a free port of 127.0.0.1, serving from a thread until the block ends."""
    endpoint = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            endpoint._handle(self)

        def do_POST(self) -> None:
            endpoint._handle(self)

        def do_PUT(self) -> None:
            endpoint._handle(self)

        def do_PATCH(self) -> None:
            endpoint._handle(self)

        def do_DELETE(self) -> None:
            endpoint._handle(self)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    endpoint.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.release()
        server.shutdown()
        server.server_close()
