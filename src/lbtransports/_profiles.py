"""Loading the reference's saved load balancer profiles into a :class:`ClientConfig`.

A profile directory holds one JSON file per profile, ``<name>.json``. A load
balancer profile lists other profiles by name; each of those describes one
backend. The format, the mapping and every message are in spec/profiles.md.

This is the only file I/O of :mod:`lbtransports` besides reading a key file,
and it reads no key: a credential is recorded as where to find it (inline,
environment variable, key file) and resolved by the wire layer per request.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from lbcore import (
    BackendSpec,
    BalancerConfig,
    ConfigError,
    Settings,
    Strategy,
    clean_text,
    truncate,
)

from ._config import (
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_IDLE_TIMEOUT_MS,
    NESTED_PROVIDER,
    ClientConfig,
    _check_base_url,
)
from .wire import BackendTarget, CredentialSource

# Everything in __all__ is re-exported by lbtransports.
__all__ = ("ProfileWarning", "load_profile")

_LB_TYPE: Final = "loadbalancer"
#: The profile's policy spelling and the core's strategy for it.
#: The reference knows the first two; the others are lbcore's own, spelt as the core spells them.
_POLICIES: Final = {
    "roundrobin": Strategy.ROUND_ROBIN.value,
    "failover": Strategy.FAILOVER.value,
    **{
        s.value: s.value
        for s in (Strategy.WEIGHTED_ROUND_ROBIN, Strategy.LEAST_BUSY, Strategy.LATENCY)
    },
}
_POLICY_HINT: Final = (
    'Must be "roundrobin", "failover", "weighted-round-robin", "least-busy" or "latency".'
)
#: Member settings that say how to reach a backend. They become the target's
#: ``base_url`` and ``credential`` and are taken out of its settings, so a key
#: is held in one place only.
_BASE_URL: Final = "base-url"
#: In the reference's precedence order, each with the CredentialSource field it fills.
_CREDENTIAL_KEYS: Final = (
    ("auth-key", "key"),
    ("auth-key-name", "env"),
    ("auth-keyfile", "key_file"),
)
_CONNECTION_KEYS: Final = frozenset({_BASE_URL, *(key for key, _ in _CREDENTIAL_KEYS)})
_ABSENT: Final = object()


class ProfileWarning(UserWarning):
    """A member profile file is missing and ``missing="warn"`` skipped it."""


def _json_type(value: object) -> str:
    """The JSON name of a value's type: messages say this rather than echo a value
    that may be a key typed into the wrong field."""
    if value is _ABSENT:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _quoted(name: str) -> str:
    return f"'{clean_text(name, 64)}'"


def _name_problem(directory: Path, name: object) -> str | None:
    """Why ``name`` cannot be a profile name, or None.

    A name is a file name inside ``directory``, never a path: it must not reach
    a parent, a sibling folder, a hidden file or another drive.
    """
    if not isinstance(name, str):
        return f"must be a string, got {_json_type(name)}"
    if not name.strip():
        return "must not be empty"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "must not contain control characters"
    # Both separators on every system, so a profile directory means the same everywhere.
    if any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep)):
        return "must not contain a path separator"
    if name.startswith("."):
        return "must not start with '.'"
    if (directory / f"{name}.json").parent != directory:
        # A Windows drive prefix ("C:name") would still leave the directory.
        return "must name a file directly inside the profile directory"
    return None


def _read_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read ({error.strerror or type(error).__name__})"
        ) from None
    problem = ""
    try:
        # utf-8-sig: a byte order mark left by an editor is not an error.
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except json.JSONDecodeError as error:
        problem = f"invalid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    except ValueError as error:
        problem = f"invalid JSON ({error})"
    except RecursionError:
        problem = "invalid JSON (nested too deeply)"
    if problem:
        # Raised outside the handler on purpose: the decode errors hold the whole
        # file (keys included) and would otherwise ride along as __context__.
        raise ConfigError(f"{path}: {problem}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object, got {_json_type(data)}")
    return data


def _refuse_constant(constant: str) -> object:
    # Python's json reads NaN and Infinity; JSON (and the reference) do not.
    raise ValueError(f"{constant} is not a JSON value")


def _is_version_1(value: object) -> bool:
    # JSON has one number type: 1.0 is 1, as in the reference; true is not.
    return not isinstance(value, bool) and isinstance(value, int | float) and value == 1


def _check_version(path: Path, data: Mapping[str, Any]) -> None:
    version = data.get("version", _ABSENT)
    if not _is_version_1(version):
        if version is _ABSENT:
            shown = "missing"
        elif isinstance(version, int | float) and not isinstance(version, bool):
            shown = truncate(repr(version), 24)
        else:
            shown = _json_type(version)
        raise ConfigError(f"{path}: unsupported profile version {shown} (expected 1)")


def _object_field(path: Path, data: Mapping[str, Any], field: str) -> dict[str, Any]:
    value = data.get(field, _ABSENT)
    if value is _ABSENT:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {field} must be a JSON object, got {_json_type(value)}")
    return dict(value)


def _positive_int(value: object) -> int | None:
    """``value`` when it is a whole number above zero; anything else reads as no limit."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return None


