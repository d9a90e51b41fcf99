"""CoreLink and RequestRun, stepped one call at a time with a hand-moved clock.

No sockets: these pin the races the clients must survive (another request's
tick deciding for this one, news arriving after a deadline) deterministically.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

from lbcore import Failure, FailureKind, InvalidEvent, TimeoutPhase, decode_trace
from lbtransports import ClientConfig
from lbtransports._link import CoreLink
from lbtransports._reader import Failed, Succeeded
from lbtransports._run import Attempt, Finished, RequestRun, Send, Wait
from lbtransports.wire import Chunk, Usage

from .harness import REQUEST


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def _link(clock: Clock, **settings: object) -> tuple[CoreLink, io.BytesIO]:
    config = ClientConfig.from_mapping(
        {
            "strategy": "failover",
            "settings": {"failover_retry_count": 2, "timeout_ms": 100, **settings},
            "idle_timeout_ms": 1_000,
            "backends": [
                {"name": "a", "provider": "openai", "model": "m"},
                {"name": "b", "provider": "openai", "model": "m"},
            ],
        }
    )
    trace = io.BytesIO()
    return CoreLink(config, trace=trace, clock=clock), trace


def _events(trace: io.BytesIO) -> list[str]:
    return [type(step.event).__name__ for step in decode_trace(trace.getvalue())[1]]


def _send(step: object) -> Send:
    assert isinstance(step, Send), step
    return step


def _started(link: CoreLink, request_id: str = "") -> tuple[RequestRun, Attempt]:
    """A request started in the core, and the first attempt its loop takes."""
    run = RequestRun(request_id=request_id, chat=REQUEST)
    link.open(run)
    return run, _send(link.next_step(run)).attempt


def test_an_attempt_started_and_cancelled_before_its_loop_took_it_is_never_sent() -> None:
    clock = Clock()
    link, _ = _link(clock)
    run, first = _started(link)
    clock.now += 150
    link.tick()  # another request's loop ticks: a#1 is late, a#2 starts
    clock.now += 150
    link.tick()  # ...and ticks again before this loop woke: a#2 is late too, b#3 starts
    assert first.over
    step = _send(link.next_step(run))
    assert (step.attempt.number, step.attempt.backend) == (3, "b")


def test_time_passes_before_news_so_a_late_chunk_is_dropped() -> None:
    clock = Clock()
    link, trace = _link(clock)
    run, attempt = _started(link, "r7")
    clock.now += 101
    assert link.deliver(run, attempt, [Chunk(text="late")]) == []
    assert attempt.over
    assert _events(trace) == ["RequestStarted", "Tick"]
    assert _send(link.next_step(run)).attempt.number == 2


def test_news_of_a_finished_attempt_is_dropped_not_sent() -> None:
    clock = Clock()
    link, trace = _link(clock)
    run, attempt = _started(link)
    chunk = Chunk(text="hi")
    assert link.deliver(run, attempt, [chunk]) == [chunk]
    link.finish(run, attempt, Succeeded(Usage(input_tokens=1, output_tokens=1)))
    link.finish(run, attempt, Succeeded(Usage()))
    assert link.deliver(run, attempt, [chunk]) == []
    link.expire(run, attempt, TimeoutPhase.READ)
    assert _events(trace) == ["RequestStarted", "ChunkReceived", "AttemptSucceeded"]
    assert isinstance(link.next_step(run), Finished)
    assert run.completed is not None and run.completed.backend == "a"


def test_the_clock_never_goes_backwards_for_the_core() -> None:
    clock = Clock()
    link, trace = _link(clock)
    run = RequestRun(request_id="", chat=REQUEST)
    clock.now += 50
    link.open(run)
    attempt = _send(link.next_step(run)).attempt
    clock.now -= 40  # another thread read the clock earlier and reports later
    link.deliver(run, attempt, [Chunk(text="x")])
    steps = decode_trace(trace.getvalue())[1]
    assert [step.event.at for step in steps] == [50, 50]


def test_a_connect_timeout_is_the_transports_and_a_late_first_chunk_the_cores() -> None:
    clock = Clock()
    link, trace = _link(clock)
    run, attempt = _started(link)
    clock.now += 30
    link.expire(run, attempt, TimeoutPhase.CONNECT)
    second = _send(link.next_step(run)).attempt
    clock.now += 200
    link.expire(run, second, TimeoutPhase.READ)
    _, steps = decode_trace(trace.getvalue())
    assert [type(s.event).__name__ for s in steps] == ["RequestStarted", "AttemptTimedOut", "Tick"]
    assert steps[1].event.phase == "connect"  # type: ignore[union-attr]
    assert "CancelAttempt" in [type(a).__name__ for a in steps[2].actions]


def test_wait_limit_is_the_earlier_deadline_rounded_up() -> None:
    clock = Clock()
    link, _ = _link(clock)
    run, attempt = _started(link)
    assert link.wait_limit(run, attempt) == 0.101  # first-chunk deadline, +1 ms
    link.deliver(run, attempt, [Chunk(text="x")])
    clock.now += 10
    assert link.wait_limit(run, attempt) == 0.991  # idle timeout from the last chunk
    clock.now += 5_000
    assert link.wait_limit(run, attempt) == 0.0


def test_a_retry_delay_is_a_wait_then_a_tick_starts_the_retry() -> None:
    clock = Clock()
    link, _ = _link(clock, failover_retry_delay_ms=250)
    run, attempt = _started(link)
    link.finish(run, attempt, Failed(Failure(kind=FailureKind.HTTP, message="busy", status=503)))
    step = link.next_step(run)
    assert step == Wait(until=250)
    clock.now += 250
    link.tick()
    retry = _send(link.next_step(run)).attempt
    assert (retry.number, retry.backend) == (2, "a")


def test_cancel_after_the_end_sends_nothing() -> None:
    clock = Clock()
    link, trace = _link(clock)
    run, attempt = _started(link)
    link.finish(run, attempt, Succeeded(Usage()))
    link.cancel(run)
    link.cancel(run)
    assert _events(trace) == ["RequestStarted", "AttemptSucceeded"]


class _HeldTrace(io.BytesIO):
    """A trace file whose next write can be held mid-way; once closed it refuses writes."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.writing = threading.Event()
        self.release = threading.Event()
        self.kept = b""

    def write(self, data: Any) -> int:
        if self.armed:
            self.armed = False
            self.writing.set()
            self.release.wait(5)
        return super().write(data)

    def close(self) -> None:
        if not self.closed:
            self.kept = self.getvalue()
        super().close()


