"""A set of local backends, served together on the caller's event loop or on a thread.

``async with backends:`` serves on the current event loop (asyncio or trio)
inside a task group; ``with backends:`` runs ``anyio.run`` on a background
thread for synchronous tests. Leaving either cancels every connection, so a
hanging request ends at once.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Final, Self

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.tls import TLSListener

from ._backend import LocalBackend
from ._behaviours import Behaviour
from ._server import serve_backend

__all__ = ("LocalBackends",)

#: How long ``with backends:`` waits for the thread to start or to stop.
_THREAD_TIMEOUT: Final = 10.0
#: How often ``wait_idle`` looks at the counters.
_POLL_SECONDS: Final = 0.005


class LocalBackends:
    """Local HTTP backends for tests, each on its own port of 127.0.0.1.

    Add backends with :meth:`add` (and :meth:`closed`), then serve them all
    with ``async with backends:`` or ``with backends:``. Ports are chosen when
    serving starts; a container may serve again after it stopped, on new ports.

    ``thread_backend`` is the event loop ``with backends:`` runs on its
    thread: "asyncio" or "trio". With ``tls`` (a server-side SSL context)
    every backend serves HTTPS, and its ``base_url`` says ``https``.
    """

    def __init__(
        self, *, thread_backend: str = "asyncio", tls: ssl.SSLContext | None = None
    ) -> None:
        self._backends: dict[str, LocalBackend] = {}
        self._thread_backend = thread_backend
        self._tls = tls
        self._stack: AsyncExitStack | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._stopper: tuple[anyio.lowlevel.EventLoopToken, anyio.Event] | None = None

    # ------------------------------------------------------------ the set

    def add(
        self, name: str, provider: str, *script: Behaviour, default: Behaviour | None = None
    ) -> LocalBackend:
        """A backend speaking ``provider``'s format that plays ``script``, then ``default``.

        ``default`` is ``Stream()`` when None.
        """
        return self._register(LocalBackend(name, provider, script, default))

    def closed(self, name: str, provider: str) -> LocalBackend:
        """A backend whose port refuses connections.

        The port is bound but never listens, so nothing else can take it while
        the backends serve, and connecting gets a refusal at once.
        """
        return self._register(LocalBackend(name, provider, refused=True))

    def _register(self, backend: LocalBackend) -> LocalBackend:
        if self.serving:
            raise RuntimeError("cannot add a backend while the backends are serving")
        if backend.name in self._backends:
            raise ValueError(f"there is already a backend named {backend.name!r}")
        self._backends[backend.name] = backend
        return backend

    def __getitem__(self, name: str) -> LocalBackend:
        return self._backends[name]

    def __contains__(self, name: object) -> bool:
        return name in self._backends

    def __iter__(self) -> Iterator[LocalBackend]:
        return iter(list(self._backends.values()))

    def __len__(self) -> int:
        return len(self._backends)

    @property
    def serving(self) -> bool:
        """Whether the backends are being served (in either mode)."""
        return self._stack is not None or self._thread is not None

    # ------------------------------------------------------------ serving on this event loop

    async def __aenter__(self) -> Self:
        if self.serving:
            raise RuntimeError("these backends are already serving")
        self._stack = await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        stack, self._stack = self._stack, None
        if stack is None:
            return False
        return await _stop(stack, exc_type, exc, traceback)

    async def _start(self) -> AsyncExitStack:
        """Bind every port and start serving; the stack undoes it all."""
        stack = AsyncExitStack()
        try:
            servers: list[tuple[LocalBackend, anyio.abc.Listener[anyio.abc.ByteStream]]] = []
            for backend in self._backends.values():
                if backend.refused:
                    refusing = _refusing_socket()
                    stack.callback(refusing.close)
                    backend._bind(refusing.getsockname()[1])
                else:
                    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
                    stack.push_async_callback(tcp.aclose)
                    backend._bind(
                        tcp.extra(anyio.abc.SocketAttribute.local_port), tls=bool(self._tls)
                    )
                    servers.append(
                        (backend, tcp if self._tls is None else _QuietTLSListener(tcp, self._tls))
                    )
            task_group = await stack.enter_async_context(anyio.create_task_group())
            # Runs first on the way out: every connection is cancelled, then the
            # task group has nothing left to wait for.
            stack.callback(task_group.cancel_scope.cancel)
            for backend, serving in servers:
                task_group.start_soon(serve_backend, backend, serving)
        except BaseException:
            await stack.aclose()
            raise
        return stack

    # ------------------------------------------------------------ serving from a thread

    def __enter__(self) -> Self:
        if self.serving:
            raise RuntimeError("these backends are already serving")
        ready = threading.Event()
        self._thread_error = None
        self._stopper = None
        thread = threading.Thread(
            target=self._run_thread, args=(ready,), name="LocalBackends", daemon=True
        )
        self._thread = thread
        thread.start()
        if not ready.wait(_THREAD_TIMEOUT):
            self._stop_thread()
            raise RuntimeError(f"the backends did not start within {_THREAD_TIMEOUT} s")
        if self._thread_error is not None:
            error = self._thread_error
            self._stop_thread()
            raise error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop_thread()
        error, self._thread_error = self._thread_error, None
        if error is not None and exc is None:
            raise error

    def _run_thread(self, ready: threading.Event) -> None:
        try:
            anyio.run(self._serve_until_stopped, ready, backend=self._thread_backend)
        except BaseException as error:
            self._thread_error = error
        finally:
            ready.set()

    async def _serve_until_stopped(self, ready: threading.Event) -> None:
        stop = anyio.Event()
        stack = await self._start()
        try:
            self._stopper = (anyio.lowlevel.current_token(), stop)
            ready.set()
            await stop.wait()
        except BaseException as error:
            if not await _stop(stack, type(error), error, error.__traceback__):
                raise
        else:
            await _stop(stack, None, None, None)

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        stopper, self._stopper = self._stopper, None
        if thread is None:
            return
        if stopper is not None:
            token, stop = stopper
            # RunFinishedError: the loop already ended (it failed), nothing to stop.
            with contextlib.suppress(anyio.RunFinishedError):
                anyio.from_thread.run_sync(stop.set, token=token)
        thread.join(_THREAD_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"the backends did not stop within {_THREAD_TIMEOUT} s")

    # ------------------------------------------------------------ waiting for quiet

    def _busy(self) -> dict[str, int]:
        return {b.name: b.open_connections for b in self._backends.values() if b.open_connections}

    def _timed_out(self, busy: dict[str, int], timeout: float) -> TimeoutError:
        counts = ", ".join(f"{name}: {count}" for name, count in busy.items())
        return TimeoutError(f"backends still had open connections after {timeout} s ({counts})")

    def wait_idle(self, timeout: float = 2.0) -> None:
        """Block until no backend has an open connection; ``TimeoutError`` naming them if not.

        Connections count from the moment the server accepts them, so one a
        client opened an instant ago may not be counted yet. For ``with
        backends:``; on the serving event loop use :meth:`wait_idle_async`.
        """
        deadline = time.monotonic() + timeout
        while busy := self._busy():
            if time.monotonic() >= deadline:
                raise self._timed_out(busy, timeout)
            time.sleep(_POLL_SECONDS)

    async def wait_idle_async(self, timeout: float = 2.0) -> None:
        """:meth:`wait_idle` for async code: wait without blocking the event loop."""
        deadline = anyio.current_time() + timeout
        while busy := self._busy():
            if anyio.current_time() >= deadline:
                raise self._timed_out(busy, timeout)
            await anyio.sleep(_POLL_SECONDS)


async def _stop(
    stack: AsyncExitStack,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    traceback: TracebackType | None,
) -> bool:
    """Undo :meth:`LocalBackends._start`; True when ``exc`` was absorbed."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        # The task group's scope may be what was cancelled: it must see that to absorb it.
        return bool(await stack.__aexit__(exc_type, exc, traceback))
    # Any other exception is the caller's own: handing it to the task group
    # would bring it back wrapped in an ExceptionGroup.
    await stack.aclose()
    return False


class _QuietTLSListener(TLSListener):
    """A TLS listener that drops a failed handshake without logging it: a
    client refusing the certificate is what some tests are about."""

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: anyio.abc.AnyByteStream) -> None:
        await anyio.aclose_forcefully(stream)
        if not isinstance(exc, Exception) or isinstance(exc, anyio.get_cancelled_exc_class()):
            raise exc


def _refusing_socket() -> socket.socket:
    """A socket bound to a free port of 127.0.0.1 that never listens: connections are refused."""
    refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        refusing.bind(("127.0.0.1", 0))
    except OSError:
        refusing.close()
        raise
    return refusing