def _members_problem(members: object) -> str:
    """What makes ``members`` other than a non-empty list of non-empty strings."""
    if not isinstance(members, list):
        return f"profiles must be a list of profile names, got {_json_type(members)}"
    if not members:
        return "profiles is empty"
    for index, member in enumerate(members):
        if not isinstance(member, str):
            return f"profiles[{index}] must be a non-empty string, got {_json_type(member)}"
        if not member:
            return f"profiles[{index}] must be a non-empty string, got an empty one"
    return ""


@dataclass(frozen=True, slots=True)
class _LoadBalancerProfile:
    strategy: str
    members: tuple[str, ...]
    context_limit: int | None
    settings: dict[str, Any]
    model_params: dict[str, Any]
    #: Member name -> weight, for the weighted-round-robin policy.
    weights: dict[str, int]


def _weights(path: Path, data: Mapping[str, Any], members: list[str]) -> dict[str, int]:
    """The optional ``weights`` object: listed members to whole numbers >= 0."""
    weights: dict[str, int] = {}
    for member, value in _object_field(path, data, "weights").items():
        where = f"{path}: weights.{clean_text(member, 64)}"
        if member not in members:
            raise ConfigError(f"{where}: not a member of this load balancer")
        # JSON has one number type: 2.0 is 2, as for contextLimit.
        whole = isinstance(value, int | float) and not isinstance(value, bool)
        if not whole or value < 0 or value != int(value):
            shown = _json_type(value) if not whole else truncate(repr(value), 24)
            raise ConfigError(f"{where} must be a whole number >= 0, got {shown}")
        weights[member] = int(value)
    return weights


def _parse_load_balancer(
    directory: Path, path: Path, name: str, data: Mapping[str, Any]
) -> _LoadBalancerProfile:
    """The reference's checks on a load balancer profile, in its order."""
    lb = f"LoadBalancer profile {_quoted(name)}"
    kind = data.get("type", _ABSENT)
    if kind != _LB_TYPE:
        shown = f'"{clean_text(kind, 40)}"' if isinstance(kind, str) else _json_type(kind)
        raise ConfigError(
            f"{path}: profile {_quoted(name)} is not a LoadBalancer profile "
            f'(type must be "loadbalancer", got {shown})'
        )
    _check_version(path, data)

    members = data.get("profiles", _ABSENT)
    why = _members_problem(members)
    if why or not isinstance(members, list):
        # The reference's sentence, then which part of the list broke it.
        raise ConfigError(f"{path}: {lb} must reference at least one profile ({why})")

    policy = data.get("policy", _ABSENT)
    if not isinstance(policy, str) or policy not in _POLICIES:
        if isinstance(policy, str):
            shown = f'"{clean_text(policy, 50)}"'
        else:
            shown = "(missing)" if policy is _ABSENT else f"({_json_type(policy)})"
        raise ConfigError(f"{path}: Invalid policy {shown}. {_POLICY_HINT}")

    limit = data.get("contextLimit", _ABSENT)
    if limit is not _ABSENT and (isinstance(limit, bool) or not isinstance(limit, int | float)):
        raise ConfigError(f"{path}: contextLimit must be a number, got {_json_type(limit)}")
    for field in ("provider", "model"):
        value = data.get(field, _ABSENT)
        if value is not _ABSENT and not isinstance(value, str):
            raise ConfigError(f"{path}: {field} must be a string, got {_json_type(value)}")
    model_params = _object_field(path, data, "modelParams")
    settings = _object_field(path, data, "ephemeralSettings")

    seen: set[str] = set()
    for index, member in enumerate(members):
        problem = _name_problem(directory, member)
        if problem:
            raise ConfigError(
                f"{path}: profiles[{index}] {_quoted(member)}: profile name {problem}"
            )
        if member in seen:
            # The core keys breakers, metrics and traces by backend name.
            raise ConfigError(
                f"{path}: {lb} lists profile {_quoted(member)} more than once; "
                "member names must be unique"
            )
        seen.add(member)

    # The profile's own limit first, then the session's context-limit it was
    # saved with; a value that is not a positive integer means no limit.
    context_limit = _positive_int(limit)
    if context_limit is None:
        context_limit = _positive_int(settings.get("context-limit"))
    return _LoadBalancerProfile(
        strategy=_POLICIES[policy],
        members=tuple(members),
        context_limit=context_limit,
        settings=settings,
        model_params=model_params,
        weights=_weights(path, data, members),
    )


