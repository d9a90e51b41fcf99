"""The named scenarios behind the golden traces in ``spec/traces/``.

Each scenario is a config and a list of events, written by hand from the
behaviour in ``spec/behaviour.md``. The balancer's answers are not written
here: they are recorded into ``spec/traces/<name>.jsonl`` by the snapshot test
and reviewed there, one decision per line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbcore import (
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    AttemptTimedOut,
    BackendSpec,
    BalancerConfig,
    ChunkReceived,
    Event,
    Failure,
    FailureKind,
    RequestCancelled,
    RequestStarted,
    Settings,
    SlotTimedOut,
    StatsReset,
    Tick,
    TimeoutPhase,
)

MINUTE = 60_000


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str
    about: str
    config: BalancerConfig
    events: tuple[Event, ...]


def config(
    strategy: str,
    names: str = "abc",
    *,
    windows: dict[str, int] | None = None,
    context_limit: int | None = None,
    **settings: Any,
) -> BalancerConfig:
    windows = windows or {}
    return BalancerConfig(
        profile_name="lb",
        strategy=strategy,
        backends=tuple(
            BackendSpec(
                name=n, provider="openai", model=f"model-{n}", context_window=windows.get(n)
            )
            for n in names
        ),
        settings=Settings.from_mapping(settings),
        context_limit=context_limit,
    )


def start(at: int, rid: str, **fields: Any) -> RequestStarted:
    return RequestStarted(at=at, request_id=rid, **fields)


def chunk(at: int, rid: str, attempt: int) -> ChunkReceived:
    return ChunkReceived(at=at, request_id=rid, attempt=attempt)


def ok(
    at: int, rid: str, attempt: int, tokens_in: int = 0, tokens_out: int = 0
) -> AttemptSucceeded:
    return AttemptSucceeded(
        at=at, request_id=rid, attempt=attempt, input_tokens=tokens_in, output_tokens=tokens_out
    )


def fail(
    at: int,
    rid: str,
    attempt: int,
    status: int | None = None,
    *,
    kind: FailureKind | None = None,
    message: str | None = None,
    provider_type: str | None = None,
    retry_after_ms: int | None = None,
) -> AttemptFailed:
    if kind is None:
        kind = FailureKind.HTTP if status is not None else FailureKind.NETWORK
    if message is None:
        message = f"HTTP {status}" if status is not None else "connection refused"
    failure = Failure(
        kind=kind,
        message=message,
        status=status,
        provider_type=provider_type,
        retry_after_ms=retry_after_ms,
    )
    return AttemptFailed(at=at, request_id=rid, attempt=attempt, failure=failure)


def tick(at: int) -> Tick:
    return Tick(at=at)


def cancel(at: int, rid: str) -> RequestCancelled:
    return RequestCancelled(at=at, request_id=rid)


def served(
    at: int, rid: str, attempt: int, tokens_in: int = 10, tokens_out: int = 20
) -> list[Event]:
    """A clean two-chunk answer for ``attempt``, finished 5 ms after ``at``."""
    return [
        chunk(at, rid, attempt),
        chunk(at + 2, rid, attempt),
        ok(at + 5, rid, attempt, tokens_in, tokens_out),
    ]


SCENARIOS: list[Scenario] = []


def scenario(group: str, config_: BalancerConfig) -> Callable[[Callable[[], list[Event]]], None]:
    def register(build: Callable[[], list[Event]]) -> None:
        SCENARIOS.append(
            Scenario(
                name=build.__name__,
                group=group,
                about=(build.__doc__ or "").strip(),
                config=config_,
                events=tuple(build()),
            )
        )

    return register


# --------------------------------------------------------------- round-robin


@scenario("round-robin", config("round-robin"))
def rr_order_wraps() -> list[Event]:
    """Four requests go to a, b, c, then a again; stats count dispatches."""
    events: list[Event] = []
    for n, rid in enumerate(["r1", "r2", "r3", "r4"]):
        events += [start(n * 10, rid), *served(n * 10 + 1, rid, 1)]
    return events


@scenario("round-robin", config("round-robin", "a"))
def rr_single_backend() -> list[Event]:
    """One backend serves every request; the selection is announced once."""
    return [start(0, "r1"), *served(1, "r1", 1), start(10, "r2"), *served(11, "r2", 1)]


@scenario("round-robin", config("round-robin", "ab", failover_retry_count=3, timeout_ms=50))
def rr_failure_is_raw_and_never_retried() -> list[Event]:
    """A 503 ends the request with the raw failure: no retry, no failover, no timeout."""
    return [
        start(0, "r1"),
        fail(5, "r1", 1, 503),
        start(10, "r2"),
        tick(500),
        *served(501, "r2", 1),
    ]


@scenario("round-robin", config("round-robin", "ab"))
def rr_mid_stream_failure() -> list[Event]:
    """A reset after the first chunk is reported raw, with the chunks already delivered."""
    return [start(0, "r1"), chunk(3, "r1", 1), fail(7, "r1", 1, message="connection reset")]


@scenario("round-robin", config("round-robin", "ab", windows={"a": 1000}, context_limit=10_000))
def rr_context_limit_still_advances() -> list[Event]:
    """A prompt too large for a is rejected, yet the next request goes to b."""
    return [
        start(0, "r1", prompt_tokens=5000),
        start(1, "r2", prompt_tokens=5000),
        *served(2, "r2", 1),
    ]


@scenario("stats", config("round-robin"))
def rr_stats_reset_keeps_the_index() -> list[Event]:
    """Resetting stats clears counts and the selection, never the round-robin index."""
    return [
        start(0, "r1"),
        *served(1, "r1", 1),
        start(10, "r2"),
        *served(11, "r2", 1),
        StatsReset(at=20),
        start(30, "r3"),
        *served(31, "r3", 1),
    ]


@scenario("round-robin", config("round-robin", "ab"))
def rr_budget_zero() -> list[Event]:
    """With no attempt left in its budget a request is not dispatched at all."""
    return [start(0, "r1", attempt_budget=0), start(1, "r2", attempt_budget=1), *served(2, "r2", 1)]


# ------------------------------------------------------------------ failover


@scenario("failover selection", config("failover"))
def failover_first_backend_serves() -> list[Event]:
    """The first backend answers; nothing else is tried."""
    return [start(0, "r1"), *served(4, "r1", 1)]


@scenario("failover selection", config("failover"))
def failover_tries_in_order() -> list[Event]:
    """A 400 is not retried on the same backend but still moves on: a, b, then c serves."""
    return [
        start(0, "r1"),
        fail(3, "r1", 1, 400),
        fail(6, "r1", 2, 400),
        *served(9, "r1", 3),
    ]


@scenario("failover selection", config("failover"))
def failover_all_fail() -> list[Event]:
    """Every backend fails twice with 503: six attempts, one retryable aggregate."""
    return [start(0, "r1"), *[fail(t, "r1", t, 503) for t in range(1, 7)]]


@scenario("settings", config("failover", "ab", failover_retry_count=1))
def settings_retry_count_one() -> list[Event]:
    """With one attempt per backend a malformed answer moves straight to the next."""
    return [
        start(0, "r1"),
        fail(2, "r1", 1, kind=FailureKind.PROTOCOL, message="invalid JSON in stream"),
        *served(4, "r1", 2),
    ]


@scenario("settings", config("failover", "ab", failover_retry_delay_ms=100))
def settings_retry_delay() -> list[Event]:
    """The retry waits for its delay: nothing happens on an early tick, it starts on the due one."""
    return [start(0, "r1"), fail(10, "r1", 1, 503), tick(50), tick(110), *served(115, "r1", 2)]


@scenario("settings", config("failover", "ab", failover_status_codes=[408]))
def settings_custom_status_codes() -> list[Event]:
    """Only listed statuses are retried here: 408 is, 503 moves on at once."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 408),
        fail(2, "r1", 2, 503),
        *served(3, "r1", 3),
    ]


