"""An interrupt landing anywhere in a request leaves the sync client usable.

A trace function raises KeyboardInterrupt at the Nth line the request runs in
the project's own files, for every N the request reaches. After each, a next
request must finish (a watchdog bounds it), nothing may stay in flight, and
the decision trace must still replay.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from lbcore import verify_trace
from lbtransports import Client, LoadBalancerError
from lbtransports.testing import Reset, Stream

from .harness import REQUEST, BackendPlan, client_config, start_backends

_SRC = str(Path(__file__).resolve().parents[2] / "src")
_WATCHDOG_S = 5.0


class _Injector:
    """Counts 'line' events in project files; raises KeyboardInterrupt at the Nth."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.count = 0
        self.fired_at: tuple[str, int] | None = None

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(_SRC):
            return None
        if event == "line":
            self.count += 1
            if self.count == self.at:
                self.fired_at = (frame.f_code.co_filename, frame.f_lineno)
                raise KeyboardInterrupt
        return self


def _in_thread(work: Callable[[], object]) -> tuple[bool, BaseException | None]:
    """Run ``work`` in a thread; (finished within the watchdog, what it raised)."""
    raised: list[BaseException] = []

    def body() -> None:
        try:
            work()
        except BaseException as error:
            raised.append(error)

    worker = threading.Thread(target=body, daemon=True)
    worker.start()
    worker.join(_WATCHDOG_S)
    return not worker.is_alive(), (raised[0] if raised else None)


def _interrupted_request(client: Client, injector: _Injector) -> None:
    sys.settrace(injector)
    try:
        stream = client.chat(REQUEST)
        try:
            for _ in stream:
                pass
        finally:
            sys.settrace(None)
            stream.close()
    finally:
        sys.settrace(None)


_PLANS = [
    BackendPlan("a", script=[Reset(before_headers=True)], default=Stream(2)),
    BackendPlan("b"),
]
_SETTINGS = {"failover_retry_count": 2, "circuit_breaker_enabled": True}


def _one_run(at: int | None) -> tuple[_Injector, list[str]]:
    """One interrupted request, then the checks; returns what went wrong."""
    problems: list[str] = []
    injector = _Injector(at)
    with start_backends(_PLANS) as backends:
        buffer = io.BytesIO()
        client = Client(client_config(backends, _PLANS, settings=_SETTINGS), trace=buffer)
        done, raised = _in_thread(lambda: _interrupted_request(client, injector))
        if not done:
            return injector, ["the interrupted request hung"]
        if raised is not None and not isinstance(raised, KeyboardInterrupt | LoadBalancerError):
            problems.append(f"the interrupted request raised {raised!r}")
        done, raised = _in_thread(lambda: client.complete(REQUEST))
        if not done:
            problems.append("the next request hung")
        elif raised is not None:
            problems.append(f"the next request raised {raised!r}")
        done, _ = _in_thread(client.stats)
        if not done:
            problems.append("stats() hung")
        else:
            stats = client.stats()
            if stats.in_flight != 0:
                problems.append(f"{stats.in_flight} request(s) left in flight")
            for name, breaker in stats.circuit_breaker_states.items():
                if getattr(breaker, "probe_holder", None):
                    problems.append(f"breaker {name} keeps its probe taken")
        client.close()
        mismatch = verify_trace(buffer.getvalue())
        if mismatch is not None:
            problems.append(f"the trace no longer replays: {mismatch}")
    return injector, problems


def test_an_interrupt_at_any_line_of_a_request_leaves_the_sync_client_usable() -> None:
    counting, problems = _one_run(None)
    assert problems == []
    assert counting.count > 100  # the request really runs through the project's code
    failures: dict[tuple[str, int], list[str]] = {}
    seen: set[tuple[str, int]] = set()
    for at in range(1, counting.count + 1):
        injector, problems = _one_run(at)
        where = injector.fired_at
        if where is None or where in seen:
            continue
        seen.add(where)
        if problems:
            failures[where] = problems
    assert len(seen) > 50
    assert failures == {}
