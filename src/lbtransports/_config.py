"""What a client needs: the core's configuration plus, per backend, where and how to reach it.

The core's :class:`lbcore.BalancerConfig` holds no URL and no credential by
design; :class:`ClientConfig` pairs it with one :class:`BackendTarget` per
backend, the load balancer's own request settings, and the transport's
timeouts. Build it from a plain mapping with :meth:`ClientConfig.from_mapping`,
or from a profile directory with :func:`lbtransports.load_profile`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from lbcore import BackendSpec, BalancerConfig, ConfigError, Settings, clean_text, truncate

from ._shared_config import DEFAULT_PREFIX, SharedState
from ._tls import check_ca_file
from .wire import BackendTarget, CredentialSource, redact_settings

# Everything in __all__ is re-exported by lbtransports.
__all__ = ("ClientConfig",)

#: How long opening a connection (TCP and TLS) may take; sending is not bounded by it.
DEFAULT_CONNECT_TIMEOUT_MS: Final = 10_000
#: The longest wait for progress: the backend taking the next piece of the request,
#: or the next decoded chunk of its answer. Keep-alive comments and other bytes that
#: complete no chunk do not count: see spec/transports.md section 4.
DEFAULT_IDLE_TIMEOUT_MS: Final = 300_000
#: The provider of a backend that is itself a load balancer (reference section 3.4).
NESTED_PROVIDER: Final = "load-balancer"


def _name(text: str) -> str:
    return clean_text(text, 64)


class _BackendShape(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One entry of ``backends`` in :meth:`ClientConfig.from_mapping`."""

    name: str
    provider: str
    model: str = ""
    base_url: str | None = None
    credential: CredentialSource = msgspec.field(default_factory=CredentialSource)
    context_window: int | None = None
    #: Attempts in flight allowed on this backend (the core's BackendSpec.max_concurrent).
    max_concurrent: int | None = None
    #: Its share under weighted-round-robin (the core's BackendSpec.weight).
    weight: int = 1
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    model_params: dict[str, Any] = msgspec.field(default_factory=dict)
    #: A nested load balancer, in this same mapping shape (provider "load-balancer").
    balancer: dict[str, Any] | None = None


