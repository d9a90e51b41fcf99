"""One entry point per job, dispatching on the backend's provider.

The three provider modules expose the same small interface (see
:class:`ProviderWire`); this module picks one by name, merges the settings
and resolves the credential before handing over, and turns an unknown
provider into a setup failure of that backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from lbcore import Failure, FailureKind, clean_text

from . import anthropic, gemini, openai
from ._common import ErrorParser, ResponseParser
from ._credentials import _read_text, resolve_credential
from ._decoder import StreamDecoder
from ._errors import Headers, WireError, failure
from ._settings import ResolvedSettings, merge_settings
from ._target import BackendTarget, Provider
from ._types import ChatRequest, ChatResponse, HttpRequest

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = (
    "ProviderWire",
    "build_request",
    "parse_error",
    "parse_response",
    "stream_decoder",
    "wire_for",
)


class ProviderWire(Protocol):
    """What each provider module offers. The modules themselves satisfy it."""

    @property
    def PROVIDER(self) -> Provider: ...

    @property
    def DEFAULT_BASE_URL(self) -> str: ...

    def encode_request(
        self,
        target: BackendTarget,
        request: ChatRequest,
        settings: ResolvedSettings,
        key: str | None,
    ) -> HttpRequest: ...

    @property
    def parse_response(self) -> ResponseParser: ...

    @property
    def parse_error(self) -> ErrorParser: ...


_WIRES: dict[str, ProviderWire] = {
    Provider.OPENAI.value: openai,
    Provider.ANTHROPIC.value: anthropic,
    Provider.GEMINI.value: gemini,
}

_DECODERS: dict[str, type[StreamDecoder]] = {
    Provider.OPENAI.value: openai.OpenAIStreamDecoder,
    Provider.ANTHROPIC.value: anthropic.AnthropicStreamDecoder,
    Provider.GEMINI.value: gemini.GeminiStreamDecoder,
}


def _unknown(provider: str) -> WireError:
    known = ", ".join(_WIRES)
    return WireError(
        failure(
            FailureKind.SETUP,
            f'unknown provider "{clean_text(provider, 64)}" (known: {known})',
        )
    )


def wire_for(provider: str) -> ProviderWire:
    """The module speaking ``provider``'s format. Raises a setup :class:`WireError`."""
    wire = _WIRES.get(provider)
    if wire is None:
        raise _unknown(provider)
    return wire


def build_request(
    target: BackendTarget,
    request: ChatRequest,
    *,
    lb_settings: Mapping[str, Any] | None = None,
    lb_model_params: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    read_text: Callable[[Path], str] = _read_text,
) -> HttpRequest:
    """The exact HTTP request for one attempt of ``request`` on ``target``.

    Follows reference section 9: the backend's settings and model parameters
    merged with the load balancer's (which win), temperature, max tokens and
    streaming lifted from the merge, the model, base URL and credential taken
    from ``target`` and from nowhere else. ``request`` is not modified.

    Raises:
        WireError: a setup failure naming the backend for an unknown provider
            or a missing credential, or for tool-call arguments the provider
            cannot be sent.
    """
    try:
        wire = wire_for(target.provider)
        key = resolve_credential(
            target.credential, target.name, environ=environ, read_text=read_text
        )
        settings = merge_settings(target, lb_settings, lb_model_params)
        return wire.encode_request(target, request, settings, key)
    except WireError as error:
        message = error.failure.message
        backend = f'Backend "{clean_text(target.name, 64)}"'
        if not message.startswith(backend):
            message = f"{backend}: {message}"
        raise WireError(failure(FailureKind.SETUP, message)) from None


def stream_decoder(
    provider: str, *, secrets: Sequence[str] = (), keep_events: bool = False, **limits: int
) -> StreamDecoder:
    """A fresh decoder for one streamed response; pass the request's ``secrets``.

    ``limits`` are the SSE parser's ``max_line`` and ``max_event``; with
    ``keep_events`` the decoder keeps the events it read for
    :meth:`StreamDecoder.take_events`.
    """
    decoder = _DECODERS.get(provider)
    if decoder is None:
        raise _unknown(provider)
    return decoder(secrets=secrets, keep_events=keep_events, **limits)


def parse_response(
    provider: str,
    status: int,
    headers: Headers,
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    now: float | None = None,
) -> ChatResponse:
    """A complete non-streamed answer, or a :class:`WireError` with the failure."""
    return wire_for(provider).parse_response(status, headers, body, secrets=secrets, now=now)


def parse_error(
    provider: str,
    status: int,
    headers: Headers,
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    now: float | None = None,
) -> Failure:
    """The failure for a non-2xx answer. Never raises, even for an unknown provider."""
    wire = _WIRES.get(provider)
    if wire is None:
        return _unknown(provider).failure
    return wire.parse_error(status, headers, body, secrets=secrets, now=now)
