"""What the blocking and the async client share: everything but waiting and HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from lbcore import (
    BackendState,
    Balancer,
    CompressPrompt,
    ConfigError,
    Failure,
    FailureKind,
    Stats,
    clean_text,
)

from ._config import ClientConfig
from ._errors import BackendError, ClientClosedError
from ._link import CoreLink
from ._observers import Observer, Observers
from ._reader import AttemptReader, Failed
from ._run import Attempt, RequestRun
from ._tracefile import TraceTarget, open_trace
from .wire import (
    ChatRequest,
    WireError,
    build_request,
    estimate_tokens,
    redact,
    resolve_credential,
)

if TYPE_CHECKING:
    from ._shared_redis import RedisShare

__all__ = ("CLIENT_HEADERS", "ClientBase", "CompressHook")

#: ``compress(request, backend, limit)``: a shorter request for ``backend``, whose
#: context limit (in the wire layer's estimate of tokens) is ``limit``. The async
#: client also accepts a coroutine function.
CompressHook = Callable[[ChatRequest, str, int], object]

#: What both clients add to the wire layer's headers. Identity encoding asks for
#: the bytes as sent: compression would hold events back in a decompressor.
CLIENT_HEADERS: Final = (("User-Agent", "lbcore"), ("Accept-Encoding", "identity"))


class ClientBase:
    """A client's core link, trace file and request bookkeeping."""

    def __init__(
        self,
        config: ClientConfig,
        trace: TraceTarget | None,
        *,
        compress: CompressHook | None = None,
        observers: Iterable[Observer] | Observers = (),
    ) -> None:
        if not isinstance(config, ClientConfig):
            raise TypeError(f"config must be a ClientConfig, got {type(config).__name__}")
        if compress is not None and not callable(compress):
            raise TypeError(f"compress must be callable, got {type(compress).__name__}")
        if compress is None and config.balancer.settings.context_compression:
            # The core would ask for a shrink nobody can make.
            raise ConfigError(
                "settings.context_compression: needs a compress hook "
                "(Client(config, compress=...) turns it on by itself)"
            )
        self.config = config
        self._compress_hook = compress
        self._observers = observers if isinstance(observers, Observers) else Observers(observers)
        self._trace, self._owns_trace = open_trace(trace)
        self._link = CoreLink(
            config,
            trace=self._trace,
            compressing=compress is not None,
            observers=self._observers,
        )
        self._closed = False
        #: Backend name -> the client of the nested balancer it is (made on first use).
        self._inner: dict[str, ClientBase] = {}
        self._share = self._start_sharing(config)

    def _start_sharing(self, config: ClientConfig) -> RedisShare | None:
        """With ``shared_state``, the carrier's threads start here (spec §26.6)."""
        shared = config.shared_state
        if shared is None:
            return None
        # Imported here: redis is the optional `shared` extra.
        from ._shared_redis import RedisShare

        settings = config.balancer.settings
        share = RedisShare(
            shared,
            self._link.peer,
            tuple(b.name for b in config.balancer.backends),
            settings.circuit_breaker_recovery_timeout_ms,
        )
        self._link.attach_outlet(share.offer)
        share.start()
        return share

    def stats(self) -> Stats:
        """The core's statistics: requests per backend, breakers, latency, tokens."""
        return self._link.stats()

    def reset_stats(self) -> None:
        """Clear the request counters (a ``StatsReset`` event, so traces still replay)."""
        self._link.reset_stats()

    def current_failover_index(self) -> int:
        """Where the next failover request starts its rotation (the sticky index)."""
        return self._link.read(Balancer.current_failover_index)

    def reset_failover_index(self) -> None:
        """Start the next failover rotation at the first backend again (traced, so it replays)."""
        self._link.reset_failover_index()

    def last_selected(self) -> str | None:
        """The backend of the latest attempt, or None."""
        return self._link.read(Balancer.last_selected)

    def backend_states(self) -> tuple[BackendState, ...]:
        """Each backend's breaker state, cooldown, TPM and slots, in config order."""
        return self._link.read(Balancer.backend_states)

    def observe(self, callback: Observer) -> None:
        """Call ``callback`` with each decision from now on (see :class:`Observation`)."""
        self._observers.add(callback)

    def __repr__(self) -> str:
        names = [target.name for target in self.config.targets]
        strategy = self.config.balancer.strategy
        return f"{type(self).__name__}(strategy={strategy!r}, backends={names!r})"

    def _start(
        self, request: ChatRequest, request_id: str | None, attempt_budget: int | None
    ) -> RequestRun:
        # The request starts in the core when its stream is first iterated, so
        # a caller who iterates late is not charged a first-chunk timeout.
        self._check_open()
        run = RequestRun(request_id=request_id or "", chat=request, attempt_budget=attempt_budget)
        self._link.name(run)
        return run

    def _connections_for(self, backend: str, default: int, *, closing: bool = False) -> int:
        """How many connections to ``backend`` to allow: from its ``max_concurrent`` when set.

        The core never has more attempts in flight there, so a request never
        waits in a pool the core cannot see; without a limit, ``default``.
        ``closing``: the pool also counts connections still being closed by
        attempts the core already saw end (their slot went to the next request
        at once), so it allows twice the limit.
        """
        balancer = self.config.balancer
        for spec in balancer.backends:
            if spec.name == backend:
                limit = spec.max_concurrent
                if limit is None:
                    limit = balancer.settings.max_concurrent
                if limit is None:
                    return default
                return 2 * limit if closing else limit
        return default

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this client is closed")

    def _prepare(self, run: RequestRun, attempt: Attempt) -> AttemptReader | None:
        """Build ``attempt``'s HTTP request; None (reported to the core) if it cannot be."""
        try:
            attempt.http = build_request(
                attempt.target,
                run.request_for(attempt.backend),
                lb_settings=self.config.settings,
                lb_model_params=self.config.model_params,
            )
        except WireError as error:
            self._link.finish(run, attempt, Failed(error.failure))
            return None
        unsendable = _unsendable_header(attempt.http.headers)
        if unsendable is not None:
            message = (
                f'Backend "{clean_text(attempt.backend, 64)}": the {unsendable} header '
                "holds characters HTTP headers cannot carry (not Latin-1)"
            )
            failure = Failure(kind=FailureKind.SETUP, message=message)
            self._link.finish(run, attempt, Failed(failure))
            return None
        return AttemptReader(
            attempt.target.provider, attempt.http, keep_events=run.upstream is not None
        )

    def _inner_client(self, backend: str) -> ClientBase | None:
        """The client of the nested balancer ``backend`` is, or None for a plain backend.

        Of this client's own kind, sharing its observers and compress hook; it
        keeps its own breakers and sticky index, as the reference's nested
        provider does, and records no trace of its own.
        """
        config = self.config.nested.get(backend)
        if config is None:
            return None
        inner = self._inner.get(backend)
        if inner is None:
            self._check_open()
            inner = self._inner[backend] = self._nested_client(config)
        return inner

    def _nested_client(self, config: ClientConfig) -> ClientBase:
        raise NotImplementedError

    def _caller_error(self, run: RequestRun) -> BaseException:
        """What the caller gets for a failed ``run``: a nested balancer's own
        exception when it ended the request (reference section 3.4), else the error."""
        error = run.error
        assert error is not None
        nested = run.nested_error
        if (
            nested is not None
            and isinstance(error, BackendError)
            and error.backend in self.config.nested
        ):
            return nested
        return error

    def _shrunk(self, run: RequestRun, ask: CompressPrompt, result: object) -> None:
        """Re-estimate what the hook returned for ``ask.backend`` and tell the core."""
        if not isinstance(result, ChatRequest):
            self._link.compressed(
                run, None, f"the hook returned {type(result).__name__}, not a ChatRequest"
            )
            return
        target = self.config.target(ask.backend)
        run.compressed[ask.backend] = result
        self._link.compressed(run, estimate_tokens(target, result).tokens, None)

    def _hook_failed(self, run: RequestRun, error: Exception) -> None:
        # The hook's text goes into the trace, the caller's error and observations:
        # the backends' keys and anything shaped like a key are masked first.
        cause = clean_text(redact(str(error), self._known_keys()), 200) or type(error).__name__
        self._link.compressed(run, None, cause)

    def _known_keys(self) -> tuple[str, ...]:
        """Every backend key that resolves now (a source that fails to resolve holds none)."""
        keys = []
        for target in self.config.targets:
            try:
                key = resolve_credential(target.credential, target.name)
            except WireError:
                continue
            if key:
                keys.append(key)
        return tuple(keys)

    def _close_trace(self) -> None:
        self._closed = True
        if self._share is not None:
            self._share.stop()
        if self._owns_trace and self._trace is not None:
            self._link.close_trace(self._trace)


def _unsendable_header(headers: tuple[tuple[str, str], ...]) -> str | None:
    """The name of the first header HTTP/1.1 cannot carry, if any.

    Both HTTP libraries encode headers as Latin-1 and would raise an encoding
    error holding the whole value (a key pasted with a typographic character,
    say) to the caller; the value itself is never named.
    """
    for name, value in headers:
        try:
            name.encode("latin-1")
            value.encode("latin-1")
        except UnicodeEncodeError:
            return clean_text(name.lower(), 64)
    return None