class _ConfigShape(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    strategy: str
    backends: list[_BackendShape]
    profile_name: str = "load-balancer"
    context_limit: int | None = None
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    model_params: dict[str, Any] = msgspec.field(default_factory=dict)
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    #: A Redis URL: share breakers, TPM and cooldowns with other processes (spec §26).
    shared_state: str | None = None
    shared_prefix: str = DEFAULT_PREFIX
    #: A PEM bundle of the authorities https backends are verified against.
    ca_file: str | None = None


def _check_base_url(backend: str, url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = truncate(repr(url), 60)
        raise ConfigError(
            f'backends["{_name(backend)}"].base_url: must be an http:// or https:// URL '
            f"with a host, got {shown}"
        )
    if parts.username or parts.password:
        # A key in the URL would be shown wherever the URL is (traces, errors).
        raise ConfigError(
            f'backends["{_name(backend)}"].base_url: must not carry a user or password; '
            "use credential instead"
        )


class ClientConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The core's config, one target per backend, and the transport's knobs."""

    balancer: BalancerConfig
    #: One per backend of ``balancer``, in the same order, with the same names.
    targets: tuple[BackendTarget, ...]
    #: The load balancer's ephemeral settings: routing keys and request settings
    #: alike. They win over each backend's own (reference section 9.1).
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The load balancer's model parameters; they win over each backend's own.
    model_params: dict[str, Any] = msgspec.field(default_factory=dict)
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    #: Backend name -> the config of the load balancer that backend is (its
    #: provider is ``"load-balancer"``); the client sends that backend's
    #: attempts through a client of its own over this config.
    nested: dict[str, ClientConfig] = msgspec.field(default_factory=dict)
    #: Where to share backend state with other processes; None keeps it local.
    shared_state: SharedState | None = None
    #: A PEM bundle of certificate authorities: https backends are verified
    #: against it instead of the default store (a private CA). None: the default.
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.balancer, BalancerConfig):
            raise ConfigError("balancer: must be a BalancerConfig")
        targets = self.targets
        if isinstance(targets, list):
            targets = tuple(targets)
            msgspec.structs.force_setattr(self, "targets", targets)
        if not isinstance(targets, tuple) or not all(isinstance(t, BackendTarget) for t in targets):
            raise ConfigError("targets: must be a sequence of BackendTarget")
        specs = self.balancer.backends
        if [t.name for t in targets] != [s.name for s in specs]:
            raise ConfigError(
                "targets: must name the balancer's backends in the same order, "
                f"expected {[s.name for s in specs]}, got {[t.name for t in targets]}"
            )
        for spec, target in zip(specs, targets, strict=True):
            if (spec.provider, spec.model) != (target.provider, target.model):
                raise ConfigError(
                    f'targets["{_name(spec.name)}"]: provider and model must match the '
                    f"balancer's ({spec.provider!r}, {spec.model!r}), "
                    f"got ({target.provider!r}, {target.model!r})"
                )
            _check_base_url(target.name, target.base_url)
        _check_nested(specs, self.nested)
        shared = self.shared_state
        if shared is not None:
            if not isinstance(shared, SharedState):
                raise ConfigError("shared_state: must be a SharedState or None")
            if not self.balancer.settings.peer_sharing:
                raise ConfigError(
                    "shared_state: needs settings.peer_sharing = true (from_mapping sets it)"
                )
        check_ca_file(self.ca_file)
        for field in ("connect_timeout_ms", "idle_timeout_ms"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"{field}: must be an integer >= 1, got {truncate(repr(value), 60)}"
                )

    def target(self, name: str) -> BackendTarget:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ClientConfig:
        """Build a config from plain data, as read from JSON, TOML or YAML.

        ``{"strategy": ..., "backends": [{"name", "provider", "model",
        "base_url", "credential": {"env": "OPENAI_API_KEY"}, ...}], "settings":
        {...}}``. Every broken rule raises :class:`lbcore.ConfigError` naming
        the field.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"config: must be a mapping, got {truncate(repr(mapping), 60)}")
        try:
            shape = msgspec.convert(dict(mapping), _ConfigShape, str_keys=True)
        except msgspec.ValidationError as error:
            # msgspec names the path ("at `$.backends[0].name`"); no value is echoed.
            raise ConfigError(f"config: {error}") from None
        ca_file = os.path.expanduser(shape.ca_file) if shape.ca_file else shape.ca_file
        # A nested balancer trusts what its parent trusts unless it names its own.
        nested = {
            b.name: _nested_config(b.name, {"ca_file": ca_file, **b.balancer})
            for b in shape.backends
            if b.balancer is not None
        }
        shared = (
            SharedState(url=shape.shared_state, prefix=shape.shared_prefix)
            if shape.shared_state is not None
            else None
        )
        routing = dict(shape.settings)
        if shared is not None:
            routing["peer_sharing"] = True
        backends = tuple(
            BackendSpec(
                name=b.name,
                provider=b.provider,
                # A nested balancer's model, unless given, is what it would use first.
                model=b.model
                or (nested[b.name].balancer.backends[0].model if b.name in nested else ""),
                context_window=b.context_window,
                max_concurrent=b.max_concurrent,
                weight=b.weight,
            )
            for b in shape.backends
        )
        return cls(
            balancer=BalancerConfig(
                strategy=shape.strategy,
                backends=backends,
                profile_name=shape.profile_name,
                settings=Settings.from_mapping(routing),
                context_limit=shape.context_limit,
            ),
            targets=tuple(
                BackendTarget(
                    name=b.name,
                    provider=b.provider,
                    model=b.model
                    or (nested[b.name].balancer.backends[0].model if b.name in nested else ""),
                    base_url=b.base_url,
                    credential=b.credential,
                    ephemeral_settings=b.settings,
                    model_params=b.model_params,
                )
                for b in shape.backends
            ),
            settings=shape.settings,
            model_params=shape.model_params,
            connect_timeout_ms=shape.connect_timeout_ms,
            idle_timeout_ms=shape.idle_timeout_ms,
            nested=nested,
            shared_state=shared,
            ca_file=ca_file,
        )

    def shared(self, state: SharedState) -> ClientConfig:
        """This config sharing its backends' state through ``state`` (spec §26.6)."""
        balancer = self.balancer
        settings = msgspec.structs.replace(balancer.settings, peer_sharing=True)
        return msgspec.structs.replace(
            self, balancer=msgspec.structs.replace(balancer, settings=settings), shared_state=state
        )

    def __repr__(self) -> str:
        return (
            f"ClientConfig(strategy={self.balancer.strategy!r}, targets={list(self.targets)!r}, "
            f"settings={redact_settings(self.settings)!r}, "
            f"model_params={redact_settings(self.model_params)!r}, "
            f"connect_timeout_ms={self.connect_timeout_ms}, idle_timeout_ms={self.idle_timeout_ms}"
            + (f", shared_state={self.shared_state!r}" if self.shared_state is not None else "")
            + (f", ca_file={self.ca_file!r})" if self.ca_file is not None else ")")
        )


def _nested_config(name: str, mapping: dict[str, Any]) -> ClientConfig:
    try:
        return ClientConfig.from_mapping(mapping)
    except ConfigError as error:
        raise ConfigError(f'backends["{_name(name)}"].balancer: {error}') from None


def _check_nested(specs: tuple[BackendSpec, ...], nested: Mapping[str, ClientConfig]) -> None:
    """Every "load-balancer" backend has its nested config, and only those do."""
    if not isinstance(nested, Mapping):
        raise ConfigError("nested: must map backend names to ClientConfig")
    by_name = {spec.name: spec for spec in specs}
    for name, inner in nested.items():
        spec = by_name.get(name)
        if spec is None or spec.provider != NESTED_PROVIDER:
            raise ConfigError(
                f'backends["{_name(str(name))}"]: a nested balancer needs provider '
                f'"{NESTED_PROVIDER}"'
            )
        if not isinstance(inner, ClientConfig):
            raise ConfigError(f'nested["{_name(name)}"]: must be a ClientConfig')
    for spec in specs:
        if spec.provider == NESTED_PROVIDER and spec.name not in nested:
            raise ConfigError(
                f'backends["{_name(spec.name)}"]: provider "{NESTED_PROVIDER}" needs a '
                '"balancer" (the nested load balancer\'s config)'
            )
