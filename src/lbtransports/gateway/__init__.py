"""lbtransports.gateway: an OpenAI- and Anthropic-compatible HTTP gateway over the balancer.

An inbound transport: HTTP/1.1 over h11 on anyio (asyncio or trio). Each
model name a caller asks for is a group of backends, served through one
:class:`~lbtransports.AsyncClient`. See ``spec/gateway.md``.

    config = load_config("gateway.toml")
    run(config)                       # blocking, until SIGTERM / SIGINT
"""

from ._auth import KeyRing
from ._config import (
    GatewayConfig,
    Group,
    Limits,
    config_from_mapping,
    for_worker,
    hash_key,
    is_loopback,
    load_config,
    share_groups,
)
from ._server import Gateway, run, serve, serve_in_thread

__all__ = (
    "Gateway",
    "GatewayConfig",
    "Group",
    "KeyRing",
    "Limits",
    "config_from_mapping",
    "for_worker",
    "hash_key",
    "is_loopback",
    "load_config",
    "run",
    "serve",
    "serve_in_thread",
    "share_groups",
)