@scenario("settings", config("failover", "ab", failover_on_network_errors=False))
def settings_network_errors_off() -> list[Event]:
    """Turning network failover off still retries a status-less error (the reference's rule 4)."""
    return [start(0, "r1"), fail(1, "r1", 1), fail(2, "r1", 2), *served(3, "r1", 3)]


@scenario("settings", config("failover", "ab", failover_retry_count=999))
def settings_retry_count_is_capped() -> list[Event]:
    """999 attempts per backend act as 100; a failure on the 100th attempt moves on."""
    events: list[Event] = [start(0, "r1")]
    events += [fail(n, "r1", n, 503) for n in range(1, 101)]
    return [*events, *served(101, "r1", 101)]


# ---------------------------------------------------------------- streaming


@scenario("streaming", config("failover"))
def streaming_mid_stream_429_is_raw() -> list[Event]:
    """After the first chunk a 429 is the caller's answer: no retry, no failover."""
    return [start(0, "r1"), chunk(2, "r1", 1), chunk(3, "r1", 1), fail(4, "r1", 1, 429)]


@scenario("streaming", config("failover"))
def streaming_retry_before_first_chunk() -> list[Event]:
    """A connection failure before any chunk is retried; only the retry's chunks count."""
    return [start(0, "r1"), fail(1, "r1", 1, message="connection reset"), *served(2, "r1", 2)]