def _setting_text(path: Path, settings: Mapping[str, Any], key: str) -> str | None:
    """A connection setting as a trimmed string; blank or null reads as unset."""
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        # The reference skips such a value; we refuse it, naming only its type.
        raise ConfigError(
            f"{path}: ephemeralSettings.{key} must be a string, got {_json_type(value)}"
        )
    return value.strip() or None


def _credential(path: Path, settings: Mapping[str, Any]) -> CredentialSource:
    """The first credential setting given, in the reference's order.

    ``auth-key-name`` names a key in the reference's secure key store, which we
    do not have: here it names an environment variable (spec/profiles.md).
    """
    for key, field in _CREDENTIAL_KEYS:
        value = _setting_text(path, settings, key)
        if value is not None:
            return CredentialSource(**{field: value})
    return CredentialSource()


def _load_member(
    directory: Path, lb_path: Path, lb_name: str, member: str
) -> tuple[BackendSpec, BackendTarget] | None:
    """The backend a member profile describes, or None when its file is missing."""
    path = directory / f"{member}.json"
    data = _read_object(path)
    if data is None:
        return None
    _check_version(path, data)
    provider = data.get("provider", _ABSENT)
    if not isinstance(provider, str) or not provider.strip():
        shown = "a blank string" if isinstance(provider, str) else _json_type(provider)
        raise ConfigError(f"{path}: provider must be a non-empty string, got {shown}")
    model = data.get("model", _ABSENT)
    if not isinstance(model, str):
        raise ConfigError(f"{path}: model must be a string, got {_json_type(model)}")
    model_params = _object_field(path, data, "modelParams")
    settings = _object_field(path, data, "ephemeralSettings")

    base_url = _setting_text(path, settings, _BASE_URL)
    try:
        # ClientConfig checks this too, but would name the backend, not this file.
        _check_base_url(member, base_url)
    except ConfigError as error:
        rule = str(error).split(": ", 1)[-1]
        raise ConfigError(f"{path}: ephemeralSettings.{_BASE_URL}: {rule}") from None
    target = BackendTarget(
        name=member,
        provider=provider,
        model=model,
        base_url=base_url,
        credential=_credential(path, settings),
        ephemeral_settings={k: v for k, v in settings.items() if k not in _CONNECTION_KEYS},
        model_params=model_params,
    )
    try:
        spec = BackendSpec(name=member, provider=provider, model=model)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return spec, target


def _names(names: list[str]) -> str:
    return ", ".join(_quoted(name) for name in names)


def load_profile(
    directory: str | os.PathLike[str],
    name: str,
    *,
    missing: Literal["error", "warn"] = "error",
    connect_timeout_ms: int | None = None,
    idle_timeout_ms: int | None = None,
) -> ClientConfig:
    """Build a :class:`ClientConfig` from the load balancer profile ``<directory>/<name>.json``.

    A member that is itself a load balancer profile becomes a nested balancer:
    a backend with provider ``"load-balancer"`` and its own config in
    :attr:`ClientConfig.nested` (a cycle of such profiles is an error).

    A leading ``~`` in ``directory`` is the user's home directory.

    Each profile it lists is read from the same directory and becomes one
    backend, in the listed order. With ``missing="warn"`` a member whose file
    does not exist is skipped with a :class:`ProfileWarning` (the reference's
    issue #3574); by default it is an error, as in the reference.

    Raises:
        ConfigError: a broken rule, naming the file and the field. No message
            shows a credential.
    """
    if missing not in ("error", "warn"):
        raise ValueError(f"missing must be 'error' or 'warn', got {missing!r}")
    return _load_profile(
        directory,
        name,
        missing=missing,
        connect_timeout_ms=connect_timeout_ms,
        idle_timeout_ms=idle_timeout_ms,
        chain=(),
    )


