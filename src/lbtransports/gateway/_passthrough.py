"""Same-format passthrough: a backend's own answer, forwarded to a caller of its format.

When the caller speaks the answering backend's format (an OpenAI caller and an
``openai`` backend, an Anthropic caller and an ``anthropic`` backend), the
gateway forwards the backend's events as they were decoded, instead of
rebuilding them from neutral chunks: fields the translator knows nothing of
(``system_fingerprint``, ``logprobs``, ``service_tier``...) arrive intact.

Only what the caller must see differently is changed:

* every ``"model"`` member names the group the caller asked for, not the
  backend's model (one regular-expression pass over events that contain it);
* a caller who did not ask for ``stream_options.include_usage`` does not get
  the usage-only chunk the gateway always asks OpenAI backends for;
* the backend's key, should it echo it, was already replaced by the reader.

The SSE framing is rewritten (``event:``/``data:`` lines ending in LF, no
comments or ``id:``), the data of each event is the backend's byte for byte.
Errors are never forwarded: an error event fails the attempt in the wire
layer, and the gateway ends the stream with its own error event.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from lbtransports import Upstream
from lbtransports.wire import SseEvent

__all__ = ("Passthrough",)

# "model" followed by a colon can only be a member name: inside a JSON string
# every quote is escaped, so content that mentions "model" never matches.
_MODEL: Final = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_MODEL_BYTES: Final = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


class _Choices(msgspec.Struct):
    choices: list[msgspec.Raw] = []


_CHOICES: Final = msgspec.json.Decoder(_Choices)


def _usage_only(data: str) -> bool:
    """Whether an OpenAI chunk is the usage-only one (``choices: []``)."""
    try:
        return not _CHOICES.decode(data).choices
    except msgspec.DecodeError:
        return False


def _is_terminator(event: SseEvent) -> bool:
    """OpenAI's ``data: [DONE]`` or Anthropic's ``message_stop`` (named, or by its type)."""
    if event.event == "message_stop":
        return True
    data = event.data
    # Inside a JSON string a quote is escaped: only a member can match.
    return data.strip() == "[DONE]" or (event.event == "message" and '"message_stop"' in data)


class Passthrough:
    """Renders one answer's upstream events (or whole body) for its caller."""

    def __init__(self, upstream: Upstream, group: str, *, drop_usage_only: bool) -> None:
        self._upstream = upstream
        # Escaped once for re.sub, which reads backslashes in a replacement.
        member = ('"model":' + msgspec.json.encode(group).decode()).replace("\\", "\\\\")
        self._model = member
        self._model_bytes = member.encode()
        self._drop_usage_only = drop_usage_only
        #: The format's last event (``data: [DONE]``, ``message_stop``) was rendered:
        #: the wire layer hands it over only once the core took the success.
        self.ended = False

    def take(self) -> bytes:
        """The events the backend sent since the last call, for the caller."""
        return self.events(self._upstream.take_events())

    def events(self, events: list[SseEvent]) -> bytes:
        out = bytearray()
        for event in events:
            data = event.data
            self.ended = self.ended or _is_terminator(event)
            if self._drop_usage_only and '"usage"' in data and _usage_only(data):
                continue
            if '"model"' in data:
                data = _MODEL.sub(self._model, data)
            if event.event != "message":
                out += b"event: " + event.event.encode() + b"\n"
            out += b"data: " + data.replace("\n", "\ndata: ").encode() + b"\n\n"
        return bytes(out)

    def whole(self) -> bytes:
        """The backend's whole answer, for the caller."""
        return _MODEL_BYTES.sub(self._model_bytes, self._upstream.body or b"")
