"""lbtransports.wire: the providers' wire formats, without I/O.

Turns a provider-neutral :class:`ChatRequest` into the exact
:class:`HttpRequest` for a backend, and the bytes that come back, in any
split, into neutral :class:`Chunk` values, token :class:`Usage` and typed
:class:`lbcore.Failure` values. See ``spec/wire.md``.
"""

from . import anthropic, gemini, openai
from ._credentials import CredentialSource, resolve_credential
from ._decoder import StreamDecoder
from ._errors import Headers, WireError, header_value, redact, redact_secrets, retry_after_ms
from ._providers import (
    ProviderWire,
    build_request,
    parse_error,
    parse_response,
    stream_decoder,
    wire_for,
)
from ._settings import ResolvedSettings, merge_settings
from ._sse import SseEvent, SseParser
from ._target import BackendTarget, Provider, redact_settings
from ._tokens import TokenEstimate, TokenMethod, estimate_tokens
from ._types import (
    AssistantMessage,
    ChatRequest,
    ChatResponse,
    Chunk,
    HttpRequest,
    Message,
    SystemMessage,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from ._url import shown_url, with_url_tried

__all__ = (
    "AssistantMessage",
    "BackendTarget",
    "ChatRequest",
    "ChatResponse",
    "Chunk",
    "CredentialSource",
    "Headers",
    "HttpRequest",
    "Message",
    "Provider",
    "ProviderWire",
    "ResolvedSettings",
    "SseEvent",
    "SseParser",
    "StreamDecoder",
    "SystemMessage",
    "TokenEstimate",
    "TokenMethod",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
    "WireError",
    "anthropic",
    "build_request",
    "estimate_tokens",
    "gemini",
    "header_value",
    "merge_settings",
    "openai",
    "parse_error",
    "parse_response",
    "redact",
    "redact_secrets",
    "redact_settings",
    "resolve_credential",
    "retry_after_ms",
    "shown_url",
    "stream_decoder",
    "wire_for",
    "with_url_tried",
)
