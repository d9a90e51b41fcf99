"""The settings merge of reference section 9, and which keys reach which body.

For each attempt the backend's own ephemeral settings and model parameters are
merged with the load balancer's, the load balancer's winning key by key (a
shallow merge). Temperature, max tokens and streaming are then lifted out of
the merge. The caller's mappings are copied, never mutated.

Model parameters reach a request body only through a per-provider allow-list
that also renames them (``top_k`` becomes Gemini's ``generationConfig.topK``).
A key that one provider understands and another does not, such as Anthropic's
``thinking`` or OpenAI's ``reasoning_effort``, is dropped for the other: the
reference's issue #2182 was exactly such a leak. Raw fields that the allow-list
does not know go through :attr:`ChatRequest.extras`, keyed by provider.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ._target import BackendTarget, Provider

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("ResolvedSettings", "merge_settings")

Path = tuple[str, ...]

_SHARED: Final[dict[str, str]] = {"top_p": "top_p", "topP": "top_p"}

#: Model parameter name -> where it goes in the body. The lifted keys
#: (temperature, max tokens) are placed separately, see LIFTED_PATHS.
ALLOWED_PARAMS: Final[dict[Provider, dict[str, Path]]] = {
    Provider.OPENAI: {
        **{key: (value,) for key, value in _SHARED.items()},
        "stop": ("stop",),
        "seed": ("seed",),
        "presence_penalty": ("presence_penalty",),
        "presencePenalty": ("presence_penalty",),
        "frequency_penalty": ("frequency_penalty",),
        "frequencyPenalty": ("frequency_penalty",),
        "logit_bias": ("logit_bias",),
        "logprobs": ("logprobs",),
        "top_logprobs": ("top_logprobs",),
        "max_completion_tokens": ("max_completion_tokens",),
        "response_format": ("response_format",),
        "reasoning_effort": ("reasoning_effort",),
        "parallel_tool_calls": ("parallel_tool_calls",),
        "service_tier": ("service_tier",),
        "user": ("user",),
    },
    Provider.ANTHROPIC: {
        **{key: (value,) for key, value in _SHARED.items()},
        "top_k": ("top_k",),
        "topK": ("top_k",),
        "stop": ("stop_sequences",),
        "stop_sequences": ("stop_sequences",),
        "thinking": ("thinking",),
        "metadata": ("metadata",),
        "service_tier": ("service_tier",),
    },
    Provider.GEMINI: {
        "top_p": ("generationConfig", "topP"),
        "topP": ("generationConfig", "topP"),
        "top_k": ("generationConfig", "topK"),
        "topK": ("generationConfig", "topK"),
        "stop": ("generationConfig", "stopSequences"),
        "stop_sequences": ("generationConfig", "stopSequences"),
        "stopSequences": ("generationConfig", "stopSequences"),
        "seed": ("generationConfig", "seed"),
        "presence_penalty": ("generationConfig", "presencePenalty"),
        "presencePenalty": ("generationConfig", "presencePenalty"),
        "frequency_penalty": ("generationConfig", "frequencyPenalty"),
        "frequencyPenalty": ("generationConfig", "frequencyPenalty"),
        "response_mime_type": ("generationConfig", "responseMimeType"),
        "responseMimeType": ("generationConfig", "responseMimeType"),
        "response_schema": ("generationConfig", "responseSchema"),
        "responseSchema": ("generationConfig", "responseSchema"),
        "thinking_config": ("generationConfig", "thinkingConfig"),
        "thinkingConfig": ("generationConfig", "thinkingConfig"),
        "safety_settings": ("safetySettings",),
        "safetySettings": ("safetySettings",),
        "cached_content": ("cachedContent",),
        "cachedContent": ("cachedContent",),
    },
}

#: Where each provider puts the lifted temperature and max tokens.
LIFTED_PATHS: Final[dict[Provider, dict[str, Path]]] = {
    Provider.OPENAI: {"temperature": ("temperature",), "max_tokens": ("max_tokens",)},
    Provider.ANTHROPIC: {"temperature": ("temperature",), "max_tokens": ("max_tokens",)},
    Provider.GEMINI: {
        "temperature": ("generationConfig", "temperature"),
        "max_tokens": ("generationConfig", "maxOutputTokens"),
    },
}

# Body fields whose value is a list of strings; a single string is wrapped.
_STRING_LISTS: Final = frozenset({"stop_sequences", "stopSequences"})


class ResolvedSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The merged settings for one attempt on one backend."""

    ephemeral: dict[str, Any]
    model_params: dict[str, Any]
    temperature: float | None = None
    max_tokens: int | None = None
    streaming: bool | None = None


def _finite(value: object) -> float | None:
    """A number as a float; None for anything else, NaN, infinities and ints too big for a float."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _whole(value: object) -> int | None:
    """An integer-valued number as an int, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _finite(value)
    return int(number) if number is not None and number.is_integer() else None


def merge_settings(
    target: BackendTarget,
    lb_settings: Mapping[str, Any] | None = None,
    lb_model_params: Mapping[str, Any] | None = None,
) -> ResolvedSettings:
    """Merge the backend's settings with the load balancer's, the load balancer winning.

    Temperature and max tokens are read from the settings overlaid with the
    model parameters (``maxTokens`` before ``max_tokens``), and only when they
    are finite numbers (max tokens integer-valued); streaming is read from the
    settings alone (``streaming`` before ``stream``), only when it is a boolean.
    """
    ephemeral = {**target.ephemeral_settings, **(lb_settings or {})}
    params = {**target.model_params, **(lb_model_params or {})}
    overlay = {**ephemeral, **params}
    max_tokens = next(
        (
            whole
            for key in ("maxTokens", "max_tokens")
            if (whole := _whole(overlay.get(key))) is not None
        ),
        None,
    )
    streaming = next(
        (ephemeral[key] for key in ("streaming", "stream") if isinstance(ephemeral.get(key), bool)),
        None,
    )
    return ResolvedSettings(
        ephemeral=ephemeral,
        model_params=params,
        temperature=_finite(overlay.get("temperature")),
        max_tokens=max_tokens,
        streaming=streaming,
    )


def place(body: dict[str, Any], path: Path, value: Any) -> None:
    """Set ``value`` at ``path`` in ``body``, creating nested objects as needed."""
    node = body
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    if path[-1] in _STRING_LISTS and isinstance(value, str):
        value = [value]
    node[path[-1]] = value


def apply_settings(body: dict[str, Any], provider: Provider, settings: ResolvedSettings) -> None:
    """Lay the allow-listed model parameters, then the lifted values, over ``body``."""
    allowed = ALLOWED_PARAMS[provider]
    for key, value in settings.model_params.items():
        path = allowed.get(key)
        if path is not None and value is not None:
            place(body, path, value)
    lifted = LIFTED_PATHS[provider]
    if settings.temperature is not None:
        place(body, lifted["temperature"], settings.temperature)
    if settings.max_tokens is not None:
        place(body, lifted["max_tokens"], settings.max_tokens)


def apply_extras(body: dict[str, Any], extras: Mapping[str, Any], reserved: frozenset[str]) -> None:
    """Add the caller's raw fields for this provider; the fields we own are not theirs to change."""
    for key, value in extras.items():
        if key not in reserved:
            body[key] = value
