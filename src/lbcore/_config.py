"""The balancer's configuration and its validation.

The reference quietly falls back to a default when a setting has the wrong
type. We refuse instead: every rule broken raises :class:`ConfigError` naming
the field and the rule, because a typo in ``failover_retry_count`` should not
silently turn into "2".
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ._errors import ConfigError
from ._text import clean_text, has_control_characters, truncate

# Everything in __all__ is re-exported by lbcore.
__all__ = ("BackendSpec", "Backoff", "BalancerConfig", "Settings", "Strategy")

#: Fields added after trace format 1 was fixed, with their defaults. A trace header
#: leaves a field out while it has that default, so every trace recorded before it
#: existed still encodes to the same bytes; the defaults are therefore part of the
#: format and never change. Each keeps the old behaviour, except
#: ``honour_retry_after``: on by default, it changes only decisions about failures
#: carrying a positive ``retry_after_ms`` (spec/behaviour.md §19 says why).
LATER_SETTINGS: Final[dict[str, object]] = {
    "max_concurrent": None,
    "max_queued": 1024,
    "queue_timeout_ms": None,
    "honour_retry_after": True,
    "max_retry_after_ms": 60_000,
    "retry_backoff": "fixed",
    "retry_backoff_base_ms": 100,
    "retry_backoff_cap_ms": 10_000,
    "seed": 0,
    "retry_budget_percent": None,
    "retry_budget_min": 3,
    "deadline_ms": None,
    "idle_timeout_ms": None,
    "latency_explore_percent": 5,
    "context_compression": False,
    "peer_sharing": False,
}
LATER_BACKEND_FIELDS: Final[dict[str, object]] = {"max_concurrent": None, "weight": 1}

#: The reference caps attempts per backend at this value rather than rejecting more.
MAX_ATTEMPTS_PER_BACKEND: Final = 100
_STRATEGY_ECHO_LIMIT: Final = 50
#: Prefixes of routing settings: an unknown key with one of these is a typo, not a
#: request setting, and is refused rather than silently ignored. ``lb_`` catches the
#: names the reference's docs list but its code never reads.
_ROUTING_PREFIXES: Final = (
    "failover_",
    "circuit_breaker_",
    "tpm_",
    "lb_",
    "retry_",
    "queue_",
    "latency_",
)
#: The most of the latency strategy's traffic that may explore (spec §25).
MAX_EXPLORE_PERCENT: Final = 50


class Strategy(enum.StrEnum):
    ROUND_ROBIN = "round-robin"
    FAILOVER = "failover"
    # Failover's rotation, started by a pick instead of the sticky index (spec §23-§25).
    WEIGHTED_ROUND_ROBIN = "weighted-round-robin"
    LEAST_BUSY = "least-busy"
    LATENCY = "latency"


class Backoff(enum.StrEnum):
    """How the wait before a same-backend retry grows with the attempts made there."""

    #: Always ``failover_retry_delay_ms`` (the reference's behaviour).
    FIXED = "fixed"
    #: Full jitter: a draw between 0 and ``min(cap, base * 2**(n - 1))`` for retry n.
    EXPONENTIAL = "exponential"


def _snake_case(key: str) -> str:
    """``timeoutMs`` and ``timeout-ms`` both read as ``timeout_ms``."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).replace("-", "_").lower()


def _show(value: object) -> str:
    """A short, one-line rendering of a rejected value for error messages."""
    return truncate(repr(value), 60)


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True is never a sensible retry count.
    return isinstance(value, int) and not isinstance(value, bool)


