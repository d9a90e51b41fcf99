"""Building the errors a request ends with when no backend could serve it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeVar

from ._classify import category_of, effective_status, is_transient
from ._outcomes import (
    AllContextLimitsExceeded,
    BackendFailure,
    Category,
    FailoverExhausted,
)
from ._text import clean_text, truncate

__all__ = ("all_context_limits_error", "context_limit_message", "failover_error")

_MAX_SUMMARISED: Final = 3
_MAX_LABELS: Final = 8
_LABEL_LIMIT: Final = 64
_MESSAGE_LIMIT: Final = 512

_T = TypeVar("_T")


def _labels(failures: Sequence[BackendFailure]) -> str:
    if not failures:
        return "none"
    names = [truncate(f.backend, _LABEL_LIMIT) for f in failures[:_MAX_LABELS]]
    label = ", ".join(names)
    hidden = len(failures) - _MAX_LABELS
    return f"{label} (+{hidden} more)" if hidden > 0 else label


def _summary(failures: Sequence[BackendFailure]) -> str:
    if not failures:
        return "no backend attempts were recorded"
    parts = []
    for item in failures[:_MAX_SUMMARISED]:
        part = f"{truncate(item.backend, _LABEL_LIMIT)}: {item.failure.message}"
        if item.failure.status is not None:
            part += f" (status: {item.failure.status})"
        parts.append(part)
    hidden = len(failures) - _MAX_SUMMARISED
    if hidden > 0:
        parts.append(f"+{hidden} more")
    return "; ".join(parts)


def _shared(values: Sequence[_T]) -> _T | None:
    """The value every entry agrees on, or None when they differ or there are none."""
    if not values:
        return None
    first = values[0]
    return first if all(v == first for v in values) else None


def failover_error(profile_name: str, failures: Sequence[BackendFailure]) -> FailoverExhausted:
    message = (
        f'Load balancer "{profile_name}" failover exhausted after {len(failures)} backend '
        f"failures (tried: {_labels(failures)}): {_summary(failures)}"
    )
    categories: list[Category | None] = [category_of(f.failure) for f in failures]
    return FailoverExhausted(
        profile_name=profile_name,
        message=clean_text(message, _MESSAGE_LIMIT),
        failures=tuple(failures),
        retryable=any(is_transient(f.failure) for f in failures),
        status=_shared([effective_status(f.failure) for f in failures]),
        category=_shared(categories),
    )


def context_limit_message(profile_name: str, backend: str, tokens: int, limit: int) -> str:
    return (
        f'Load balancer profile "{profile_name}" sub-profile "{backend}" context limit '
        f"exceeded: estimated {tokens} tokens exceeds configured limit {limit}"
    )


def all_context_limits_error(
    profile_name: str, failures: Sequence[BackendFailure]
) -> AllContextLimitsExceeded:
    details = "; ".join(f"{f.backend}: {f.failure.message}" for f in failures)
    message = (
        f'Load balancer "{profile_name}" context limit exceeded for all eligible backends: '
        f"{details}"
    )
    return AllContextLimitsExceeded(
        profile_name=profile_name,
        message=clean_text(message, _MESSAGE_LIMIT),
        failures=tuple(failures),
    )
