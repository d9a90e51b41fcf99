"""How the wire layer sees one backend: where it is, what it runs, how it signs in."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ._credentials import CredentialSource

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("BackendTarget", "Provider", "redact_settings")

#: Setting names whose values may be credentials (``auth-key``, ``api_key``,
#: ``x-goog-api-key``, ``authToken``...). Their values never appear in a repr.
_SECRET_SETTING: Final = re.compile(
    r"auth|api[-_]?key|secret|passw|credential|bearer|(^|[-_])key$|(access|refresh|session)[-_]?token",
    re.IGNORECASE,
)


def secret_name(name: str) -> bool:
    """Whether a setting (or query parameter) of this name may hold a credential."""
    return _SECRET_SETTING.search(name) is not None


def redact_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` safe to show: values under credential-like names are hidden."""
    return {
        name: "<redacted>" if secret_name(str(name)) else value for name, value in settings.items()
    }


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

    def __repr__(self) -> str:
        # Profiles keep ``auth-key`` among their settings: show the names, never the values.
        return (
            f"BackendTarget(name={self.name!r}, provider={self.provider!r}, "
            f"model={self.model!r}, base_url={self.base_url!r}, credential={self.credential!r}, "
            f"ephemeral_settings={redact_settings(self.ephemeral_settings)!r}, "
            f"model_params={redact_settings(self.model_params)!r})"
        )

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("name", self.name), ("provider", self.provider), ("model", self.model)]
