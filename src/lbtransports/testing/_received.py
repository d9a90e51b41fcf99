"""The record of one request a local backend received."""

from __future__ import annotations

from typing import Any

import msgspec

from ._behaviours import Behaviour

__all__ = ("Received",)


class Received(msgspec.Struct, frozen=True, kw_only=True):
    """One request as it arrived, and what the backend did with it.

    ``headers`` keep their order and repeats, names lower-cased. ``model`` is
    the body's ``model`` (OpenAI, Anthropic) or the one in the path (Gemini),
    None when absent. ``behaviour`` is the script step that answered, None for
    a request to a path the provider does not serve (answered 404).
    """

    backend: str
    method: str
    path: str
    #: The query string without its ``?``; empty when there is none.
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    model: str | None = None
    #: Whether the request asked for a streamed answer.
    stream: bool = False
    behaviour: Behaviour | None = None

    def json(self) -> Any:
        """The body decoded as JSON. Raises ``msgspec.DecodeError`` when it is not JSON."""
        return msgspec.json.decode(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None
