"""Telling the sync client the moment its request has been sent.

The first-chunk deadline counts from the send (spec/behaviour.md section
8.3), but ``requests`` sends and waits for the status line in one call.
urllib3 asks its connection for the response right after the request went
out, so a connection class that runs a hook there sees exactly that moment.
The hook is set per request in a context variable: the sending thread is the
one running the request, so no other request can see it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool

__all__ = ("SentAdapter", "on_sent")

#: Called once the request is sent; returns the seconds left to wait for the status line.
SentHook = Callable[[], float]

_HOOK: contextvars.ContextVar[SentHook | None] = contextvars.ContextVar(
    "lbtransports_on_sent", default=None
)


@contextlib.contextmanager
def on_sent(hook: SentHook) -> Iterator[None]:
    """Run ``hook`` when the request this thread sends next is out."""
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def _fire(connection: urllib3.connection.HTTPConnection) -> None:
    hook = _HOOK.get()
    if hook is None:
        return
    _HOOK.set(None)  # once per request, even if urllib3 asked again
    # urllib3 applies the connection's timeout to the socket as it reads the
    # status line: the wait now ends at the deadline the send restarted.
    connection.timeout = hook()


class _SentHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self) -> Any:
        _fire(self)
        return super().getresponse()


class _SentHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self) -> Any:
        _fire(self)
        return super().getresponse()


class _SentHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _SentHTTPConnection


class _SentHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _SentHTTPSConnection


class SentAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections run the :func:`on_sent` hook."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _SentHTTPPool, "https": _SentHTTPSPool}
