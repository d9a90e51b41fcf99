"""How the wire layer sees one backend: where it is, what it runs, how it signs in."""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from ._credentials import CredentialSource

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("BackendTarget", "Provider")


class Provider(enum.StrEnum):
    """The wire formats this layer speaks."""

    #: Chat Completions, also spoken by vLLM, llama.cpp, Ollama, OpenRouter, Groq, z.ai...
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


class BackendTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One backend as the wire layer needs it.

    ``name`` and ``model`` match the core's :class:`lbcore.BackendSpec`; the
    rest (URL, credential, the backend's own settings) stays out of the core.
    ``provider`` is a string so that an unknown one is a setup failure of this
    backend rather than a crash at configuration time.
    """

    name: str
    provider: str
    model: str
    #: Overrides the provider's default base URL (self-hosted servers, proxies).
    base_url: str | None = None
    credential: CredentialSource = msgspec.field(default_factory=CredentialSource)
    #: The backend's own ephemeral settings; the load balancer's win over them.
    ephemeral_settings: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The backend's own model parameters; the load balancer's win over them.
    model_params: dict[str, Any] = msgspec.field(default_factory=dict)
