"""lbtransports: plugs the lbcore decision core into real HTTP backends.

Importing it has no side effects: :mod:`lbtransports.wire`, the sans-IO
provider formats, needs nothing beyond msgspec.
"""

from ._config import ClientConfig
from ._profiles import ProfileWarning, load_profile
from .wire import (
    BackendTarget,
    ChatRequest,
    ChatResponse,
    Chunk,
    CredentialSource,
    HttpRequest,
    Provider,
    StreamDecoder,
    Usage,
    WireError,
    build_request,
    estimate_tokens,
    parse_error,
    parse_response,
    stream_decoder,
)

__all__ = (
    "BackendTarget",
    "ChatRequest",
    "ChatResponse",
    "Chunk",
    "ClientConfig",
    "CredentialSource",
    "HttpRequest",
    "ProfileWarning",
    "Provider",
    "StreamDecoder",
    "Usage",
    "WireError",
    "build_request",
    "estimate_tokens",
    "load_profile",
    "parse_error",
    "parse_response",
    "stream_decoder",
)
