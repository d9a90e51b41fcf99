"""Compression (§11.3), operator read-outs (§10.4) and nested failures (§5.10), stepwise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import (
    AllContextLimitsExceeded,
    BackendFailed,
    BackendState,
    Balancer,
    BreakerState,
    CompressionFailed,
    CompressPrompt,
    Event,
    FailoverIndexReset,
    FailureKind,
    InvalidEvent,
    PromptCompressed,
    RequestAborted,
    RequestCompleted,
    RequestFailed,
    SkipBackend,
    SkipReason,
    StartAttempt,
    run,
)

from .scenarios import cancel, chunk, config, fail, ok, served, start, tick


def _of(kind: type, actions: list[object]) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


def _squeezed(strategy: str = "failover", **settings: object) -> Balancer:
    return Balancer(
        config(
            strategy,
            "ab",
            windows={"a": 1000},
            context_limit=8000,
            context_compression=True,
            **settings,
        )
    )


# ------------------------------------------------------------------ compression


def test_a_prompt_over_the_limit_is_offered_for_compression_before_anything_is_charged() -> None:
    lb = _squeezed()
    actions = lb.handle(start(0, "r1", prompt_tokens=5000))
    assert actions == [CompressPrompt(request_id="r1", backend="a", tokens=5000, limit=1000)]
    stats = lb.stats()
    assert stats.last_selected is None and stats.backend_metrics == {} and stats.in_flight == 1
    actions = lb.handle(PromptCompressed(at=5, request_id="r1", prompt_tokens=1000))  # equal fits
    assert [(a.backend, a.attempt) for a in _of(StartAttempt, actions)] == [("a", 1)]


def test_without_the_setting_the_guard_rejects_as_before() -> None:
    lb = Balancer(config("failover", "ab", windows={"a": 1000}, context_limit=8000))
    actions = lb.handle(start(0, "r1", prompt_tokens=5000))
    assert not _of(CompressPrompt, actions)
    assert [a.reason for a in _of(SkipBackend, actions)] == [SkipReason.CONTEXT_LIMIT]


def test_a_prompt_that_fits_is_never_offered() -> None:
    lb = _squeezed()
    actions = lb.handle(start(0, "r1", prompt_tokens=900))
    assert not _of(CompressPrompt, actions)
    assert _of(StartAttempt, actions)


def test_still_too_big_after_compression_is_a_rejection_with_the_original_size() -> None:
    lb = _squeezed()
    lb.handle(start(0, "r1", prompt_tokens=5000))
    actions = lb.handle(PromptCompressed(at=1, request_id="r1", prompt_tokens=1001))
    (skip,) = _of(SkipBackend, actions)
    assert skip.detail == "estimated 5000 tokens exceeds the limit 1000 (1001 after compression)"
    # b's limit is 8000: the original fits there, no second offer.
    assert [a.backend for a in _of(StartAttempt, actions)] == ["b"]
    assert lb.current_failover_index() == 1


def test_a_hook_failure_moves_on_and_is_a_context_limit_failure() -> None:
    lb = Balancer(
        config("failover", "ab", windows={"a": 1000, "b": 1000}, context_compression=True)
    )
    lb.handle(start(0, "r1", prompt_tokens=5000))
    actions = lb.handle(PromptCompressed(at=1, request_id="r1", error="boom"))
    assert _of(CompressPrompt, actions) == [
        CompressPrompt(request_id="r1", backend="b", tokens=5000, limit=1000)
    ]
    (failed,) = _of(RequestFailed, lb.handle(PromptCompressed(at=2, request_id="r1", error="x")))
    assert isinstance(failed.error, AllContextLimitsExceeded)
    first = failed.error.failures[0].failure
    assert first.code == "compression_failed"
    assert first.message == (
        'Load balancer profile "lb" sub-profile "a" compression callback failed: boom'
    )


def test_round_robin_hook_failure_is_compression_failed() -> None:
    lb = _squeezed("round-robin")
    lb.handle(start(0, "r1", prompt_tokens=5000))
    (failed,) = _of(RequestFailed, lb.handle(PromptCompressed(at=1, request_id="r1", error="e")))
    assert isinstance(failed.error, CompressionFailed)
    assert failed.error.backend == "a" and not failed.error.retryable
    assert lb.stats().total_requests == 0


def test_round_robin_runs_its_checks_again_after_compression() -> None:
    lb = _squeezed("round-robin")
    lb.handle(start(0, "r1", prompt_tokens=5000))
    actions = lb.handle(PromptCompressed(at=1, request_id="r1", prompt_tokens=10))
    assert [a.backend for a in _of(StartAttempt, actions)] == ["a"]
    assert lb.stats().profile_counts == {"a": 1}


def test_cancel_and_deadline_end_a_compressing_request_without_a_cancel_attempt() -> None:
    lb = _squeezed(deadline_ms=100)
    lb.handle(start(0, "r1", prompt_tokens=5000))
    assert lb.handle(cancel(1, "r1")) == [RequestAborted(request_id="r1")]
    lb.handle(start(2, "r2", prompt_tokens=5000))
    assert lb.next_deadline() == 102
    (failed,) = lb.handle(tick(102))
    assert isinstance(failed, RequestFailed)


def test_a_half_open_probe_is_not_held_while_compressing() -> None:
    lb = _squeezed(
        circuit_breaker_enabled=True,
        circuit_breaker_failure_threshold=1,
        circuit_breaker_recovery_timeout_ms=10,
        failover_retry_count=1,
    )
    lb.handle(start(0, "r0"))
    lb.handle(fail(1, "r0", 1, 503))  # a opens; r0 moves to b
    lb.handle(fail(2, "r0", 2, 400))
    lb.handle(start(20, "r1", prompt_tokens=5000))  # a half-open; offered for compression
    assert lb.stats().circuit_breaker_states["a"].probe_holder is None
    actions = lb.handle(PromptCompressed(at=21, request_id="r1", prompt_tokens=10))
    (started,) = _of(StartAttempt, actions)
    assert started.backend == "a" and started.probe


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (PromptCompressed(at=1, request_id="r1"), "exactly one of"),
        (PromptCompressed(at=1, request_id="r1", prompt_tokens=1, error="e"), "exactly one of"),
        (PromptCompressed(at=1, request_id="r1", prompt_tokens=-1), "non-negative"),
    ],
)
def test_malformed_compression_answers_are_refused(event: Event, message: str) -> None:
    lb = _squeezed()
    lb.handle(start(0, "r1", prompt_tokens=5000))
    with pytest.raises(InvalidEvent, match=message):
        lb.handle(event)
    assert lb.handle(PromptCompressed(at=1, request_id="r1", prompt_tokens=5))  # unchanged


def test_an_answer_nobody_asked_for_is_refused() -> None:
    lb = _squeezed()
    lb.handle(start(0, "r1", prompt_tokens=10))
    with pytest.raises(InvalidEvent, match="no compression was asked for"):
        lb.handle(PromptCompressed(at=1, request_id="r1", prompt_tokens=5))


# ------------------------------------------------------------------ read-outs


def test_reset_failover_index_is_an_event_and_replays() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_count=1), record=True)
    lb.handle(start(0, "r1"))
    lb.handle(fail(1, "r1", 1, 503))
    for event in served(2, "r1", 2):
        lb.handle(event)
    assert lb.current_failover_index() == 1 and lb.last_selected() == "b"
    assert lb.reset_failover_index() == []
    assert lb.current_failover_index() == 0
    steps = lb.take_steps()
    assert isinstance(steps[-1].event, FailoverIndexReset)
    assert run(lb.config, [s.event for s in steps]) == steps


def test_backend_states_join_breaker_cooldown_tpm_and_slots() -> None:
    lb = Balancer(
        config(
            "failover",
            "ab",
            circuit_breaker_enabled=True,
            circuit_breaker_failure_threshold=1,
            failover_retry_count=1,
            max_concurrent=4,
        )
    )
    assert lb.backend_states()[0] == BackendState(
        name="a",
        breaker=BreakerState.CLOSED,
        failures_in_window=0,
        half_open_after=None,
        cooldown_until=None,
        tpm=0.0,
        slots_used=0,
        max_concurrent=4,
    )
    lb.handle(start(0, "r1"))
    lb.handle(fail(10, "r1", 1, 429, retry_after_ms=500))
    a, b = lb.backend_states()
    assert (a.breaker, a.failures_in_window, a.half_open_after) == (BreakerState.OPEN, 1, 30_010)
    assert a.cooldown_until == 510 and a.slots_used == 0
    assert b.slots_used == 1 and b.breaker is BreakerState.CLOSED
    for event in served(20, "r1", 2):
        lb.handle(event)
    assert lb.backend_states()[1].tpm == 30.0


# ------------------------------------------------------------------ nested balancers


def test_a_terminal_failure_ends_failover_at_once_and_charges_nothing() -> None:
    lb = Balancer(config("failover", "ab", circuit_breaker_enabled=True))
    lb.handle(start(0, "r1"))
    (failed,) = lb.handle(fail(1, "r1", 1, kind=FailureKind.TERMINAL, message="inner said no"))
    assert isinstance(failed, RequestFailed) and isinstance(failed.error, BackendFailed)
    assert not failed.error.retryable and failed.error.message == "inner said no"
    stats = lb.stats()
    assert stats.backend_metrics["a"].failures == 0 and stats.circuit_breaker_states == {}


def test_a_terminal_failure_on_a_probe_hands_the_probe_back() -> None:
    lb = Balancer(
        config(
            "failover",
            "ab",
            failover_retry_count=1,
            circuit_breaker_enabled=True,
            circuit_breaker_failure_threshold=1,
            circuit_breaker_recovery_timeout_ms=100,
        )
    )
    lb.handle(start(0, "r1"))
    lb.handle(fail(1, "r1", 1, 503))  # a's breaker opens; r1 moves on to b
    lb.handle(ok(2, "r1", 2))
    lb.reset_failover_index()  # b was sticky: start at a again
    (probe,) = lb.handle(start(200, "r2"))[-1:]  # a's recovery time is over: r2 probes it
    assert isinstance(probe, StartAttempt) and probe.backend == "a" and probe.probe
    lb.handle(fail(201, "r2", 1, kind=FailureKind.TERMINAL, message="inner said no"))
    # The probe went back with r2: the next request probes a again.
    actions = lb.handle(start(300, "r3"))
    (started,) = _of(StartAttempt, actions)
    assert started.backend == "a" and started.probe


def test_a_terminal_failure_after_output_is_recorded_like_any_mid_stream_failure() -> None:
    lb = Balancer(config("failover", "ab"))
    lb.handle(start(0, "r1"))
    lb.handle(served(1, "r1", 1)[0])
    (failed,) = lb.handle(fail(2, "r1", 1, kind=FailureKind.TERMINAL, message="x"))
    assert isinstance(failed.error, BackendFailed) and failed.error.chunks_delivered == 1
    assert lb.stats().backend_metrics["a"].failures == 1


def test_a_nested_failure_is_transient() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_count=1))
    lb.handle(start(0, "r1"))
    lb.handle(fail(1, "r1", 1, kind=FailureKind.NESTED, message="inner"))
    (failed,) = _of(RequestFailed, lb.handle(fail(2, "r1", 2, 400)))
    assert failed.error.retryable


# ------------------------------------------------------------------ properties

_answers = st.one_of(
    st.integers(0, 9000).map(lambda n: ("tokens", n)),
    st.just(("error", 0)),
    st.just(("cancel", 0)),
)


@settings(max_examples=150, deadline=None)
@given(
    strategy=st.sampled_from(["failover", "round-robin"]),
    windows=st.lists(st.integers(500, 9000), min_size=3, max_size=3),
    prompts=st.lists(st.integers(0, 9000), min_size=1, max_size=6),
    answers=st.lists(_answers, max_size=30),
    outcomes=st.lists(st.sampled_from(["ok", "503", "400"]), max_size=30),
)
def test_compression_is_offered_only_when_needed_and_every_request_ends_once(
    strategy: str,
    windows: list[int],
    prompts: list[int],
    answers: list[tuple[str, int]],
    outcomes: list[str],
) -> None:
    cfg = config(
        strategy,
        "abc",
        windows=dict(zip("abc", windows, strict=True)),
        context_limit=9000,
        context_compression=True,
    )
    limits = {b.name: cfg.target_context_limit(b) for b in cfg.backends}
    lb = Balancer(cfg, record=True)
    now, answer_at, outcome_at = 0, iter(answers), iter(outcomes)
    terminals: dict[str, int] = {}
    for n, prompt in enumerate(prompts):
        rid = f"r{n}"
        offered: set[str] = set()
        sizes: dict[str, int] = {}
        pending = lb.handle(start(now, rid, prompt_tokens=prompt))
        for _ in range(40):
            now += 1
            for action in pending:
                if isinstance(action, RequestCompleted | RequestFailed | RequestAborted):
                    terminals[rid] = terminals.get(rid, 0) + 1
            asked = _of(CompressPrompt, pending)
            started = _of(StartAttempt, pending)
            for a in asked:
                assert a.tokens == prompt and prompt > limits[a.backend]  # type: ignore[operator]
                assert a.backend not in offered
                offered.add(a.backend)
            for a in started:
                assert sizes.get(a.backend, prompt) <= limits[a.backend]  # type: ignore[operator]
            if rid in terminals:
                break
            if asked:
                kind, tokens = next(answer_at, ("tokens", 0))
                backend = asked[0].backend
                if kind == "cancel":
                    pending = lb.handle(cancel(now, rid))
                elif kind == "error":
                    pending = lb.handle(PromptCompressed(at=now, request_id=rid, error="e"))
                else:
                    sizes[backend] = tokens
                    pending = lb.handle(
                        PromptCompressed(at=now, request_id=rid, prompt_tokens=tokens)
                    )
            elif started:
                attempt = started[-1].attempt
                outcome = next(outcome_at, "ok")
                if outcome == "ok":
                    lb.handle(chunk(now, rid, attempt))
                    now += 1
                    pending = lb.handle(ok(now, rid, attempt, 10, 20))
                else:
                    pending = lb.handle(fail(now, rid, attempt, int(outcome)))
            else:
                pytest.fail(f"{rid} has nothing to do: {pending}")
        assert terminals.get(rid) == 1
        if strategy == "failover" and n % 2:
            lb.reset_failover_index()
            assert lb.current_failover_index() == 0
    steps = lb.take_steps()
    assert run(cfg, [s.event for s in steps]) == steps
    states = lb.backend_states()
    assert [s.name for s in states] == ["a", "b", "c"]
    assert {s.name: s.tpm for s in states} == lb.stats().current_tpm