@scenario("streaming", config("failover"))
def streaming_empty_answer_succeeds() -> list[Event]:
    """A stream that ends cleanly with no chunk is a success with zero chunks."""
    return [start(0, "r1"), ok(3, "r1", 1)]


# --------------------------------------------------------------- sticky index


@scenario("sticky index", config("failover"))
def sticky_stays_on_success() -> list[Event]:
    """After a fails and b serves, the next request starts at b."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 400),
        *served(2, "r1", 2),
        start(10, "r2"),
        *served(11, "r2", 1),
    ]


@scenario("sticky index", config("failover", failover_retry_count=1))
def sticky_resets_after_failed_rotation() -> list[Event]:
    """Sticky at c, everything fails: the next request starts again from a."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 400),
        fail(2, "r1", 2, 400),
        *served(3, "r1", 3),
        start(10, "r2"),
        fail(11, "r2", 1, 503),
        fail(12, "r2", 2, 503),
        fail(13, "r2", 3, 503),
        start(20, "r3"),
        *served(21, "r3", 1),
    ]


@scenario("sticky index", config("failover", failover_retry_count=1))
def sticky_wraps_around() -> list[Event]:
    """Sticky at c, c fails: the rotation wraps to a, which serves and becomes sticky."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 400),
        fail(2, "r1", 2, 400),
        *served(3, "r1", 3),
        start(10, "r2"),
        fail(11, "r2", 1, 500),
        *served(12, "r2", 2),
        start(20, "r3"),
        *served(21, "r3", 1),
    ]


@scenario("sticky index", config("failover", failover_retry_count=1))
def sticky_newer_request_wins() -> list[Event]:
    """An older request failing late cannot move the index a newer request already set."""
    return [
        start(0, "r1"),
        start(1, "r2"),
        fail(2, "r2", 1, 400),
        *served(3, "r2", 2),
        fail(10, "r1", 1, 400),
        fail(11, "r1", 2, 400),
        fail(12, "r1", 3, 400),
        start(20, "r3"),
        *served(21, "r3", 1),
    ]


# -------------------------------------------------------------------- errors


@scenario("errors", config("failover"))
def errors_401_fails_over_at_once() -> list[Event]:
    """401, 402 and 403 skip the remaining retries on that backend."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 401, message="Unauthorized"),
        fail(2, "r1", 2, 402, message="Payment required"),
        *served(3, "r1", 3),
    ]


@scenario("errors", config("failover", "ab"))
def errors_setup_failure_moves_on() -> list[Event]:
    """A missing credential fails before sending: no retry, no failure counted in metrics."""
    return [
        start(0, "r1"),
        fail(0, "r1", 1, kind=FailureKind.SETUP, message='backend "a" has no credential'),
        *served(2, "r1", 2),
    ]


