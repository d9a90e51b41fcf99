"""lbtransports: plugs the lbcore decision core into real HTTP backends.

:class:`Client` (blocking, over ``requests``) and :class:`AsyncClient` (asyncio
or trio, over ``httpcore``) carry out the core's decisions. They load on first
use, so :mod:`lbtransports.wire`, the sans-IO provider formats, still needs
nothing beyond msgspec; the clients need the ``lbcore[transports]`` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._completion import Completion
from ._config import ClientConfig
from ._errors import (
    AllBackendsUnhealthyError,
    BackendError,
    BudgetExhaustedError,
    ClientClosedError,
    CompressionError,
    ContextLimitError,
    DeadlineExceededError,
    FailoverError,
    LoadBalancerError,
    LocalSaturationError,
    QueueFullError,
    QueueTimeoutError,
    RequestInterruptedError,
    RetryBudgetError,
    StreamIdleError,
)
from ._observers import Observation, ObserverWarning
from ._profiles import ProfileWarning, load_profile
from ._shared_config import SharedState
from ._upstream import Upstream
from .wire import (
    AssistantMessage,
    BackendTarget,
    ChatRequest,
    ChatResponse,
    Chunk,
    CredentialSource,
    HttpRequest,
    Provider,
    StreamDecoder,
    SystemMessage,
    Tool,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    WireError,
    build_request,
    estimate_tokens,
    parse_error,
    parse_response,
    stream_decoder,
)

if TYPE_CHECKING:
    from ._async import AsyncChatStream, AsyncClient, PlainHttp
    from ._sync import ChatStream, Client

#: Names that need the HTTP libraries, and the module that defines each.
_CLIENTS = {
    "AsyncChatStream": "._async",
    "AsyncClient": "._async",
    "PlainHttp": "._async",
    "ChatStream": "._sync",
    "Client": "._sync",
}


def __getattr__(name: str) -> Any:
    module = _CLIENTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lbtransports' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module, __name__), name)
    except ImportError as error:
        raise ImportError(
            f"lbtransports.{name} needs the HTTP libraries: pip install 'lbcore[transports]' "
            f"({error})"
        ) from error


__all__ = (
    "AllBackendsUnhealthyError",
    "AssistantMessage",
    "AsyncChatStream",
    "AsyncClient",
    "BackendError",
    "BackendTarget",
    "BudgetExhaustedError",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "Chunk",
    "Client",
    "ClientClosedError",
    "ClientConfig",
    "Completion",
    "CompressionError",
    "ContextLimitError",
    "CredentialSource",
    "DeadlineExceededError",
    "FailoverError",
    "HttpRequest",
    "LoadBalancerError",
    "LocalSaturationError",
    "Observation",
    "ObserverWarning",
    "PlainHttp",
    "ProfileWarning",
    "Provider",
    "QueueFullError",
    "QueueTimeoutError",
    "RequestInterruptedError",
    "RetryBudgetError",
    "SharedState",
    "StreamDecoder",
    "StreamIdleError",
    "SystemMessage",
    "Tool",
    "ToolCall",
    "ToolResultMessage",
    "Upstream",
    "Usage",
    "UserMessage",
    "WireError",
    "build_request",
    "estimate_tokens",
    "load_profile",
    "parse_error",
    "parse_response",
    "stream_decoder",
)
