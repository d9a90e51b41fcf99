"""The provider-neutral values the wire layer speaks in.

A :class:`ChatRequest` goes in, an :class:`HttpRequest` comes out; bytes go in,
:class:`Chunk` values (or one :class:`ChatResponse`) come out. Every type here
is a frozen msgspec Struct so it can be compared in tests, hashed where it
holds no mapping, and encoded into traces.
"""

from __future__ import annotations

from typing import Any

import msgspec

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = (
    "AssistantMessage",
    "ChatRequest",
    "ChatResponse",
    "Chunk",
    "HttpRequest",
    "Message",
    "SystemMessage",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
)

# Header names whose values are credentials; HttpRequest hides them in its repr.
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key"})


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A complete tool call the model made, as it is sent back in history."""

    id: str
    name: str
    #: The arguments as JSON text, exactly as the model produced them.
    arguments: str = "{}"


class SystemMessage(msgspec.Struct, frozen=True, kw_only=True, tag="system"):
    content: str


class UserMessage(msgspec.Struct, frozen=True, kw_only=True, tag="user"):
    content: str


class AssistantMessage(msgspec.Struct, frozen=True, kw_only=True, tag="assistant"):
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class ToolResultMessage(msgspec.Struct, frozen=True, kw_only=True, tag="tool"):
    """The result of one tool call, answering the call with ``tool_call_id``."""

    tool_call_id: str
    content: str
    #: The tool's name. Gemini needs it; when empty it is looked up from the
    #: assistant message that made the call.
    name: str = ""
    is_error: bool = False


Message = SystemMessage | UserMessage | AssistantMessage | ToolResultMessage


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    """A function the model may call. ``parameters`` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A chat request that any provider can serve.

    The generation parameters here are the caller's; the settings merge of
    reference section 9 may override temperature, max tokens and streaming for
    a given backend. ``extras`` are raw body fields keyed by provider name
    (``{"openai": {"seed": 7}}``), so an extra meant for one provider can never
    reach another's body.
    """

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    stream: bool = True
    extras: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens an attempt consumed, as the backend reported them."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


class ToolCallDelta(msgspec.Struct, frozen=True, kw_only=True):
    """A piece of a tool call being streamed.

    ``index`` numbers the tool calls of one answer from 0, whatever the
    provider's own numbering; ``id`` and ``name`` arrive once, ``arguments``
    arrive as JSON text fragments to be concatenated.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """One meaningful piece of a streamed answer.

    Keep-alives (comments, pings) and headers without content never become
    chunks. ``usage`` is the running total whenever the event that produced
    this chunk reported usage, and None otherwise.
    """

    text: str = ""
    #: Reasoning ("thinking") text, for backends that stream it separately.
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    #: Normalised: "stop", "length", "tool_calls", "content_filter", or the
    #: provider's own value lower-cased when it has no neutral equivalent.
    finish_reason: str | None = None
    usage: Usage | None = None


class ChatResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A complete, non-streamed answer."""

    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Exactly what to send to a backend. The transport adds nothing."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: Whether the answer is a server-sent-events stream.
    stream: bool
    #: Strings to redact from anything the backend echoes back (the credential).
    secrets: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def __repr__(self) -> str:
        shown = tuple(
            (key, "<redacted>" if key.lower() in SECRET_HEADERS else value)
            for key, value in self.headers
        )
        return (
            f"HttpRequest(method={self.method!r}, url={self.url!r}, headers={shown!r}, "
            f"body=<{len(self.body)} bytes>, stream={self.stream!r}, "
            f"secrets=<{len(self.secrets)} redacted>)"
        )

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # msgspec's default rich repr would print the header values and secrets.
        return [("method", self.method), ("url", self.url), ("stream", self.stream)]