def test_closing_the_trace_waits_for_a_write_in_progress() -> None:
    config = _link(Clock())[0].config
    trace = _HeldTrace()
    link = CoreLink(config, trace=trace, clock=Clock())
    run = RequestRun(request_id="", chat=REQUEST)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            link.open(run)
        except BaseException as error:
            errors.append(error)

    trace.armed = True
    writer = threading.Thread(target=start, daemon=True)
    writer.start()
    assert trace.writing.wait(5)  # the RequestStarted line is being written
    closer = threading.Thread(target=link.close_trace, args=(trace,), daemon=True)
    closer.start()
    closer.join(0.2)
    still_waiting = closer.is_alive()
    trace.release.set()
    writer.join(5)
    closer.join(5)
    assert still_waiting, "the trace was closed under a write"
    assert errors == []
    assert trace.closed
    assert [type(step.event).__name__ for step in decode_trace(trace.kept)[1]] == ["RequestStarted"]


def test_a_refused_duplicate_request_id_leaves_the_running_request_its_news() -> None:
    clock = Clock()
    link, _ = _link(clock)
    first, attempt = _started(link, "dup")
    with pytest.raises(InvalidEvent, match="dup"):
        link.open(RequestRun(request_id="dup", chat=REQUEST))
    # The first request still hears the core: its chunk is delivered, its cancel ends it.
    chunk = Chunk(text="hi")
    assert link.deliver(first, attempt, [chunk]) == [chunk]
    link.cancel(first)
    assert first.finished
    assert link.stats().in_flight == 0
