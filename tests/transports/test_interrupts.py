"""An interrupt at any line of a request leaves the sync client usable; a cancel
at any await of one leaves the async client usable.

A trace function raises KeyboardInterrupt at one line the request runs in the
project's own files. A counting run per shape of request (a success, a
failover, a stream closed early) lists the lines it passes through; then the
interrupt is injected once at a line, for every line of the guarded core
(``_link.py``, ``_run.py``, ``lbcore/_balancer.py``) and of ``_sync.py``, and a
fixed sample of the rest (``LB_INTERRUPTS_FULL=1`` injects at every line of
every shape). After each: the interrupted request has ended once, nothing is
in flight, no breaker keeps a probe, closing the stream raised nothing, the
next request on the same client works (a watchdog bounds every step), no
connection is left open once the client is closed, and the trace replays. The
interrupted request never ends as failed: nothing is charged to a backend.

The async client's request is cancelled at each time its task suspends in
turn (counted by the root coroutine's frame, whose every suspension is a
``return`` trace event), on asyncio and trio, with the same checks.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import anyio
import pytest

from lbcore import RequestAborted, RequestCompleted, RequestFailed, decode_trace, verify_trace
from lbtransports import AsyncClient, Client, LoadBalancerError, RequestInterruptedError
from lbtransports.testing import LocalBackends, Reset, Stream

from .harness import ASYNC_MODES, REQUEST, BackendPlan, client_config, start_backends

_SRC = str(Path(__file__).resolve().parents[2] / "src")
_WATCHDOG_S = 5.0
#: Every line of these is injected at (in one shape that reaches it).
_EVERY_LINE = (
    "lbtransports/_link.py",
    "lbtransports/_run.py",
    "lbtransports/_sync.py",
    "lbcore/_balancer.py",
)
#: One line in this many of the other files is, chosen by a hash of its place.
_SAMPLE_EVERY = 5
_FULL = os.environ.get("LB_INTERRUPTS_FULL") == "1"
_SETTINGS = {"failover_retry_count": 2, "circuit_breaker_enabled": True}
Where = tuple[str, int]


class _Injector:
    """Notes the lines run in project files; raises KeyboardInterrupt the first time at ``at``."""

    def __init__(self, at: Where | None) -> None:
        self.at = at
        self.lines: set[Where] = set()
        self.fired = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(_SRC):
            return None
        if event == "line" and not self.fired:
            where = (frame.f_code.co_filename, frame.f_lineno)
            self.lines.add(where)
            if where == self.at:
                self.fired = True
                raise KeyboardInterrupt
        return self


def _in_thread(work: Callable[[], object]) -> tuple[bool, BaseException | None]:
    """Run ``work`` in a thread: (finished within the watchdog, what it raised)."""
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


def _interrupted(client: Client, injector: _Injector, *, read_all: bool) -> list[str]:
    """One request under the injector; returns what closing its stream raised."""
    problems = []
    sys.settrace(injector)
    try:
        stream = client.chat(REQUEST)
        try:
            for _ in stream:
                if not read_all:
                    break
        finally:
            try:
                stream.close()
            except BaseException as error:
                if not (injector.fired and isinstance(error, KeyboardInterrupt)):
                    problems.append(f"closing the stream raised {error!r}")
    finally:
        sys.settrace(None)
    return problems


def _check(
    backends: LocalBackends, plans: list[BackendPlan], at: Where | None, read_all: bool
) -> tuple[_Injector, list[str]]:
    injector = _Injector(at)
    buffer = io.BytesIO()
    client = Client(client_config(backends, plans, settings=_SETTINGS), trace=buffer)
    closing: list[str] = []

    def request() -> None:
        closing.extend(_interrupted(client, injector, read_all=read_all))

    done, raised = _in_thread(request)
    if not done:
        return injector, ["the interrupted request hung"]
    problems = list(closing)
    expected = (KeyboardInterrupt, LoadBalancerError, RequestInterruptedError)
    if raised is not None and not isinstance(raised, expected):
        problems.append(f"the interrupted request raised {raised!r}")
    done, raised = _in_thread(lambda: client.complete(REQUEST))
    if not done:
        problems.append("the next request hung")
    elif raised is not None:
        problems.append(f"the next request raised {raised!r}")
    done, _ = _in_thread(client.stats)
    if not done:
        return injector, [*problems, "stats() hung"]
    stats = client.stats()
    if stats.in_flight != 0:
        problems.append(f"{stats.in_flight} request(s) left in flight")
    for name, breaker in stats.circuit_breaker_states.items():
        if getattr(breaker, "probe_holder", None):
            problems.append(f"breaker {name} keeps its probe taken")
    client.close()
    try:
        # The interrupted request's connection was closed, not left to the collector.
        backends.wait_idle(timeout=1.0)
    except TimeoutError as error:
        problems.append(str(error))
    trace = buffer.getvalue()
    mismatch = verify_trace(trace)
    if mismatch is not None:
        problems.append(f"the trace no longer replays: {mismatch}")
    else:
        problems.extend(_first_request_ended(trace))
    return injector, problems


def _first_request_ended(trace: bytes) -> Iterator[str]:
    """Problems with how the interrupted request (``r1``) ended in the trace."""
    _, steps = decode_trace(trace)
    started = any(getattr(step.event, "request_id", None) == "r1" for step in steps)
    terminals = [
        action
        for step in steps
        for action in step.actions
        if isinstance(action, RequestAborted | RequestCompleted | RequestFailed)
        and action.request_id == "r1"
    ]
    if started and len(terminals) != 1:
        yield f"the interrupted request ended {len(terminals)} times in the trace"
    # Every shape's request can succeed: a failure could only be the interrupt's, charged
    # to a backend.
    for terminal in terminals:
        if isinstance(terminal, RequestFailed):
            yield f"the interrupted request ended as failed: {terminal!r}"


def _ended_cancelled(trace: bytes) -> bool:
    _, steps = decode_trace(trace)
    return any(
        isinstance(action, RequestAborted) and action.request_id == "r1"
        for step in steps
        for action in step.actions
    )


_SHAPES = {
    "success": ([BackendPlan("a", default=Stream(3)), BackendPlan("b")], True),
    "failover": (
        [BackendPlan("a", default=Reset(before_headers=True)), BackendPlan("b", default=Stream(2))],
        True,
    ),
    "closed-early": ([BackendPlan("a", default=Stream(3)), BackendPlan("b")], False),
}


def _place(where: Where) -> str:
    return f"{Path(where[0]).relative_to(_SRC)}:{where[1]}"


def _injection_plan(reached: dict[str, set[Where]]) -> dict[str, list[Where]]:
    """The lines each shape injects at: each chosen line once, in one shape that reaches it."""
    if _FULL:
        return {shape: sorted(lines) for shape, lines in reached.items()}
    plan: dict[str, list[Where]] = {shape: [] for shape in reached}
    for where in sorted(set().union(*reached.values())):
        place = _place(where)
        key = zlib.crc32(place.encode())
        if not place.startswith(_EVERY_LINE) and key % _SAMPLE_EVERY:
            continue
        shapes = [shape for shape in sorted(reached) if where in reached[shape]]
        plan[shapes[key % len(shapes)]].append(where)
    return plan


@pytest.fixture(scope="module")
def injection_plan() -> dict[str, list[Where]]:
    reached = {}
    for shape, (plans, read_all) in _SHAPES.items():
        with start_backends(plans) as backends:
            counting, problems = _check(backends, plans, None, read_all)
        assert problems == []
        # The request really runs through the project's code.
        assert len(counting.lines) > 300
        reached[shape] = counting.lines
    plan = _injection_plan(reached)
    for must in _EVERY_LINE:
        wanted = {
            where for lines in reached.values() for where in lines if _place(where).startswith(must)
        }
        assert wanted <= {where for lines in plan.values() for where in lines}
    return plan


# An interrupt inside urllib3 while it connects can leave it a socket to collect.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_an_interrupt_at_any_line_of_a_request_leaves_the_sync_client_usable(
    shape: str, injection_plan: dict[str, list[Where]]
) -> None:
    plans, read_all = _SHAPES[shape]
    lines = injection_plan[shape]
    assert lines
    with start_backends(plans) as backends:
        failures = {}
        fired = 0
        for where in lines:
            injector, problems = _check(backends, plans, where, read_all)
            fired += injector.fired
            if problems:
                failures[_place(where)] = problems
    assert failures == {}
    # A few lines run only on some runs (a read that returns early, say).
    assert fired > 0.9 * len(lines)


class _InCoreHandle(_Injector):
    """Raises KeyboardInterrupt at the first line the core's ``handle()`` runs."""

    def __init__(self) -> None:
        super().__init__(None)

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if self.fired or not code.co_filename.endswith("lbcore/_balancer.py"):
            return None
        if event == "line" and code.co_name == "handle":
            self.fired = True
            raise KeyboardInterrupt
        return self


