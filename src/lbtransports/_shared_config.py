"""Where a client shares its backends' state: a Redis URL and a key prefix (spec §26.6).

The URL may hold a password, so it is never shown as given: :func:`redact_url`
is the only rendering of it that reaches a repr, a log line or an error.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from lbcore import ConfigError, clean_text, truncate

from .wire._errors import REDACTED

# Everything in __all__ is re-exported by lbtransports.
__all__ = ("SharedState",)

_SCHEMES: Final = ("redis", "rediss", "unix")
DEFAULT_PREFIX: Final = "lb"


def redact_url(url: str) -> str:
    """``url`` with any user and password replaced by ``[redacted]``; query strings dropped."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    where = f"{host}:{port}" if port is not None else host
    if parts.username or parts.password:
        where = f"{REDACTED}@{where}"
    return urlunsplit((parts.scheme, where, parts.path, "", ""))


class SharedState(msgspec.Struct, frozen=True, kw_only=True):
    """A Redis URL (``redis://[:password@]host:port/db``) and the prefix of every key."""

    url: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ConfigError("shared_state: must be a redis:// URL")
        shown = truncate(redact_url(self.url), 80)
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - parsing the port is what checks it
        except ValueError:
            raise ConfigError(f"shared_state: not a valid URL: {shown}") from None
        if parts.scheme not in _SCHEMES:
            raise ConfigError(
                f"shared_state: must be a redis://, rediss:// or unix:// URL, got {shown}"
            )
        prefix = self.prefix
        if (
            not isinstance(prefix, str)
            or not prefix
            or clean_text(prefix, 64) != prefix
            or any(c.isspace() for c in prefix)
        ):
            raise ConfigError(
                "shared_prefix: must be a non-empty string of at most 64 characters "
                f"without spaces, got {truncate(repr(prefix), 40)}"
            )

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"SharedState(url={self.shown_url!r}, prefix={self.prefix!r})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # msgspec's own would show the URL as given, password included.
        return [("url", self.shown_url), ("prefix", self.prefix)]

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))
