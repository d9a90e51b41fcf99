"""Shared state in the core (spec §26): what peer events may say, and what they change."""

from __future__ import annotations

import copy

import pytest

from lbcore import (
    Balancer,
    BreakerOpened,
    ClaimProbe,
    CooledDown,
    Failure,
    FailureKind,
    FailureSeen,
    InvalidEvent,
    PeerReport,
    ProbeClaimed,
    Publish,
    RequestStarted,
    TokensUsed,
    encode_line,
)

from .scenarios import config

SHARED = config("failover", "ab", peer_sharing=True, circuit_breaker_enabled=True)
ASKED = Failure(kind=FailureKind.HTTP, message="HTTP 429", status=429, retry_after_ms=500)


def report(at: int, *facts: object, origin: str = "p", seq: int = 1) -> PeerReport:
    return PeerReport(at=at, origin=origin, seq=seq, facts=facts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (report(5, BreakerOpened(backend="zz", recovery_left_ms=1)), "names no backend"),
        (report(5, TokensUsed(backend="a", tokens=-1)), "tokens must be a non-negative"),
        (
            report(5, FailureSeen(backend="a", kind=FailureKind.HTTP, status=500, age_ms=-2)),
            "age_ms",
        ),
        (report(5, CooledDown(backend="a", left_ms=-1, failure=ASKED)), "left_ms"),
        (report(5, origin=""), "origin must be a non-empty string"),
        (report(5, seq=-1), "seq must be a non-negative integer"),
        (report(5, RequestStarted(at=1, request_id="x")), "not a shared-state fact"),
        (report(1), "time went backwards"),
        (ProbeClaimed(at=5, backend="nope"), "names no backend"),
    ],
)
def test_a_bad_peer_event_is_refused_and_changes_nothing(event: object, message: str) -> None:
    balancer = Balancer(SHARED)
    balancer.handle(RequestStarted(at=2, request_id="r1"))
    before = copy.deepcopy(balancer)
    with pytest.raises(InvalidEvent, match=message):
        balancer.handle(event)  # type: ignore[arg-type]
    assert repr(balancer) == repr(before)
    assert encode_line(balancer.trace_header()) == encode_line(before.trace_header())
    assert balancer.stats() == before.stats()


def test_peer_events_need_peer_sharing() -> None:
    balancer = Balancer(config("failover", "ab", circuit_breaker_enabled=True))
    with pytest.raises(InvalidEvent, match=r"PeerReport needs settings\.peer_sharing"):
        balancer.handle(report(0, TokensUsed(backend="a", tokens=3)))
    with pytest.raises(InvalidEvent, match=r"ProbeClaimed needs settings\.peer_sharing"):
        balancer.handle(ProbeClaimed(at=0, backend="a"))


def test_without_sharing_nothing_is_published() -> None:
    balancer = Balancer(config("failover", "ab", circuit_breaker_enabled=True))
    actions = balancer.handle(RequestStarted(at=0, request_id="r1"))
    assert not any(isinstance(a, Publish | ClaimProbe) for a in actions)


def test_round_robin_shares_tokens_only() -> None:
    balancer = Balancer(config("round-robin", "ab", peer_sharing=True))
    opened = BreakerOpened(backend="a", recovery_left_ms=1_000)
    assert balancer.handle(report(0, opened, TokensUsed(backend="a", tokens=600))) == []
    assert balancer.stats().circuit_breaker_states == {}
    assert balancer.stats().current_tpm["a"] == 600.0


def test_a_peer_pause_is_cut_to_max_retry_after() -> None:
    balancer = Balancer(config("failover", "ab", peer_sharing=True, max_retry_after_ms=100))
    balancer.handle(report(10, CooledDown(backend="a", left_ms=5_000, failure=ASKED)))
    assert balancer.stats().cooldown_until == {"a": 110}


def test_an_older_peer_opening_does_not_move_a_later_one() -> None:
    balancer = Balancer(SHARED)
    balancer.handle(report(100, BreakerOpened(backend="a", recovery_left_ms=30_000)))
    assert balancer.handle(report(200, BreakerOpened(backend="a", recovery_left_ms=1_000))) == []
    assert balancer.stats().circuit_breaker_states["a"].opened_at == 100
