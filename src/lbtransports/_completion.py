"""A whole answer, gathered from the chunks of a streamed one."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .wire import Chunk, ToolCall, Usage

__all__ = ("Completion", "collect")


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """The complete answer to one request, and which backend gave it."""

    request_id: str
    backend: str
    model: str
    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)


class _Call:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


def collect(
    chunks: Iterable[Chunk], *, request_id: str, backend: str, model: str, usage: Usage
) -> Completion:
    """Join ``chunks`` into one answer; tool-call pieces are joined by their index."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, _Call] = {}
    finish: str | None = None
    for chunk in chunks:
        text.append(chunk.text)
        reasoning.append(chunk.reasoning)
        for delta in chunk.tool_calls:
            call = calls.setdefault(delta.index, _Call())
            call.id = delta.id or call.id
            call.name = delta.name or call.name
            call.arguments.append(delta.arguments)
        finish = chunk.finish_reason or finish
    return Completion(
        request_id=request_id,
        backend=backend,
        model=model,
        text="".join(text),
        reasoning="".join(reasoning),
        tool_calls=tuple(
            ToolCall(id=call.id, name=call.name, arguments="".join(call.arguments) or "{}")
            for _, call in sorted(calls.items())
        ),
        finish_reason=finish,
        usage=usage,
    )