def test_an_interrupt_inside_the_core_ends_the_other_open_requests_and_the_client_recovers() -> (
    None
):
    plans = [BackendPlan("a", default=Stream(20, delay_ms=10))]
    trace = io.BytesIO()
    seen: dict[str, object] = {}

    def scenario() -> None:
        config = client_config(backends, plans, strategy="round-robin")
        with Client(config, trace=trace) as client:
            other = client.chat(REQUEST)
            seen["first"] = next(other).text
            injector = _InCoreHandle()
            sys.settrace(injector)
            try:
                client.complete(REQUEST)
            except KeyboardInterrupt:
                seen["interrupted"] = injector.fired
            finally:
                sys.settrace(None)
            try:
                seen["rest"] = [chunk.text for chunk in other]
            except RequestInterruptedError as error:
                seen["other"] = error.request_id
            other.close()
            seen["next"] = client.complete(REQUEST).text
            seen["in_flight"] = client.stats().in_flight

    with start_backends(plans) as backends:
        done, raised = _in_thread(scenario)
    assert (done, raised) == (True, None)
    assert seen == {
        "first": "a-0 ",
        "interrupted": True,
        # The request open meanwhile ends: news meant for it may have been lost.
        "other": "r1",
        "next": "".join(f"a-{i} " for i in range(20)),
        "in_flight": 0,
    }
    assert verify_trace(trace.getvalue()) is None
    _, steps = decode_trace(trace.getvalue())
    aborted = {
        action.request_id
        for step in steps
        for action in step.actions
        if isinstance(action, RequestAborted)
    }
    assert aborted == {"r1", "r2"}


