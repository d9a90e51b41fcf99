"""A prompt-size estimate for the core's context-limit guard.

The default is a heuristic that needs nothing installed: one token per three
bytes of UTF-8, plus a few tokens of framing per message. Counting bytes
rather than characters keeps it honest across scripts: English runs about
four characters per token (so we overestimate by about a quarter, the safe
side for a limit), while CJK text runs about one character, three bytes, per
token. The reference's last-resort fallback is also about three characters
per token.

With ``exact=True``, when ``tiktoken`` is importable and the backend serves
an OpenAI model family, its exact count is used instead. tiktoken is not a
dependency: the import is attempted at most once, lazily, and any failure
(missing package, unknown model, no cached vocabulary and no network) falls
back to the heuristic. It is opt-in because tiktoken reads, and may download,
its vocabulary on first use: I/O this layer otherwise never does.
"""

from __future__ import annotations

import enum
import importlib
import math
from functools import cache
from typing import Any, Final

import msgspec

from ._target import BackendTarget, Provider
from ._types import AssistantMessage, ChatRequest, ToolResultMessage

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("TokenEstimate", "TokenMethod", "estimate_tokens")

BYTES_PER_TOKEN: Final = 3
#: Role markers and separators each message costs (OpenAI documents 3 to 4).
TOKENS_PER_MESSAGE: Final = 4
#: The tokens that prime the reply.
TOKENS_PER_REQUEST: Final = 3
#: Model name prefixes of OpenAI families tiktoken knows.
_OPENAI_FAMILIES: Final = ("gpt-", "chatgpt-", "o1", "o3", "o4", "text-davinci", "davinci")


class TokenMethod(enum.StrEnum):
    HEURISTIC = "heuristic"
    TIKTOKEN = "tiktoken"


class TokenEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """An estimate of a prompt's tokens and how it was made."""

    tokens: int
    method: TokenMethod


def _texts(request: ChatRequest) -> list[str]:
    """Every piece of the prompt the model reads, in order."""
    texts: list[str] = []
    for message in request.messages:
        texts.append(message.content)
        if isinstance(message, AssistantMessage):
            for call in message.tool_calls:
                texts += (call.name, call.arguments)
        elif isinstance(message, ToolResultMessage):
            texts.append(message.name)
    for tool in request.tools:
        texts += (tool.name, tool.description, msgspec.json.encode(tool.parameters).decode())
    return texts


def _framing(request: ChatRequest) -> int:
    return TOKENS_PER_REQUEST + TOKENS_PER_MESSAGE * (len(request.messages) + len(request.tools))


def heuristic_tokens(request: ChatRequest) -> int:
    size = sum(len(text.encode("utf-8", "replace")) for text in _texts(request))
    return math.ceil(size / BYTES_PER_TOKEN) + _framing(request)


@cache
def _tiktoken() -> Any:
    try:
        return importlib.import_module("tiktoken")
    except ImportError:
        return None


@cache
def _encoding(model: str) -> Any:
    module = _tiktoken()
    if module is None:
        return None
    try:
        return module.encoding_for_model(model)
    except Exception:
        # Unknown model, or the vocabulary could not be fetched: use the heuristic.
        return None


def _is_openai_family(target: BackendTarget) -> bool:
    if target.provider != Provider.OPENAI:
        return False
    model = target.model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" on OpenRouter
    return model.startswith(_OPENAI_FAMILIES)


def estimate_tokens(
    target: BackendTarget, request: ChatRequest, *, exact: bool = False
) -> TokenEstimate:
    """Estimate the prompt tokens ``request`` costs on ``target``. Never raises."""
    if exact and _is_openai_family(target):
        encoding = _encoding(target.model.rsplit("/", 1)[-1])
        if encoding is not None:
            try:
                # Special-token text in a prompt is plain text here, not a reason to fail.
                counted = sum(
                    len(encoding.encode(text, disallowed_special=())) for text in _texts(request)
                )
            except Exception:
                pass  # a broken tokenizer must not break the request
            else:
                return TokenEstimate(
                    tokens=int(counted) + _framing(request), method=TokenMethod.TIKTOKEN
                )
    return TokenEstimate(tokens=heuristic_tokens(request), method=TokenMethod.HEURISTIC)
