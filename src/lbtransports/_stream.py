"""What both kinds of chat stream know about their request, whatever their I/O."""

from __future__ import annotations

from collections.abc import Sequence

from lbcore import Action

from ._completion import Completion, collect
from ._link import CoreLink
from ._run import RequestRun
from .wire import Chunk, Usage

__all__ = ("StreamView", "completion_of")


class StreamView:
    """Read-only facts about one request, shared by ``ChatStream`` and ``AsyncChatStream``."""

    def __init__(self, link: CoreLink, run: RequestRun) -> None:
        self._link = link
        self._run = run

    @property
    def request_id(self) -> str:
        return self._run.request_id

    @property
    def backend(self) -> str | None:
        """The backend whose answer this is, once the request completed."""
        done = self._run.completed
        return done.backend if done is not None else None

    @property
    def usage(self) -> Usage | None:
        """The tokens the answering backend reported, once the request completed."""
        done = self._run.completed
        if done is None:
            return None
        return Usage(input_tokens=done.input_tokens, output_tokens=done.output_tokens)

    @property
    def decisions(self) -> list[Action]:
        """Every action the core took about this request so far (a copy)."""
        return list(self._run.decisions)

    def _cancel(self) -> None:
        # A stream never iterated has no generator frame to run the cancel.
        self._link.cancel(self._run)

    def __del__(self) -> None:
        # Dropped without being closed: the core must not keep the request live.
        # Deferred, because a finalizer may run while this thread holds the guard.
        # (getattr: an interrupt may have cut __init__ short.)
        run = getattr(self, "_run", None)
        if run is not None and not run.finished:
            self._link.abandon(run)


def completion_of(view: StreamView, chunks: Sequence[Chunk]) -> Completion:
    """The whole answer of a completed request, from the chunks its stream gave."""
    done = view._run.completed
    if done is None:
        raise RuntimeError("the request has not completed")
    return collect(
        chunks,
        request_id=view.request_id,
        backend=done.backend,
        model=view._link.config.target(done.backend).model,
        usage=Usage(input_tokens=done.input_tokens, output_tokens=done.output_tokens),
    )
