"""What the answering backend itself sent, kept for a caller that forwards it.

A client fills an :class:`Upstream` only when asked (``AsyncClient.chat(...,
keep_upstream=True)``): the gateway forwards a backend's own events to a caller
who speaks the backend's format instead of rebuilding them from chunks. Only
an attempt whose chunks the caller saw hands its events over, with those
chunks: what a failed attempt sent before failing over is never seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .wire import SseEvent

__all__ = ("Upstream",)


@dataclass(eq=False)
class Upstream:
    #: The provider (wire format) of the attempt whose events these are; None
    #: until an attempt hands any over.
    provider: str | None = None
    #: Streamed events not yet taken, in the order they arrived.
    events: list[SseEvent] = field(default_factory=list)
    #: A whole (non-streamed) answer's body, once it succeeded.
    body: bytes | None = None
    #: Called after each hand-over, before the attempt reads on: a forwarder can
    #: send what just came (the terminator with the last chunk) without waiting
    #: for the client to finish with the connection.
    on_receive: Callable[[], None] | None = None

    def receive(self, provider: str, events: list[SseEvent], body: bytes | None = None) -> None:
        """Take over what the attempt the caller is seeing has read so far."""
        self.provider = provider
        if events:
            self.events += events
        if body is not None:
            self.body = body
        if self.on_receive is not None:
            self.on_receive()

    def take_events(self) -> list[SseEvent]:
        events, self.events = self.events, []
        return events
