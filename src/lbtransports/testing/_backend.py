"""One local backend's script, records and counters, safe to use from any thread.

Tests read and change a backend from their own thread while the server runs
on another, so every piece of state sits behind one lock, and what a reader
gets is a copy. The methods with a leading underscore are the server's side.
"""

from __future__ import annotations

import collections
import threading

from lbtransports.wire import Provider

from ._behaviours import BEHAVIOURS, Behaviour, Stream
from ._formats import ProviderFormat, format_for
from ._received import Received

__all__ = ("LocalBackend", "check_script")


def check_script(script: tuple[object, ...], default: object) -> None:
    """Refuse a step that is not a behaviour now, not at the request that reaches it.

    A ``default`` of None is fine: it means "the usual one".
    """
    for step in (*script, default) if default is not None else script:
        if not isinstance(step, BEHAVIOURS):
            raise TypeError(f"a script step must be a behaviour such as Stream(), not {step!r}")


class LocalBackend:
    """A backend served by :class:`LocalBackends`: where it listens and what it did.

    Each request takes the next step of the script; once the script is used
    up, every request gets ``default``.
    """

    def __init__(
        self,
        name: str,
        provider: str,
        script: tuple[Behaviour, ...] = (),
        default: Behaviour | None = None,
        *,
        refused: bool = False,
    ) -> None:
        check_script(script, default)
        self._format: ProviderFormat = format_for(str(provider))
        self._name = name
        self._refused = refused
        self._lock = threading.Lock()
        self._script: collections.deque[Behaviour] = collections.deque(script)
        self._default: Behaviour = default if default is not None else Stream()
        self._received: list[Received] = []
        self._errors: list[str] = []
        self._port: int | None = None
        self._scheme = "http"
        self._open = 0
        self._connections_total = 0
        self._requests_total = 0

    def __repr__(self) -> str:
        where = self._port if self._port is not None else "not started"
        return f"<LocalBackend {self._name} {self.provider.value} port={where}>"

    # ------------------------------------------------------------ where

    @property
    def name(self) -> str:
        """The name given to :meth:`LocalBackends.add`; it fills ``{backend}`` in texts."""
        return self._name

    @property
    def provider(self) -> Provider:
        """The wire format spoken (a ``str`` enum: it equals "openai" and so on)."""
        return self._format.provider

    @property
    def refused(self) -> bool:
        """Whether this backend refuses connections (made by :meth:`LocalBackends.closed`)."""
        return self._refused

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1. Raises ``RuntimeError`` before the backends start."""
        with self._lock:
            port = self._port
        if port is None:
            raise RuntimeError(
                f"backend {self._name!r} has no port yet: enter its LocalBackends first"
            )
        return port

    @property
    def base_url(self) -> str:
        """The ``BackendTarget.base_url`` that makes the wire layer's URLs land here.

        OpenAI ``http://127.0.0.1:PORT/v1``, Anthropic ``http://127.0.0.1:PORT``,
        Gemini ``http://127.0.0.1:PORT/v1beta`` (``https`` when served over TLS).
        """
        return f"{self._scheme}://127.0.0.1:{self.port}{self._format.base_path}"

    # ------------------------------------------------------------ what

    def script(self, *behaviours: Behaviour, default: Behaviour | None = None) -> None:
        """Replace the steps still to play; replace ``default`` too unless it is None."""
        check_script(behaviours, default)
        with self._lock:
            self._script = collections.deque(behaviours)
            if default is not None:
                self._default = default

    @property
    def remaining(self) -> tuple[Behaviour, ...]:
        """The scripted steps not played yet (the default not included)."""
        with self._lock:
            return tuple(self._script)

    @property
    def default(self) -> Behaviour:
        """What every request gets once the script is used up."""
        with self._lock:
            return self._default

    # ------------------------------------------------------------ what happened

    @property
    def received(self) -> list[Received]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._received)

    @property
    def open_connections(self) -> int:
        """Connections accepted and not closed yet (idle pooled ones included)."""
        with self._lock:
            return self._open

    @property
    def connections_total(self) -> int:
        """Connections accepted since the backend was created."""
        with self._lock:
            return self._connections_total

    @property
    def requests_total(self) -> int:
        """Requests read, answered with a fault or a 404 included."""
        with self._lock:
            return self._requests_total

    @property
    def errors(self) -> tuple[str, ...]:
        """Unexpected exceptions the server met (a bug here, never a client's doing).

        Network trouble is expected and not listed: a test can assert this stays empty.
        """
        with self._lock:
            return tuple(self._errors)

    # ------------------------------------------------------------ the server's side

    @property
    def _wire_format(self) -> ProviderFormat:
        return self._format

    def _bind(self, port: int | None, *, tls: bool = False) -> None:
        with self._lock:
            self._port = port
            self._scheme = "https" if tls else "http"

    def _connection_opened(self) -> None:
        with self._lock:
            self._open += 1
            self._connections_total += 1

    def _connection_closed(self) -> None:
        with self._lock:
            self._open -= 1

    def _next_request(self) -> int:
        """Count a request and return its number (from 1)."""
        with self._lock:
            self._requests_total += 1
            return self._requests_total

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self._default

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def _note_error(self, error: BaseException) -> None:
        # Task groups wrap what their tasks raise: keep the real exceptions.
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                self._note_error(inner)
            return
        with self._lock:
            self._errors.append(f"{type(error).__name__}: {error}")
