"""The gateway's configuration: where it listens, its limits, its keys and its groups.

A TOML file (read with :mod:`tomllib`)::

    [gateway]
    host = "127.0.0.1"
    port = 8080
    keys = ["sha256:<hex of the key>"]   # or key_env = "LB_GATEWAY_KEYS"
    profiles_dir = "~/.llxprt/profiles"  # for groups given as profiles

    [groups.fast]                        # callers ask for model "fast"
    strategy = "failover"
    trace = "fast-trace.jsonl"           # optional
    backends = [{ name = "a", provider = "openai", model = "gpt-4o-mini",
                  credential = { env = "OPENAI_API_KEY" } }]

    [groups.lb]
    profile = "my-load-balancer"         # read by load_profile from profiles_dir

Each group table other than ``profile`` and ``trace`` is exactly what
:meth:`ClientConfig.from_mapping` reads. Every broken rule raises
:class:`lbcore.ConfigError` naming the field.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from lbcore import ConfigError, clean_text
from lbtransports._config import ClientConfig
from lbtransports._profiles import load_profile
from lbtransports._shared_config import SharedState

__all__ = (
    "GatewayConfig",
    "Group",
    "Limits",
    "for_worker",
    "hash_key",
    "is_loopback",
    "load_config",
    "share_groups",
)

_HASH_PREFIX: Final = "sha256:"


def hash_key(key: str) -> str:
    """The ``sha256:<hex>`` form a gateway key is stored in."""
    return _HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one caller may cost the gateway."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    #: From the first byte of a request (or the end of the previous one) to its last header.
    header_timeout_s: float = 10.0
    #: From the last header to the last byte of the body.
    body_timeout_s: float = 60.0
    max_connections: int = 1024
    #: On shutdown, how long answers in progress may take to finish.
    grace_period_s: float = 10.0

    def __post_init__(self) -> None:
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if isinstance(value, bool) or not value > 0:
                raise ConfigError(f"gateway.{field}: must be a number > 0, got {value!r}")


class Group(msgspec.Struct, frozen=True, kw_only=True):
    """One model name callers may ask for: a load balancer over its backends."""

    name: str
    client: ClientConfig
    trace: str | None = None


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    #: The ``sha256:<hex>`` hashes of the keys callers may present.
    key_hashes: tuple[str, ...] = ()
    #: Accept callers without a key (only on a loopback address).
    no_auth: bool = False
    limits: Limits = msgspec.field(default_factory=Limits)
    groups: tuple[Group, ...] = ()
    #: Bind with SO_REUSEPORT, so several worker processes share one port (``--workers``).
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if not self.groups:
            raise ConfigError("groups: must name at least one group of backends")
        if self.no_auth and not is_loopback(self.host):
            raise ConfigError(
                f"no_auth: refused on the non-loopback address {clean_text(self.host, 64)!r}; "
                "bind 127.0.0.1 or configure gateway keys"
            )
        if not self.no_auth and not self.key_hashes:
            raise ConfigError(
                "gateway.keys: no gateway key configured (set keys or key_env), "
                "or use no_auth on a loopback address"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"gateway.port: must be 0 to 65535, got {self.port!r}")

    def group(self, name: str) -> Group | None:
        for group in self.groups:
            if group.name == name:
                return group
        return None

    def __repr__(self) -> str:
        return (
            f"GatewayConfig(host={self.host!r}, port={self.port}, "
            f"keys=<{len(self.key_hashes)}>, no_auth={self.no_auth}, "
            f"groups={[g.name for g in self.groups]!r})"
        )


_DEFAULTS: Final = Limits()


class _GatewayShape(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    keys: list[str] = msgspec.field(default_factory=list)
    key_env: str | None = None
    no_auth: bool = False
    profiles_dir: str | None = None
    max_body_bytes: int = _DEFAULTS.max_body_bytes
    max_header_bytes: int = _DEFAULTS.max_header_bytes
    header_timeout_s: float = _DEFAULTS.header_timeout_s
    body_timeout_s: float = _DEFAULTS.body_timeout_s
    max_connections: int = _DEFAULTS.max_connections
    grace_period_s: float = _DEFAULTS.grace_period_s


_LIMIT_FIELDS: Final = tuple(Limits.__struct_fields__)


def _key_hashes(shape: _GatewayShape, environ: Mapping[str, str]) -> tuple[str, ...]:
    hashes: list[str] = []
    for index, stored in enumerate(shape.keys):
        digest = stored.removeprefix(_HASH_PREFIX)
        if not stored.startswith(_HASH_PREFIX) or len(digest) != 64 or not _is_hex(digest):
            # Never echo the value: someone may have pasted a plain key here.
            raise ConfigError(
                f"gateway.keys[{index}]: must be 'sha256:' and 64 hex digits "
                "(a hash of the key, never the key itself)"
            )
        hashes.append(_HASH_PREFIX + digest.lower())
    if shape.key_env is not None:
        raw = environ.get(shape.key_env)
        if not raw:
            raise ConfigError(
                f"gateway.key_env: the environment variable {clean_text(shape.key_env, 64)!r} "
                "is not set or empty"
            )
        # Several keys may be given, comma-separated, so one can be rotated out.
        hashes.extend(hash_key(key.strip()) for key in raw.split(",") if key.strip())
    return tuple(hashes)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _group(name: str, table: object, profiles_dir: str | None, base: Path) -> Group:
    where = f'groups["{clean_text(name, 64)}"]'
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    data = dict(table)
    trace = data.pop("trace", None)
    if trace is not None and not isinstance(trace, str):
        raise ConfigError(f"{where}.trace: must be a path (a string)")
    profile = data.pop("profile", None)
    if profile is not None:
        if data:
            raise ConfigError(f"{where}: a profile group takes only profile and trace")
        if profiles_dir is None:
            raise ConfigError(f"{where}.profile: needs gateway.profiles_dir")
        client = load_profile(_relative(profiles_dir, base), profile)
    else:
        try:
            client = ClientConfig.from_mapping(data)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
    return Group(name=name, client=client, trace=_relative(trace, base) if trace else None)


def _relative(path: str, base: Path) -> str:
    found = Path(path).expanduser()
    return str(found if found.is_absolute() else base / found)


def config_from_mapping(
    data: Mapping[str, Any],
    *,
    base: Path | None = None,
    environ: Mapping[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
    no_auth: bool | None = None,
) -> GatewayConfig:
    """Build a :class:`GatewayConfig` from plain data; the keyword arguments win over it."""
    environ = os.environ if environ is None else environ
    base = base or Path.cwd()
    unknown = set(data) - {"gateway", "groups"}
    if unknown:
        raise ConfigError(f"config: unknown table {sorted(unknown)[0]!r} (known: gateway, groups)")
    try:
        shape = msgspec.convert(data.get("gateway", {}), _GatewayShape, str_keys=True)
    except msgspec.ValidationError as error:
        raise ConfigError(f"gateway: {error}") from None
    groups = data.get("groups", {})
    if not isinstance(groups, Mapping):
        raise ConfigError("groups: must be a table of groups")
    if no_auth is not None:
        shape.no_auth = no_auth
    return GatewayConfig(
        host=host if host is not None else shape.host,
        port=port if port is not None else shape.port,
        key_hashes=() if shape.no_auth and not shape.keys else _key_hashes(shape, environ),
        no_auth=shape.no_auth,
        limits=Limits(**{field: getattr(shape, field) for field in _LIMIT_FIELDS}),
        groups=tuple(
            _group(str(name), table, shape.profiles_dir, base) for name, table in groups.items()
        ),
    )


def share_groups(config: GatewayConfig, url: str, prefix: str) -> GatewayConfig:
    """Every group sharing its state through the Redis at ``url``, under ``<prefix>:<group>``.

    So two groups never mix their backends' state, and two gateways with the
    same config and prefix share it (``lb serve --shared``).
    """
    groups = tuple(
        msgspec.structs.replace(
            group, client=group.client.shared(SharedState(url=url, prefix=f"{prefix}:{group.name}"))
        )
        for group in config.groups
    )
    return msgspec.structs.replace(config, groups=groups)


def for_worker(config: GatewayConfig, index: int) -> GatewayConfig:
    """Worker ``index``'s config (``lb serve --workers``): one port shared, one trace each.

    Worker 0 keeps the trace files as named; worker ``n`` writes ``<stem>-w<n><suffix>``,
    so no two processes ever write one file.
    """
    groups = config.groups
    if index:
        groups = tuple(
            msgspec.structs.replace(group, trace=_worker_trace(group.trace, index))
            for group in groups
        )
    return msgspec.structs.replace(config, groups=groups, reuse_port=True)


def _worker_trace(trace: str | None, index: int) -> str | None:
    if trace is None:
        return None
    path = Path(trace)
    return str(path.with_name(f"{path.stem}-w{index}{path.suffix}"))


def load_config(path: str | os.PathLike[str], **overrides: Any) -> GatewayConfig:
    """Read a gateway config from the TOML file ``path`` (relative paths in it are
    relative to the file). ``overrides``: ``host``, ``port``, ``no_auth``, ``environ``."""
    file = Path(path).expanduser()
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"config {file}: cannot be read ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {file}: not valid TOML ({error})") from None
    return config_from_mapping(data, base=file.parent, **overrides)