@scenario("errors", config("failover", "abcde", failover_retry_count=1))
def errors_aggregate_summarises_three() -> list[Event]:
    """Five failures: the message shows three and says '+2 more'; the list keeps all five."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 401, message="Unauthorized"),
        fail(2, "r1", 2, 429, message="Rate limit", provider_type="rate_limit_error"),
        fail(3, "r1", 3, kind=FailureKind.NETWORK, message="connection refused"),
        fail(4, "r1", 4, 500, message="Internal error"),
        fail(5, "r1", 5, 400, message="Bad request"),
    ]


@scenario("retryable matrix", config("failover", "ab", failover_retry_count=1))
def retryable_429_and_400() -> list[Event]:
    """One transient failure is enough: 429 + 400 is retryable, with no shared status."""
    return [start(0, "r1"), fail(1, "r1", 1, 429), fail(2, "r1", 2, 400)]


@scenario("retryable matrix", config("failover", "ab", failover_retry_count=1))
def retryable_all_401_is_not() -> list[Event]:
    """Authentication failures everywhere: not retryable, category authentication."""
    return [start(0, "r1"), fail(1, "r1", 1, 401), fail(2, "r1", 2, 401)]


@scenario("retryable matrix", config("failover", "ab", failover_retry_count=1))
def retryable_overloaded_in_stream() -> list[Event]:
    """Provider-reported overload (no status) is transient and a server error."""
    return [
        start(0, "r1"),
        fail(
            1,
            "r1",
            1,
            kind=FailureKind.PROVIDER,
            message="Overloaded",
            provider_type="overloaded_error",
        ),
        fail(
            2,
            "r1",
            2,
            kind=FailureKind.PROVIDER,
            message="Overloaded",
            provider_type="overloaded_error",
        ),
    ]


@scenario("retryable matrix", config("failover", "ab", failover_retry_count=1))
def retryable_plain_errors_are_not() -> list[Event]:
    """Malformed answers everywhere: not retryable, no category."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, kind=FailureKind.PROTOCOL, message="invalid JSON"),
        fail(2, "r1", 2, kind=FailureKind.PROTOCOL, message="invalid JSON"),
    ]


# ----------------------------------------------------------------- 429 rules


@scenario("429 rules", config("failover"))
def rate_limit_transient_is_retried() -> list[Event]:
    """A single 429 is retried on the same backend, which then serves."""
    return [start(0, "r1"), fail(1, "r1", 1, 429, retry_after_ms=0), *served(2, "r1", 2)]


@scenario("429 rules", config("failover"))
def rate_limit_everywhere_six_calls() -> list[Event]:
    """Three backends on 429: six attempts, a retryable rate_limit aggregate with status 429."""
    failures = [fail(t, "r1", t, 429, message="Rate limit") for t in range(1, 7)]
    return [start(0, "r1"), *failures]


# ------------------------------------------------------------ circuit breaker

_BREAKER = {
    "circuit_breaker_enabled": True,
    "circuit_breaker_failure_threshold": 2,
    "circuit_breaker_failure_window_ms": 100,
    "circuit_breaker_recovery_timeout_ms": 1000,
    "failover_retry_count": 1,
}


def trip_a() -> list[Event]:
    """a fails at 1 and 12 (threshold 2, window 100) and trips; b's failures stay apart.

    r2 ends in a failed rotation, so the sticky index is back at a afterwards.
    """
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 500),
        *served(2, "r1", 2),
        start(10, "r2"),
        fail(11, "r2", 1, 400),
        fail(12, "r2", 2, 500),
    ]


@scenario("circuit breaker", config("failover", "ab", **_BREAKER))
def breaker_opens_and_skips() -> list[Event]:
    """Two failures on a within the window trip its breaker; the next request skips a."""
    return [*trip_a(), start(20, "r3"), *served(21, "r3", 1)]


@scenario("circuit breaker", config("failover", "ab", **_BREAKER))
def breaker_probe_closes() -> list[Event]:
    """After the recovery time one probe goes to a, succeeds, and closes the breaker."""
    return [*trip_a(), start(1100, "r3"), *served(1101, "r3", 1)]


@scenario("circuit breaker", config("failover", "ab", **_BREAKER))
def breaker_probe_fails_reopens() -> list[Event]:
    """A failed probe opens the breaker again with a fresh recovery time."""
    return [
        *trip_a(),
        start(1100, "r3"),
        fail(1101, "r3", 1, 500),
        *served(1102, "r3", 2),
        start(1200, "r4"),
        fail(1201, "r4", 1, 400),
    ]


@scenario(
    "circuit breaker",
    config("failover", "ab", **{**_BREAKER, "circuit_breaker_failure_threshold": 1}),
)
def breaker_all_unhealthy() -> list[Event]:
    """With every breaker open nothing is attempted and the request fails at once."""
    return [start(0, "r1"), fail(1, "r1", 1, 503), fail(2, "r1", 2, 503), start(10, "r2")]


