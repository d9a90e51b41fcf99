"""Every fault a local backend can play x failover and round-robin x sync, asyncio and trio.

Backend ``a`` plays the fault on every request; backend ``b`` answers
normally. For each case the caller must see exactly the answer (or the
exception) that spec/transports.md promises, with no hang, no output from two
backends, and every connection closed. The decisions are pinned by a snapshot
and must be the same, step for step, through all three clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from syrupy.assertion import SnapshotAssertion

from lbcore import FailureKind
from lbtransports import BackendError, FailoverError
from lbtransports.testing import (
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

from .harness import (
    FIRST_CHUNK_MS,
    MODES,
    BackendPlan,
    Outcome,
    client_config,
    decision_lines,
    run_scenario,
)


@dataclass(frozen=True)
class Answer:
    """The request succeeds with ``backend``'s whole answer."""

    backend: str


@dataclass(frozen=True)
class Raw:
    """The request fails with the serving backend's own failure, after ``chunks`` chunks."""

    kind: FailureKind
    status: int | None = None
    chunks: int = 0


@dataclass(frozen=True)
class Case:
    fault: Behaviour | None  # None: nothing listens, connections are refused
    provider: str
    failover: Answer | Raw
    round_robin: Answer | Raw


NET, TIMEOUT, HTTP = FailureKind.NETWORK, FailureKind.TIMEOUT, FailureKind.HTTP
PROTOCOL, PROVIDER = FailureKind.PROTOCOL, FailureKind.PROVIDER

CASES: dict[str, Case] = {
    "stream": Case(Stream(3), "openai", Answer("a"), Answer("a")),
    "stream-anthropic": Case(Stream(4), "anthropic", Answer("a"), Answer("a")),
    "stream-gemini": Case(Stream(2), "gemini", Answer("a"), Answer("a")),
    "refused": Case(None, "openai", Answer("b"), Raw(NET)),
    "429": Case(Fail(429), "openai", Answer("b"), Raw(HTTP, 429)),
    # Honoured (behaviour §19): a waits out the pause before its retry, so keep it short.
    "429-retry-after": Case(Fail(429, retry_after="1"), "anthropic", Answer("b"), Raw(HTTP, 429)),
    "401": Case(Fail(401), "gemini", Answer("b"), Raw(HTTP, 401)),
    "402": Case(Fail(402), "openai", Answer("b"), Raw(HTTP, 402)),
    "403": Case(Fail(403), "anthropic", Answer("b"), Raw(HTTP, 403)),
    "400": Case(Fail(400), "openai", Answer("b"), Raw(HTTP, 400)),
    "500": Case(Fail(500), "gemini", Answer("b"), Raw(HTTP, 500)),
    "502": Case(Fail(502), "openai", Answer("b"), Raw(HTTP, 502)),
    "503": Case(Fail(503), "anthropic", Answer("b"), Raw(HTTP, 503)),
    "hang": Case(Hang(), "openai", Answer("b"), Raw(TIMEOUT)),
    "stall-before-first-chunk": Case(Stall(), "anthropic", Answer("b"), Raw(TIMEOUT)),
    "keepalives-only": Case(KeepAlive(), "gemini", Answer("b"), Raw(TIMEOUT)),
    "reset-before-headers": Case(Reset(before_headers=True), "openai", Answer("b"), Raw(NET)),
    "reset-before-first-chunk": Case(Reset(), "gemini", Answer("b"), Raw(NET)),
    "malformed-json": Case(Malformed(), "openai", Answer("b"), Raw(PROTOCOL)),
    "malformed-sse": Case(Malformed(kind="sse"), "anthropic", Answer("b"), Raw(PROTOCOL)),
    "no-terminator-empty": Case(NoTerminator(chunks=0), "gemini", Answer("b"), Raw(NET)),
    "error-event": Case(ErrorEvent(), "anthropic", Answer("b"), Raw(PROVIDER)),
    # After the first chunk the answer is committed: the failure comes back raw.
    "reset-mid-stream": Case(Reset(after_chunks=2), "openai", Raw(NET, None, 2), Raw(NET, None, 2)),
    "stall-mid-stream": Case(
        Stall(after_chunks=2), "anthropic", Raw(TIMEOUT, None, 2), Raw(TIMEOUT, None, 2)
    ),
    "keepalives-mid-stream": Case(
        KeepAlive(after_chunks=1), "gemini", Raw(TIMEOUT, None, 1), Raw(TIMEOUT, None, 1)
    ),
    "malformed-mid-stream": Case(
        Malformed(after_chunks=2), "gemini", Raw(PROTOCOL, None, 2), Raw(PROTOCOL, None, 2)
    ),
    "no-terminator": Case(NoTerminator(chunks=2), "openai", Raw(NET, None, 2), Raw(NET, None, 2)),
    "error-event-mid-stream": Case(
        ErrorEvent(after_chunks=1), "anthropic", Raw(PROVIDER, None, 1), Raw(PROVIDER, None, 1)
    ),
}

