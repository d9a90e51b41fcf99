"""Who may use the gateway: a caller's key, checked against stored hashes in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = ("KeyRing", "presented_key")


def presented_key(headers: Sequence[tuple[str, str]]) -> str | None:
    """The key a caller sent: ``Authorization: Bearer <key>`` (OpenAI SDKs) or
    ``x-api-key: <key>`` (Anthropic SDKs). Header names are lower-case here."""
    for name, value in headers:
        if name == "x-api-key" and value:
            return value
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class KeyRing:
    """The hashes of the gateway keys; the keys themselves are never held."""

    __slots__ = ("_digests", "_open")

    def __init__(self, hashes: Sequence[str], *, open_access: bool = False) -> None:
        self._digests = tuple(bytes.fromhex(h.removeprefix("sha256:")) for h in hashes)
        self._open = open_access

    def allows(self, key: str | None) -> bool:
        if self._open:
            return True
        if key is None:
            return False
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        # Every stored hash is compared, so the time taken says nothing about which matched.
        matched = False
        for stored in self._digests:
            matched |= hmac.compare_digest(digest, stored)
        return matched

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self._digests)} keys>, open={self._open})"