@scenario("circuit breaker", config("failover", "ab", **_BREAKER))
def breaker_window_prunes_old_failures() -> list[Event]:
    """Failures further apart than the window never add up to the threshold."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 503),
        fail(2, "r1", 2, 400),
        start(200, "r2"),
        fail(201, "r2", 1, 503),
        fail(202, "r2", 2, 400),
        start(400, "r3"),
        *served(401, "r3", 1),
    ]


@scenario("circuit breaker", config("failover", "ab", **_BREAKER))
def breaker_one_probe_at_a_time() -> list[Event]:
    """Two requests during half-open: the first takes the probe, the second skips a."""
    return [
        *trip_a(),
        start(1100, "r3"),
        start(1101, "r4"),
        *served(1102, "r4", 1),
        *served(1110, "r3", 1),
    ]


@scenario("circuit breaker", config("failover", "ab", **_BREAKER))
def breaker_probe_handed_back_on_cancel() -> list[Event]:
    """A probe whose request is cancelled is handed back, so the next request can probe."""
    return [
        *trip_a(),
        start(1100, "r3"),
        cancel(1101, "r3"),
        start(1102, "r4"),
        *served(1103, "r4", 1),
    ]


@scenario(
    "circuit breaker",
    config(
        "failover",
        "ab",
        circuit_breaker_enabled=True,
        circuit_breaker_failure_threshold=2,
        circuit_breaker_recovery_timeout_ms=100,
        failover_retry_delay_ms=200,
    ),
)
def breaker_stale_failure_keeps_the_probe() -> list[Event]:
    """r1 waited to retry while a tripped; giving up, it neither re-trips a nor voids the probe."""
    return [
        start(0, "r1"),
        start(0, "r2"),
        start(0, "r3"),
        fail(5, "r1", 1, 503),
        fail(10, "r2", 1, 400),
        fail(10, "r3", 1, 400),
        *served(11, "r2", 2),
        *served(20, "r3", 2),
        start(150, "r4"),
        fail(151, "r4", 1, 400),
        tick(205),
        ok(210, "r4", 2),
        *served(211, "r1", 2),
    ]


# ------------------------------------------------------------------- timeout


@scenario("timeout", config("failover", "ab", timeout_ms=100))
def timeout_retries_then_fails_over() -> list[Event]:
    """No first chunk in 100 ms: cancel and retry a, then cancel again and move to b."""
    return [start(0, "r1"), tick(100), tick(200), *served(210, "r1", 3)]


@scenario("timeout", config("failover", "ab", timeout_ms=100))
def timeout_not_after_first_chunk() -> list[Event]:
    """Once the first chunk arrived, later chunks may take as long as they like."""
    return [
        start(0, "r1"),
        chunk(50, "r1", 1),
        tick(5000),
        chunk(6000, "r1", 1),
        ok(9000, "r1", 1, 5, 5),
    ]


@scenario("timeout", config("failover", "ab", timeout_ms=100))
def timeout_cancel_while_waiting_for_first_chunk() -> list[Event]:
    """The caller gives up while a stalls: abort, no other backend, no failure recorded."""
    return [start(0, "r1"), cancel(40, "r1"), start(50, "r2"), *served(60, "r2", 1)]


@scenario("timeout", config("failover", "ab"))
def timeout_seen_by_transport() -> list[Event]:
    """A connect timeout reported by the transport counts as a timeout and is retried."""
    return [
        start(0, "r1"),
        AttemptTimedOut(at=30, request_id="r1", attempt=1, phase=TimeoutPhase.CONNECT),
        AttemptTimedOut(at=60, request_id="r1", attempt=2, phase=TimeoutPhase.CONNECT),
        *served(61, "r1", 3),
    ]


@scenario("timeout", config("failover", "ab", timeout_ms=100))
def timeout_counts_from_the_send() -> list[Event]:
    """Sent 60 ms after dispatch, a answers at 130: inside 100 ms of the send, so it serves."""
    return [
        start(0, "r1"),
        AttemptSent(at=60, request_id="r1", attempt=1),
        tick(100),
        *served(130, "r1", 1),
    ]


@scenario("timeout", config("failover", "ab", timeout_ms=100))
def timeout_stops_while_held() -> list[Event]:
    """Held 400 ms for a local connection: the deadline fires 100 ms after the send, not before."""
    return [
        start(0, "r1"),
        AttemptHeld(at=1, request_id="r1", attempt=1),
        tick(100),
        tick(300),
        AttemptSent(at=401, request_id="r1", attempt=1),
        tick(501),
        *served(510, "r1", 2),
    ]


@scenario("timeout", config("failover", "ab", timeout_ms=100, circuit_breaker_enabled=True))
def timeout_held_until_no_slot() -> list[Event]:
    """No local connection came free: the request fails on its own, nothing charged to a."""
    return [
        start(0, "r1"),
        AttemptHeld(at=1, request_id="r1", attempt=1),
        SlotTimedOut(at=1001, request_id="r1", attempt=1, limit=100),
        start(1002, "r2"),
        *served(1003, "r2", 1),
    ]


# ----------------------------------------------------------------------- TPM


@scenario("TPM", config("failover", "ab", tpm_threshold=500))
def tpm_skips_slow_backend() -> list[Event]:
    """a used 100 tokens four minutes ago: 20 tokens/min is under 500, so a is skipped."""
    return [
        start(0, "r1"),
        *served(1, "r1", 1, 40, 60),
        start(4 * MINUTE, "r2"),
        *served(4 * MINUTE + 1, "r2", 1),
    ]


@scenario("TPM", config("failover", "ab", tpm_threshold=500))
def tpm_idle_backend_is_never_skipped() -> list[Event]:
    """A backend with no tokens in the window has a rate of 0 and is always tried."""
    return [start(0, "r1"), *served(1, "r1", 1, 0, 0), start(10, "r2"), *served(11, "r2", 1, 0, 0)]


# ------------------------------------------------------------------- metrics


@scenario("metrics", config("failover", "ab"))
def metrics_latency_ignores_retried_attempts() -> list[Event]:
    """The average latency divides by attempts that recorded one, not by retries."""
    return [
        start(0, "r1"),
        fail(10, "r1", 1, 503),
        *served(20, "r1", 2),
        start(100, "r2"),
        *served(150, "r2", 1),
    ]


# ---------------------------------------------------------- selection events


@scenario("selection events", config("failover", "ab"))
def selection_announces_failing_primary() -> list[Event]:
    """a is announced when chosen, even though it fails; then b is announced."""
    return [start(0, "r1"), fail(1, "r1", 1, 403), *served(2, "r1", 2)]


# ------------------------------------------------------------- context limit


@scenario(
    "context limit",
    config("failover", windows={"a": 1000, "b": 8000, "c": 8000}, context_limit=6000),
)
def context_limit_skips_small_backend() -> list[Event]:
    """A 5000-token prompt skips a (window 1000) and goes to b (limit 6000 applies)."""
    return [start(0, "r1", prompt_tokens=5000), *served(1, "r1", 1)]


@scenario("context limit", config("failover", "ab", windows={"a": 1000, "b": 2000}))
def context_limit_everywhere() -> list[Event]:
    """No backend fits: the request fails with the non-retryable all-context-limits error."""
    return [start(0, "r1", prompt_tokens=5000)]


@scenario(
    "context limit",
    config("failover", "ab", windows={"b": 1000}, context_limit=10_000, failover_retry_count=1),
)
def context_limit_mixed_with_failure() -> list[Event]:
    """An ordinary failure plus a context-limit rejection: a normal aggregate, ordinary first."""
    return [start(0, "r1", prompt_tokens=5000), fail(1, "r1", 1, 503)]


# ------------------------------------------------------------ attempt budget


@scenario("budget", config("failover", "ab", failover_retry_count=3))
def budget_stops_the_rotation() -> list[Event]:
    """A budget of one attempt: one call, then the aggregate, even though retries remain."""
    return [start(0, "r1", attempt_budget=1), fail(1, "r1", 1, 503)]


@scenario("budget", config("failover", "ab"))
def budget_zero_records_nothing() -> list[Event]:
    """No attempt allowed: an empty, non-retryable aggregate and the index back at a."""
    return [start(0, "r1", attempt_budget=0)]


# ------------------------------------------------------------- cancellation


@scenario("cancellation", config("failover", "ab", failover_retry_delay_ms=500))
def cancel_during_retry_wait() -> list[Event]:
    """Cancelling while a retry waits ends the request without touching any backend."""
    return [start(0, "r1"), fail(1, "r1", 1, 503), cancel(100, "r1"), tick(600)]


@scenario("cancellation", config("failover", "ab"))
def cancel_mid_stream() -> list[Event]:
    """Closing the stream early cancels the attempt; nothing is counted for or against a."""
    return [start(0, "r1"), chunk(1, "r1", 1), cancel(2, "r1"), start(3, "r2"), *served(4, "r2", 1)]


# --------------------------------------------------------------- concurrency


@scenario("concurrency", config("failover", failover_retry_delay_ms=20, timeout_ms=100))
def interleaved_requests() -> list[Event]:
    """Three overlapping requests with a retry timer and a deadline firing on the same tick."""
    return [
        start(0, "r1"),
        start(1, "r2"),
        start(2, "r3"),
        fail(80, "r2", 1, 503),
        chunk(90, "r3", 1),
        tick(100),
        *served(105, "r2", 2),
        ok(110, "r3", 1, 3, 4),
        tick(120),
        *served(121, "r1", 2),
    ]


# -------------------------------------------------------------- Retry-After (§19)


@scenario("retry-after", config("failover", "ab"))
def cooldown_skip_and_expiry() -> list[Event]:
    """A 429 asking for 1 s cools a down: r2 skips it for b; r1's retry waits out the pause."""
    return [
        start(0, "r1"),
        fail(5, "r1", 1, 429, retry_after_ms=1000),
        start(10, "r2"),
        *served(11, "r2", 1),
        tick(500),
        tick(1005),
        *served(1006, "r1", 2),
    ]