# -- the async client: a cancel at every suspension -------------------------------


class _Canceller:
    """Counts the times the request's task suspends; cancels ``scope`` at the ``at``-th.

    Every suspension of the task passes back through the root coroutine's
    frame, so each one is a ``return`` event of that frame (its real return is
    the last). The cancel lands at the await the task is suspended in.
    """

    def __init__(self, root: CodeType, at: int | None) -> None:
        self.root = root
        self.at = at
        self.suspensions = 0
        self.fired = False
        self.scope: anyio.CancelScope | None = None
        #: The project line last run before the cancel, to name the await.
        self.last: Where | None = None
        self.where: Where | None = None
        #: The request ended as cancelled (RequestAborted) in the trace.
        self.ended_cancelled = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is self.root:
            return self._root
        if self.fired or not frame.f_code.co_filename.startswith(_SRC):
            return None
        return self._project

    def _root(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "return" and not self.fired:
            self.suspensions += 1
            if self.suspensions == self.at:
                assert self.scope is not None
                self.fired = True
                self.where = self.last
                self.scope.cancel()
        return self._root

    def _project(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            self.last = (frame.f_code.co_filename, frame.f_lineno)
        return self._project


async def _cancellable_request(client: AsyncClient, read_all: bool, problems: list[str]) -> None:
    stream = client.chat(REQUEST)
    try:
        async for _ in stream:
            if not read_all:
                break
    finally:
        try:
            await stream.aclose()
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as error:
            problems.append(f"closing the stream raised {error!r}")


async def _cancelled_once(
    backends: LocalBackends, plans: list[BackendPlan], canceller: _Canceller, read_all: bool
) -> list[str]:
    buffer = io.BytesIO()
    client = AsyncClient(client_config(backends, plans, settings=_SETTINGS), trace=buffer)
    problems: list[str] = []
    with anyio.CancelScope() as scope:
        canceller.scope = scope
        sys.settrace(canceller)
        try:
            await _cancellable_request(client, read_all, problems)
        except Exception as error:
            problems.append(f"the cancelled request raised {error!r}")
        finally:
            sys.settrace(None)
    try:
        with anyio.fail_after(_WATCHDOG_S):
            await client.complete(REQUEST)
    except BaseException as error:
        problems.append(f"the next request raised {error!r}")
    stats = client.stats()
    if stats.in_flight != 0:
        problems.append(f"{stats.in_flight} request(s) left in flight")
    for name, breaker in stats.circuit_breaker_states.items():
        if getattr(breaker, "probe_holder", None):
            problems.append(f"breaker {name} keeps its probe taken")
    await client.aclose()
    trace = buffer.getvalue()
    mismatch = verify_trace(trace)
    if mismatch is not None:
        problems.append(f"the trace no longer replays: {mismatch}")
    else:
        problems.extend(_first_request_ended(trace))
        canceller.ended_cancelled = _ended_cancelled(trace)
    return problems


def _cancel_at(
    backend: str, plans: list[BackendPlan], backends: LocalBackends, at: int | None, read_all: bool
) -> tuple[_Canceller, list[str]]:
    canceller = _Canceller(_cancellable_request.__code__, at)
    problems: list[str] = []

    def run() -> None:
        problems.extend(
            anyio.run(_cancelled_once, backends, plans, canceller, read_all, backend=backend)
        )

    done, raised = _in_thread(run)
    if not done:
        return canceller, ["the cancelled request, or what followed it, hung"]
    if raised is not None:
        problems.append(f"the run raised {raised!r}")
    try:
        # The cancelled request's connection was closed with it, or with the client.
        backends.wait_idle(timeout=1.0)
    except TimeoutError as error:
        problems.append(str(error))
    return canceller, problems


@pytest.mark.parametrize("backend", ASYNC_MODES)
@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_a_cancel_at_any_await_of_a_request_leaves_the_async_client_usable(
    shape: str, backend: str
) -> None:
    plans, read_all = _SHAPES[shape]
    with start_backends(plans) as backends:
        counting, problems = _cancel_at(backend, plans, backends, None, read_all)
        assert problems == []
        # The request really waits on its backends (connect, send, reads, close).
        assert counting.suspensions > 3
        failures = {}
        fired = cancelled = 0
        for at in range(1, counting.suspensions):
            canceller, problems = _cancel_at(backend, plans, backends, at, read_all)
            fired += canceller.fired
            cancelled += canceller.ended_cancelled
            if problems:
                where = _place(canceller.where) if canceller.where else "?"
                failures[f"suspension {at} (after {where})"] = problems
    assert failures == {}
    # A run may suspend fewer times than the counting run: a read can find its bytes
    # waiting, and reading on to the body's end after the terminator stops as soon as the
    # end is there. Most cancels must still land (the guarantees above held at each).
    assert fired >= max(3, (counting.suspensions - 1) // 2), (fired, counting.suspensions)
    # The cancels landed: requests ended as cancelled, not only after their answers.
    assert cancelled > 0