def _load_profile(
    directory: str | os.PathLike[str],
    name: str,
    *,
    missing: Literal["error", "warn"],
    connect_timeout_ms: int | None,
    idle_timeout_ms: int | None,
    chain: tuple[str, ...],
) -> ClientConfig:
    # "~/.llxprt/profiles" is how users name the reference's profile folder.
    folder = Path(os.fspath(directory)).expanduser()
    problem = _name_problem(folder, name)
    if problem:
        shown = f" {_quoted(name)}" if isinstance(name, str) else ""
        raise ConfigError(f"profile name{shown}: {problem}")
    path = folder / f"{name}.json"
    data = _read_object(path)
    if data is None:
        raise ConfigError(f"{path}: profile {_quoted(name)} does not exist")
    profile = _parse_load_balancer(folder, path, name, data)
    lb = f"LoadBalancer profile {_quoted(name)}"
    try:
        routing = Settings.from_mapping(profile.settings)
    except ConfigError as error:
        # The core names the key as settings.<key>; in the file it sits under ephemeralSettings.
        text = str(error)
        if text.startswith("settings."):
            text = "ephemeral" + text[0].upper() + text[1:]
        raise ConfigError(f"{path}: {text}") from None

    specs: list[BackendSpec] = []
    targets: list[BackendTarget] = []
    skipped: list[str] = []
    nested: dict[str, ClientConfig] = {}
    chain = (*chain, name)
    for member in profile.members:
        member_data = _read_object(folder / f"{member}.json")
        if member_data is not None and member_data.get("type") == _LB_TYPE:
            if member in chain:
                loop = " -> ".join(_quoted(n) for n in (*chain, member))
                raise ConfigError(f"{path}: nested load balancer profiles form a cycle: {loop}")
            inner = _load_profile(
                folder,
                member,
                missing=missing,
                connect_timeout_ms=connect_timeout_ms,
                idle_timeout_ms=idle_timeout_ms,
                chain=chain,
            )
            model = inner.balancer.backends[0].model
            spec = BackendSpec(name=member, provider=NESTED_PROVIDER, model=model)
            if member in profile.weights:
                spec = msgspec.structs.replace(spec, weight=profile.weights[member])
            specs.append(spec)
            targets.append(BackendTarget(name=member, provider=NESTED_PROVIDER, model=model))
            nested[member] = inner
            continue
        backend = _load_member(folder, path, name, member)
        if backend is None:
            if missing == "error":
                raise ConfigError(
                    f"{path}: {lb} references non-existent profile {_quoted(member)} "
                    f"({folder / f'{member}.json'} not found)"
                )
            skipped.append(member)
            continue
        spec = backend[0]
        if member in profile.weights:
            spec = msgspec.structs.replace(spec, weight=profile.weights[member])
        specs.append(spec)
        targets.append(backend[1])

    if not specs:
        raise ConfigError(
            f"{path}: {lb} has no member profile that exists (missing: {_names(skipped)})"
        )
    if skipped and profile.strategy == Strategy.FAILOVER and len(specs) < 2:
        # Keep the core's rule: a failover balancer with one backend would look
        # redundant and not be. Say which members left it short.
        raise ConfigError(
            f"{path}: Failover strategy requires at least 2 backends (minimum 2 backends for "
            f"failover); {lb} has only {_names([s.name for s in specs])}, "
            f"missing: {_names(skipped)}"
        )

    try:
        balancer = BalancerConfig(
            strategy=profile.strategy,
            backends=tuple(specs),
            profile_name=name,
            settings=routing,
            context_limit=profile.context_limit,
        )
        config = ClientConfig(
            balancer=balancer,
            targets=tuple(targets),
            settings=profile.settings,
            model_params=profile.model_params,
            connect_timeout_ms=(
                DEFAULT_CONNECT_TIMEOUT_MS if connect_timeout_ms is None else connect_timeout_ms
            ),
            idle_timeout_ms=DEFAULT_IDLE_TIMEOUT_MS if idle_timeout_ms is None else idle_timeout_ms,
            nested=nested,
        )
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None

    # Only once the config stands: had it failed, the error already named the missing members.
    for member in skipped:
        warnings.warn(
            f"{lb} references non-existent profile {_quoted(member)}; going on without it "
            f"({folder / f'{member}.json'} not found)",
            ProfileWarning,
            # Attributed to load_profile's caller, through every nesting level.
            stacklevel=2 + len(chain),
        )
    return config