@scenario("retry-after", config("failover", "ab", deadline_ms=500))
def retry_after_past_the_deadline() -> list[Event]:
    """Retry-After 2 s, deadline 500 ms: no wait that cannot end in time, r1 fails over at once."""
    return [start(0, "r1"), fail(5, "r1", 1, 429, retry_after_ms=2000), *served(6, "r1", 2)]


@scenario("retry-after", config("failover", "ab", max_retry_after_ms=300))
def retry_after_is_capped() -> list[Event]:
    """A Retry-After of a day is cut to max_retry_after_ms: r2 skips a, r3 uses it at 305 ms."""
    return [
        start(0, "r1", attempt_budget=1),
        fail(5, "r1", 1, 429, retry_after_ms=86_400_000),
        start(100, "r2"),
        fail(101, "r2", 1, 400),
        start(305, "r3"),
        *served(306, "r3", 1),
    ]


# ------------------------------------------------------------------ deadlines (§22)


@scenario("deadlines", config("failover", "ab", deadline_ms=300))
def deadline_across_a_failover() -> list[Event]:
    """300 ms in total: a fails twice, b stalls, and the deadline ends r1 with a's failure."""
    return [
        start(0, "r1"),
        fail(100, "r1", 1, 503),
        fail(150, "r1", 2, 503),
        tick(299),
        tick(300),
    ]


