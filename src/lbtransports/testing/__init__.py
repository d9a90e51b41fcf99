"""lbtransports.testing: local LLM backends over real HTTP, with faults on demand.

Each backend is an HTTP/1.1 server on its own port of 127.0.0.1 that speaks one
provider's format (``openai``, ``anthropic`` or ``gemini``) exactly as
:mod:`lbtransports.wire` reads it, and answers each request with the next step
of its script: a good stream, an error status, a hang, a stall, keep-alives,
a reset, malformed data, a stream without its terminator, an in-stream error.

    backends = LocalBackends()
    a = backends.add("a", "openai", Fail(429, retry_after="1"), Stream(3))
    b = backends.add("b", "anthropic", default=Hang())
    with backends:                      # or: async with backends:
        ...                             # point BackendTarget.base_url at a.base_url
        backends.wait_idle()

``python -m lbtransports.testing --help`` serves backends from the command line.
"""

from ._backend import LocalBackend
from ._backends import LocalBackends
from ._behaviours import (
    Behaviour,
    ErrorEvent,
    Fail,
    Hang,
    KeepAlive,
    Malformed,
    NoTerminator,
    Reset,
    Stall,
    Stream,
)
from ._received import Received

__all__ = (
    "Behaviour",
    "ErrorEvent",
    "Fail",
    "Hang",
    "KeepAlive",
    "LocalBackend",
    "LocalBackends",
    "Malformed",
    "NoTerminator",
    "Received",
    "Reset",
    "Stall",
    "Stream",
)
