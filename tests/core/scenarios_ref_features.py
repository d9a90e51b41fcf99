"""Scenarios for the reference's last features: compression, the index reset, nested balancers.

Registered into :data:`tests.core.scenarios.SCENARIOS` on import, like the
capacity scenarios.
"""

from __future__ import annotations

from lbcore import Event, FailoverIndexReset, FailureKind, PromptCompressed

from .scenarios import config, fail, scenario, served, start

_NESTED = 'Load balancer "inner" failover exhausted after 2 backend failures (tried: x, y)'


def compressed(at: int, rid: str, tokens: int) -> PromptCompressed:
    return PromptCompressed(at=at, request_id=rid, prompt_tokens=tokens)


def compression_failed(at: int, rid: str, error: str) -> PromptCompressed:
    return PromptCompressed(at=at, request_id=rid, error=error)


@scenario(
    "compression",
    config(
        "failover",
        "ab",
        windows={"a": 1000, "b": 8000},
        context_limit=8000,
        context_compression=True,
    ),
)
def compression_shrinks_to_fit() -> list[Event]:
    """5000 tokens do not fit a (1000): the prompt is shrunk to 800 and a serves it."""
    return [start(0, "r1", prompt_tokens=5000), compressed(3, "r1", 800), *served(10, "r1", 1)]


@scenario(
    "compression",
    config(
        "failover",
        "abc",
        windows={"a": 1000, "b": 2000},
        context_limit=8000,
        context_compression=True,
    ),
)
def compression_each_target_starts_from_the_original() -> list[Event]:
    """Shrunk to 1500, still over a's 1000: b is asked from the original 5000 again and fits."""
    return [
        start(0, "r1", prompt_tokens=5000),
        compressed(2, "r1", 1500),
        compressed(4, "r1", 1900),
        *served(10, "r1", 1),
    ]


@scenario(
    "compression",
    config("failover", "ab", windows={"a": 1000, "b": 1000}, context_compression=True),
)
def compression_failed_everywhere() -> list[Event]:
    """The hook fails for a and b: the all-context-limits error carries the hook's message."""
    return [
        start(0, "r1", prompt_tokens=5000),
        compression_failed(1, "r1", "summariser unavailable"),
        compression_failed(2, "r1", "summariser unavailable"),
    ]


@scenario(
    "compression",
    config("round-robin", "ab", windows={"a": 1000}, context_limit=8000, context_compression=True),
)
def rr_compression_failure_is_the_answer() -> list[Event]:
    """Round-robin: a's hook fails, so r1 fails with CompressionFailed; r2 goes to b."""
    return [
        start(0, "r1", prompt_tokens=5000),
        compression_failed(1, "r1", "too long to summarise"),
        start(2, "r2", prompt_tokens=5000),
        *served(3, "r2", 1),
    ]


@scenario("sticky index", config("failover", "ab", failover_retry_count=1))
def sticky_reset_by_the_operator() -> list[Event]:
    """a fails and b serves, so b is sticky; reset_failover_index() sends r2 to a again."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 503),
        *served(2, "r1", 2),
        FailoverIndexReset(at=10),
        start(11, "r2"),
        *served(12, "r2", 1),
    ]


@scenario("nested balancers", config("failover", "ab"))
def nested_retryable_fails_over() -> list[Event]:
    """A nested balancer's retryable aggregate is retried once on it, then r1 fails over to b."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, kind=FailureKind.NESTED, message=_NESTED),
        fail(2, "r1", 2, kind=FailureKind.NESTED, message=_NESTED),
        *served(3, "r1", 3),
    ]


@scenario("nested balancers", config("failover", "ab"))
def nested_terminal_is_final() -> list[Event]:
    """A nested balancer's non-retryable aggregate ends r1 at once: no retry, nothing recorded."""
    return [start(0, "r1"), fail(1, "r1", 1, 401, kind=FailureKind.TERMINAL, message=_NESTED)]