@scenario("deadlines", config("failover", "ab", idle_timeout_ms=100))
def idle_timeout_mid_stream() -> list[Event]:
    """Two chunks, then 100 ms of silence: the stream is cut and its failure is a's, raw."""
    return [
        start(0, "r1"),
        chunk(5, "r1", 1),
        chunk(50, "r1", 1),
        tick(149),
        tick(150),
    ]


# ------------------------------------------------------------------- backoff (§20)


@scenario(
    "backoff",
    config(
        "failover",
        "ab",
        failover_retry_count=4,
        retry_backoff="exponential",
        retry_backoff_base_ms=100,
        retry_backoff_cap_ms=300,
        seed=42,
    ),
)
def backoff_exponential_seeded() -> list[Event]:
    """Seed 42: three retries of a wait full-jitter draws under 100, 200 and 300 ms."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 503),
        tick(1000),
        fail(1001, "r1", 2, 503),
        tick(2000),
        fail(2001, "r1", 3, 503),
        tick(3000),
        *served(3001, "r1", 4),
    ]


# --------------------------------------------------------------- retry budget (§21)


@scenario("retry budget", config("failover", retry_budget_percent=0, retry_budget_min=1))
def retry_budget_exhausted() -> list[Event]:
    """One retry may be in flight: r1 retries, r2's retry is refused; once r1 ends, r3 may retry."""
    return [
        start(0, "r1"),
        start(1, "r2"),
        fail(2, "r1", 1, 503),
        fail(3, "r2", 1, 503),
        *served(4, "r1", 2),
        start(10, "r3"),
        fail(11, "r3", 1, 503),
        *served(12, "r3", 2),
    ]


# Scenarios kept in their own modules register themselves on import (at the end,
# once everything they use from here exists).
from . import (  # noqa: E402, F401
    scenarios_capacity,
    scenarios_ref_features,
    scenarios_shared,
    scenarios_strategies,
)
