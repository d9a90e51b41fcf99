"""Raw-socket backends for faults an HTTP server library would not produce.

:func:`trickling_backend` answers every request with a fixed opening, then
sends one more piece every ``interval_s``, bytes that never complete what
they started (a status line, a header, a chunk-size line, an SSE line).
:func:`slow_reader_backend` reads a request body at a fixed rate and then
answers it. Both run in a thread of their own, serve at most a few
connections, and stop (closing every socket) when the ``with`` block ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

#: No test needs a server longer than this; a client that is held off for good still ends.
SERVE_LIMIT_S: Final = 8.0
_HEAD_LIMIT: Final = 64 * 1024


def _read_request(connection: socket.socket, stop: threading.Event) -> tuple[bytes, int] | None:
    """Read up to the end of the request head; the head and its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        if stop.is_set() or len(data) > _HEAD_LIMIT:
            return None
        try:
            piece = connection.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return None
        if not piece:
            return None
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return rest, length


@contextmanager
def _serving(handle: object) -> Iterator[str]:
    """Accept connections on 127.0.0.1 and give each to ``handle(connection, stop)``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    connections: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(0.05)
            connections.append(connection)
            worker = threading.Thread(target=handle, args=(connection, stop), daemon=True)  # type: ignore[arg-type]
            threads.append(worker)
            worker.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        acceptor.join(timeout=5)
        for worker in threads:
            worker.join(timeout=5)
        for connection in connections:
            connection.close()
        listener.close()


@contextmanager
def deaf_backend() -> Iterator[str]:
    """Accept connections and never read from them (a small receive buffer fills first)."""

    def handle(connection: socket.socket, stop: threading.Event) -> None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stop.wait()

    with _serving(handle) as url:
        yield url


@contextmanager
def trickling_backend(opening: bytes, drip: bytes, interval_s: float = 0.1) -> Iterator[str]:
    """Answer with ``opening``, then ``drip`` every ``interval_s`` until stopped."""

    def handle(connection: socket.socket, stop: threading.Event) -> None:
        request = _read_request(connection, stop)
        if request is None:
            return
        rest, length = request
        while len(rest) < length and not stop.is_set():
            try:
                piece = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not piece:
                return
            rest += piece
        try:
            connection.sendall(opening)
            ends = time.monotonic() + SERVE_LIMIT_S
            while not stop.wait(interval_s) and time.monotonic() < ends:
                connection.sendall(drip)
        except OSError:
            return  # the client closed the connection: it gave up, as it should

    with _serving(handle) as url:
        yield url


@contextmanager
def slow_reader_backend(rate: int, answer: bytes) -> Iterator[str]:
    """Read each request body at about ``rate`` bytes a second, then send ``answer``."""
    step_s = 0.02
    piece_size = max(1, int(rate * step_s))

    def handle(connection: socket.socket, stop: threading.Event) -> None:
        request = _read_request(connection, stop)
        if request is None:
            return
        rest, length = request
        received = len(rest)
        ends = time.monotonic() + SERVE_LIMIT_S
        while received < length and not stop.is_set() and time.monotonic() < ends:
            time.sleep(step_s)
            allowed = min(piece_size, length - received)
            while allowed > 0:  # one step's worth, from what the socket holds
                try:
                    piece = connection.recv(allowed)
                except TimeoutError:
                    break
                except OSError:
                    return
                if not piece:
                    return
                received += len(piece)
                allowed -= len(piece)
        try:
            connection.sendall(answer)
        except OSError:
            return

    with _serving(handle) as url:
        yield url
