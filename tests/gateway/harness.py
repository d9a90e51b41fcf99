"""A gateway served on a thread of its own, on 127.0.0.1 and a free port, for SDK callers."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from lbtransports.gateway import (
    Gateway,
    GatewayConfig,
    config_from_mapping,
    hash_key,
    serve_in_thread,
)
from lbtransports.testing import LocalBackend

KEY = "gw-test-key-0123456789"
BACKEND_SECRET = "sk-backend-SECRET-never-shown-42"


def group(*backends: LocalBackend, strategy: str = "failover", **more: Any) -> dict[str, Any]:
    """A group table whose backends are the local ones, each with BACKEND_SECRET as its key."""
    return {
        "strategy": strategy,
        "backends": [
            {
                "name": backend.name,
                "provider": backend.provider.value,
                "model": f"{backend.name}-model",
                "base_url": backend.base_url,
                "credential": {"env": "GW_TEST_BACKEND_KEY"},
            }
            for backend in backends
        ],
        **more,
    }


def make_config(groups: Mapping[str, Any], **gateway: Any) -> GatewayConfig:
    return config_from_mapping(
        {"gateway": {"port": 0, "keys": [hash_key(KEY)], **gateway}, "groups": dict(groups)},
        environ={},
    )


def serving(config: GatewayConfig) -> contextlib.AbstractContextManager[Gateway]:
    """The gateway running on a portal thread; stopped (drained, then cancelled) on exit."""
    return serve_in_thread(config)


def base_url(gateway: Gateway, suffix: str = "/v1") -> str:
    return f"http://127.0.0.1:{gateway.port}{suffix}"