HEALTHY = Stream(3)


def _plans(case: Case) -> list[BackendPlan]:
    faulty = (
        BackendPlan("a", case.provider, refused=True)
        if case.fault is None
        else BackendPlan("a", case.provider, default=case.fault)
    )
    return [faulty, BackendPlan("b", "openai", default=HEALTHY)]


def _check(outcome: Outcome, expected: Answer | Raw, case: Case) -> None:
    if isinstance(expected, Answer):
        assert outcome.error is None, f"expected an answer, got {outcome.error!r}"
        assert outcome.backend == expected.backend
        # Exactly that backend's whole answer: nothing missing, repeated or mixed in.
        stream = case.fault if expected.backend == "a" else HEALTHY
        assert isinstance(stream, Stream)
        assert [t for t in outcome.texts if t] == list(stream.texts(expected.backend))
        return
    error = outcome.error
    assert isinstance(error, BackendError), f"expected BackendError, got {error!r}"
    assert error.backend == "a"
    assert error.failure.kind == expected.kind, error.failure
    assert error.status == expected.status
    assert error.chunks_delivered == expected.chunks
    # The partial answer the caller holds is a's alone, and nothing more.
    texts = [t for t in outcome.texts if t]
    assert texts == [f"a-{i} " for i in range(expected.chunks)]


SETTINGS = {
    "failover": {"failover_retry_count": 2, "timeout_ms": FIRST_CHUNK_MS},
    # Round-robin ignores every failover knob: no retry, no first-chunk deadline.
    "round-robin": {},
}


@pytest.mark.parametrize("strategy", ["failover", "round-robin"])
@pytest.mark.parametrize("name", list(CASES))
def test_fault(name: str, strategy: str, snapshot: SnapshotAssertion) -> None:
    case = CASES[name]
    expected = case.failover if strategy == "failover" else case.round_robin
    plans = _plans(case)
    lines_by_mode = {}
    for mode in MODES:
        (outcome,) = run_scenario(
            mode,
            plans,
            lambda backends: client_config(
                backends, plans, strategy=strategy, settings=SETTINGS[strategy]
            ),
        )
        _check(outcome, expected, case)
        lines_by_mode[mode] = decision_lines(outcome.trace)
    # The same scenario gives the same decisions through every client.
    assert lines_by_mode["asyncio"] == lines_by_mode["sync"]
    assert lines_by_mode["trio"] == lines_by_mode["sync"]
    assert lines_by_mode["sync"] == snapshot


def test_every_backend_failing_gives_the_aggregate_error() -> None:
    plans = [
        BackendPlan("a", "openai", default=Fail(429, message="slow down")),
        BackendPlan("b", "anthropic", default=Fail(429, message="busy")),
        BackendPlan("c", "gemini", default=Fail(429, message="later")),
    ]
    for mode in MODES:
        (outcome,) = run_scenario(
            mode,
            plans,
            lambda backends: client_config(backends, plans, settings={"failover_retry_count": 1}),
        )
        error = outcome.error
        assert isinstance(error, FailoverError)
        assert [f.backend for f in error.failures] == ["a", "b", "c"]
        assert [f.failure.message for f in error.failures] == ["slow down", "busy", "later"]
        assert error.status == 429
        assert error.category == "rate_limit"
        assert error.retryable
        assert outcome.texts == []
        assert "failover exhausted" in str(error)
