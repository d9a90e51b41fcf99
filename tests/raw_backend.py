"""A backend on 127.0.0.1 that answers with exactly the bytes a test gives it.

``LocalBackend`` speaks each provider as the wire layer reads it; this one
sends what a real provider adds on top (``system_fingerprint``, fields no
translator knows, a response header echoing the key), to show what the
gateway forwards untouched and what the clients never pass on.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import msgspec

#: Replaced in a reply's body by the key the request carried, as a backend
#: that echoes it would.
ECHO_KEY = b"{ECHO_KEY}"


def sse(data: object, event: str | None = None) -> bytes:
    named = f"event: {event}\n".encode() if event else b""
    return named + b"data: " + msgspec.json.encode(data) + b"\n\n"


class RawReply(msgspec.Struct, frozen=True):
    body: bytes
    content_type: str = "text/event-stream"
    status: int = 200
    #: More response headers; ECHO_KEY in a value is replaced too.
    headers: tuple[tuple[str, str], ...] = ()


class RawBackend:
    """Answers the n-th POST with ``replies[n]`` (the last one after that)."""

    def __init__(self, replies: Sequence[RawReply]) -> None:
        self._replies = list(replies)
        self.requests = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                reply = backend._replies[min(backend.requests, len(backend._replies) - 1)]
                backend.requests += 1
                key = self.headers.get("x-api-key") or self.headers.get("authorization") or ""
                body = reply.body.replace(ECHO_KEY, key.removeprefix("Bearer ").encode())
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                self.send_header("content-length", str(len(body)))
                for name, value in reply.headers:
                    echoed = value.encode().replace(ECHO_KEY, key.removeprefix("Bearer ").encode())
                    self.send_header(name, echoed.decode())
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # quiet: the test output is the test's

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RawBackend:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
