"""Where a backend's API key comes from, and reading it without ever showing it.

Reading a key file or an environment variable is the only I/O this layer
does, and it happens once per built request, in :func:`resolve_credential`.
The environment and the file reader can be injected, which is how the tests
stay hermetic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from lbcore import FailureKind, clean_text

from ._errors import WireError, failure

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("CredentialSource", "resolve_credential")


class CredentialSource(msgspec.Struct, frozen=True, kw_only=True):
    """One of: an inline ``key``, a ``key_file`` path, or an ``env`` variable name.

    When several are set the first non-empty one in that order is used, like
    the reference's ``auth-key`` before ``auth-key-name`` before ``auth-keyfile``.
    None at all means the backend needs no key (a local llama.cpp, Ollama...).
    The inline key never appears in a repr.
    """

    key: str | None = None
    key_file: str | None = None
    env: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.key or self.key_file or self.env)

    def __repr__(self) -> str:
        key = "<redacted>" if self.key else None
        return f"CredentialSource(key={key}, key_file={self.key_file!r}, env={self.env!r})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        key = "<redacted>" if self.key else None
        return [("key", key), ("key_file", self.key_file), ("env", self.env)]


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _setup_failure(backend: str, what: str) -> WireError:
    return WireError(failure(FailureKind.SETUP, f'Backend "{clean_text(backend, 64)}": {what}'))


#: The control characters a key must not hold (C0 and DEL).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _header_safe(key: str, backend: str, source: str) -> str:
    # The key goes into a header, where a line break would split it or inject
    # another header; a key file holding two lines is the usual way to get one.
    # One search, not a loop over the key's characters: it runs per attempt.
    if _CONTROL.search(key):
        raise _setup_failure(backend, f"the key from {source} contains control characters")
    return key


def resolve_credential(
    source: CredentialSource,
    backend: str,
    *,
    environ: Mapping[str, str] | None = None,
    read_text: Callable[[Path], str] = _read_text,
) -> str | None:
    """The key ``source`` names, trimmed, or None when no key is configured.

    Raises:
        WireError: a setup failure naming ``backend`` when a configured source
            yields no key (variable unset, file missing, unreadable or empty)
            or one with control characters, which no header can carry.
            The message names the variable or file, never the key.
    """
    if source.key and source.key.strip():
        return _header_safe(source.key.strip(), backend, "the inline key")
    if source.env:
        value = (os.environ if environ is None else environ).get(source.env, "").strip()
        if not value:
            raise _setup_failure(backend, f"environment variable {source.env} is not set or empty")
        return _header_safe(value, backend, f"environment variable {source.env}")
    if source.key_file:
        try:
            # expanduser raises RuntimeError when the home directory is unknown.
            value = read_text(Path(source.key_file).expanduser()).strip()
        except (OSError, UnicodeDecodeError, ValueError, RuntimeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise _setup_failure(
                backend, f"cannot read key file {source.key_file} ({reason})"
            ) from None
        if not value:
            raise _setup_failure(backend, f"key file {source.key_file} is empty")
        return _header_safe(value, backend, f"key file {source.key_file}")
    if source.configured:
        # An inline key made only of whitespace.
        raise _setup_failure(backend, "the configured API key is empty")
    return None