def _require_int(key: str, value: object, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < minimum:  # type: ignore[operator]
        absent = " or null" if optional else ""
        raise ConfigError(
            f"settings.{key}: must be an integer >= {minimum}{absent}, got {_show(value)}"
        )


def _require_bool(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"settings.{key}: must be true or false, got {_show(value)}")


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The failover knobs, named exactly as the reference's ephemeral settings.

    Only failover (and the strategies built on its rotation) reads them; round-robin
    ignores them all, as in
    the reference, except the concurrency limits and the total and idle
    deadlines, which bound any request. Build one from a settings mapping with :meth:`from_mapping`,
    which ignores keys that are not about routing (``temperature``...).
    """

    #: Total attempts per backend (not extra retries). Values above 100 act as 100.
    failover_retry_count: int = 2
    #: Fixed wait before retrying the same backend. None between backends.
    failover_retry_delay_ms: int = 0
    failover_on_network_errors: bool = True
    #: Statuses that allow a same-backend retry. None means 429 or any 5xx.
    failover_status_codes: tuple[int, ...] | None = None
    #: Skip a backend whose tokens per minute are above zero but below this.
    tpm_threshold: int | None = None
    #: Deadline for the first chunk of each attempt.
    timeout_ms: int | None = None
    circuit_breaker_enabled: bool = False
    circuit_breaker_failure_threshold: int = 3
    circuit_breaker_failure_window_ms: int = 60_000
    circuit_breaker_recovery_timeout_ms: int = 30_000
    # Settings added after trace format 1 (see LATER_SETTINGS): their defaults keep
    # the behaviour of the settings above, and a header leaves them out at default.
    #: Attempts in flight allowed per backend, unless its BackendSpec says otherwise.
    max_concurrent: int | None = None
    #: Requests that may wait for a free slot at once; more fail with QueueFull.
    max_queued: int = 1024
    #: How long a request may wait in the queue. None: as long as its deadline allows.
    queue_timeout_ms: int | None = None
    #: Honour a failure's Retry-After: cool the backend down and delay a retry there.
    honour_retry_after: bool = True
    #: The longest Retry-After honoured; a longer one is cut to this.
    max_retry_after_ms: int = 60_000
    retry_backoff: str = "fixed"
    retry_backoff_base_ms: int = 100
    retry_backoff_cap_ms: int = 10_000
    #: Seeds the core's own PRNG (jitter), so a trace replays byte for byte.
    seed: int = 0
    #: Retries and failovers allowed in flight, as a share of the requests in flight.
    retry_budget_percent: int | None = None
    #: Retries and failovers always allowed in flight, whatever the share.
    retry_budget_min: int = 3
    #: Total time a request may take, failovers and queueing included.
    deadline_ms: int | None = None
    #: Longest gap allowed between two chunks once the first one arrived.
    idle_timeout_ms: int | None = None
    #: The latency strategy: the share of requests (in percent) sent to another backend.
    latency_explore_percent: int = 5
    #: A prompt over a backend's limit is offered for compression (CompressPrompt)
    #: before the backend is rejected. The clients turn it on for a compress hook.
    context_compression: bool = False
    #: Share what this process learns about backends with others (spec/behaviour.md §26).
    peer_sharing: bool = False

    def __post_init__(self) -> None:
        _require_int("failover_retry_count", self.failover_retry_count, 1)
        _require_int("failover_retry_delay_ms", self.failover_retry_delay_ms, 0)
        _require_bool("failover_on_network_errors", self.failover_on_network_errors)
        codes = self.failover_status_codes
        if codes is not None:
            if not isinstance(codes, tuple | list):
                raise ConfigError(
                    "settings.failover_status_codes: must be a list of HTTP status codes or null, "
                    f"got {_show(codes)}"
                )
            for code in codes:
                if not _is_int(code) or not 100 <= code <= 599:
                    raise ConfigError(
                        "settings.failover_status_codes: every entry must be an integer "
                        f"between 100 and 599, got {_show(code)}"
                    )
            if isinstance(codes, list):
                msgspec.structs.force_setattr(self, "failover_status_codes", tuple(codes))
        _require_int("tpm_threshold", self.tpm_threshold, 1, optional=True)
        _require_int("timeout_ms", self.timeout_ms, 1, optional=True)
        _require_bool("circuit_breaker_enabled", self.circuit_breaker_enabled)
        _require_int("circuit_breaker_failure_threshold", self.circuit_breaker_failure_threshold, 1)
        _require_int("circuit_breaker_failure_window_ms", self.circuit_breaker_failure_window_ms, 1)
        _require_int(
            "circuit_breaker_recovery_timeout_ms", self.circuit_breaker_recovery_timeout_ms, 0
        )
        _require_int("max_concurrent", self.max_concurrent, 1, optional=True)
        _require_int("max_queued", self.max_queued, 0)
        _require_int("queue_timeout_ms", self.queue_timeout_ms, 1, optional=True)
        _require_bool("honour_retry_after", self.honour_retry_after)
        _require_int("max_retry_after_ms", self.max_retry_after_ms, 0)
        if self.retry_backoff not in (Backoff.FIXED, Backoff.EXPONENTIAL):
            raise ConfigError(
                'settings.retry_backoff: must be "fixed" or "exponential", '
                f"got {_show(self.retry_backoff)}"
            )
        _require_int("retry_backoff_base_ms", self.retry_backoff_base_ms, 1)
        _require_int("retry_backoff_cap_ms", self.retry_backoff_cap_ms, 1)
        if self.retry_backoff_cap_ms < self.retry_backoff_base_ms:
            raise ConfigError(
                "settings.retry_backoff_cap_ms: must be >= retry_backoff_base_ms "
                f"({self.retry_backoff_base_ms}), got {self.retry_backoff_cap_ms}"
            )
        _require_int("seed", self.seed, 0)
        if self.seed >= 2**64:
            raise ConfigError(
                f"settings.seed: must be an integer below 2**64, got {_show(self.seed)}"
            )
        percent = self.retry_budget_percent
        if percent is not None and (not _is_int(percent) or not 0 <= percent <= 100):
            raise ConfigError(
                "settings.retry_budget_percent: must be an integer between 0 and 100 or null, "
                f"got {_show(percent)}"
            )
        _require_int("retry_budget_min", self.retry_budget_min, 0)
        _require_int("deadline_ms", self.deadline_ms, 1, optional=True)
        _require_int("idle_timeout_ms", self.idle_timeout_ms, 1, optional=True)
        explore = self.latency_explore_percent
        if not _is_int(explore) or not 0 <= explore <= MAX_EXPLORE_PERCENT:
            raise ConfigError(
                "settings.latency_explore_percent: must be an integer between 0 and "
                f"{MAX_EXPLORE_PERCENT}, got {_show(explore)}"
            )
        _require_bool("context_compression", self.context_compression)
        _require_bool("peer_sharing", self.peer_sharing)

    @property
    def attempts_per_backend(self) -> int:
        return min(self.failover_retry_count, MAX_ATTEMPTS_PER_BACKEND)

    @classmethod
    def _refuse_lookalike(cls, key: str) -> None:
        """Refuse a key that is clearly meant as a routing setting but is not one.

        ``timeout-ms``, ``timeoutMs`` or ``failover_retry_cout`` would
        otherwise be ignored like ``temperature``, and the knob would
        silently do nothing.
        """
        spelled = _snake_case(key)
        if spelled in cls.__struct_fields__:
            raise ConfigError(f"settings.{key}: unknown routing setting; did you mean {spelled!r}?")
        if spelled.startswith(_ROUTING_PREFIXES):
            close = difflib.get_close_matches(spelled, cls.__struct_fields__, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"settings.{key}: unknown routing setting{hint}")

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> Settings:
        """Pick the routing keys out of a profile's ephemeral settings.

        Keys this class does not know are left alone: the same mapping also
        carries request settings such as ``temperature`` for the transports.
        """
        if not isinstance(settings, Mapping):
            raise ConfigError(f"settings: must be a mapping, got {_show(settings)}")
        for key in settings:
            if isinstance(key, str) and key not in cls.__struct_fields__:
                cls._refuse_lookalike(key)
        known = {name: settings[name] for name in cls.__struct_fields__ if name in settings}
        return cls(**known)


class BackendSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the core knows of a backend. Credentials and URLs belong to the transports."""

    name: str
    provider: str
    model: str = ""
    #: The model's context window in tokens, when known.
    context_window: int | None = None
    #: Attempts in flight allowed on this backend; None takes ``settings.max_concurrent``.
    #: Added after trace format 1: a header leaves it out when it is None.
    max_concurrent: int | None = None
    #: Its share under weighted-round-robin; 0 drains it. Added after trace format 1:
    #: a header leaves it out when it is 1.
    weight: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError('Each backend must have a valid "name" field (non-empty string)')
        # Names print in messages and traces: " a" would show as a twin of "a".
        if self.name != self.name.strip():
            raise ConfigError(
                f"backends[].name: must not start or end with whitespace, got {_show(self.name)}"
            )
        if has_control_characters(self.name):
            raise ConfigError(
                f"backends[].name: must not contain control characters, got {_show(self.name)}"
            )
        if not isinstance(self.provider, str) or not self.provider.strip():
            raise ConfigError(
                f'Backend "{clean_text(self.name, 64)}" must have a valid "provider" field '
                "(non-empty string)"
            )
        if not isinstance(self.model, str):
            raise ConfigError(f'Backend "{clean_text(self.name, 64)}": model must be a string')
        window = self.context_window
        if window is not None and (not _is_int(window) or window < 1):
            raise ConfigError(
                f'Backend "{clean_text(self.name, 64)}": context_window must be an integer >= 1 '
                f"or null, got {_show(window)}"
            )
        limit = self.max_concurrent
        if limit is not None and (not _is_int(limit) or limit < 1):
            raise ConfigError(
                f'Backend "{clean_text(self.name, 64)}": max_concurrent must be an integer >= 1 '
                f"or null, got {_show(limit)}"
            )
        if not _is_int(self.weight) or self.weight < 0:
            raise ConfigError(
                f'Backend "{clean_text(self.name, 64)}": weight must be an integer >= 0, '
                f"got {_show(self.weight)}"
            )


def _strategy_error(strategy: object) -> ConfigError:
    if isinstance(strategy, str):
        shown = strategy[:_STRATEGY_ECHO_LIMIT]
        for control in "\r\n\t":
            shown = shown.replace(control, " ")
    else:
        shown = "<non-string>"
    supported = ", ".join(f'"{s.value}"' for s in Strategy)
    return ConfigError(f'Invalid strategy "{shown}". Supported: {supported}.')


_STRATEGIES: Final = frozenset(s.value for s in Strategy)


def _check_weights(strategy: str, backends: tuple[BackendSpec, ...] | list[BackendSpec]) -> None:
    """Weights mean something only to weighted-round-robin, which needs one above 0."""
    if strategy == Strategy.WEIGHTED_ROUND_ROBIN:
        if not any(backend.weight > 0 for backend in backends):
            raise ConfigError(
                "backends[].weight: weighted-round-robin needs a backend with weight >= 1, "
                "every weight is 0"
            )
        return
    for backend in backends:
        if backend.weight != 1:
            raise ConfigError(
                f'Backend "{clean_text(backend.name, 64)}": weight is read only by '
                f'"weighted-round-robin", not by "{strategy}"; leave it at 1'
            )


class BalancerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the core needs to decide. It holds no credential by design."""

    strategy: str
    backends: tuple[BackendSpec, ...]
    profile_name: str = "load-balancer"
    settings: Settings = msgspec.field(default_factory=Settings)
    #: The shared context limit, overriding the smallest backend window.
    context_limit: int | None = None

    def __post_init__(self) -> None:
        # Checked in the reference's order (backends, strategy, failover size, then
        # each backend). Name and provider are checked earlier still, when each
        # BackendSpec is built.
        backends = self.backends
        if not isinstance(backends, tuple | list):
            # A string or a generator is not "no backend": say what was given.
            given = type(backends).__name__
            shown = f": {_show(backends)}" if isinstance(backends, str) else ""
            raise ConfigError(
                f"backends: must be a tuple or list of BackendSpec, got a {given}{shown}"
            )
        if not backends:
            raise ConfigError("Balancer requires at least one backend in configuration")
        if self.strategy not in _STRATEGIES:
            raise _strategy_error(self.strategy)
        if self.strategy == Strategy.FAILOVER and len(backends) < 2:
            raise ConfigError(
                "Failover strategy requires at least 2 backends (minimum 2 backends for failover)"
            )
        seen: set[str] = set()
        for backend in backends:
            if not isinstance(backend, BackendSpec):
                raise ConfigError(
                    f"backends: every entry must be a BackendSpec, got {_show(backend)}"
                )
            if backend.name in seen:
                raise ConfigError(
                    f'backends: duplicate backend name "{clean_text(backend.name, 64)}"; '
                    "names must be unique"
                )
            seen.add(backend.name)
        _check_weights(self.strategy, backends)
        if isinstance(backends, list):
            msgspec.structs.force_setattr(self, "backends", tuple(backends))
        if not isinstance(self.profile_name, str) or not self.profile_name.strip():
            raise ConfigError("profile_name: must be a non-empty string")
        if not isinstance(self.settings, Settings):
            raise ConfigError("settings: must be a Settings (see Settings.from_mapping)")
        limit = self.context_limit
        if limit is not None and (not _is_int(limit) or limit < 1):
            raise ConfigError(f"context_limit: must be an integer >= 1 or null, got {_show(limit)}")

    @property
    def strategy_kind(self) -> Strategy:
        return Strategy(self.strategy)

    def shared_context_limit(self) -> int | None:
        """The explicit limit, else the smallest backend window, else none."""
        if self.context_limit is not None:
            return self.context_limit
        windows = [b.context_window for b in self.backends if b.context_window is not None]
        return min(windows) if windows else None

    def target_context_limit(self, backend: BackendSpec) -> int | None:
        """The limit a request must fit on this backend: the tighter of shared and own."""
        limits = [x for x in (self.shared_context_limit(), backend.context_window) if x is not None]
        return min(limits) if limits else None
