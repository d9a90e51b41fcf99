"""How a library's exception is searched for what it wraps (lbtransports._network)."""

from __future__ import annotations

import errno
import itertools

from lbtransports._network import _MAX_DEPTH, causes, forget_tracebacks, os_error_code


class _WithReason(Exception):
    def __init__(self, message: str, reason: BaseException) -> None:
        super().__init__(message)
        self.reason = reason


def testcauses_are_searched_breadth_first_each_once() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    inner = OSError("inner")
    inner.__cause__ = refused
    outer = _WithReason("outer", inner)
    outer.__context__ = refused  # reached twice, listed once
    assert causes(outer) == [outer, refused, inner]
    assert os_error_code(outer) == "ECONNREFUSED"


def test_a_cycle_ends() -> None:
    first, second = ValueError("first"), ValueError("second")
    first.__cause__, second.__cause__ = second, first
    assert causes(first) == [first, second]


def test_exceptions_in_args_and_groups_are_found() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    group = ExceptionGroup("connect", [OSError("unreachable"), refused])
    wrapper = OSError("failed", group)
    assert causes(wrapper)[-1] is refused
    assert os_error_code(wrapper) == "ECONNREFUSED"


def test_the_search_is_bounded() -> None:
    chain = [ValueError(str(number)) for number in range(3 * _MAX_DEPTH)]
    for outer, inner in itertools.pairwise(chain):
        outer.__cause__ = inner
    assert causes(chain[0]) == chain[:_MAX_DEPTH]


def test_forgotten_tracebacks() -> None:
    try:
        try:
            raise OSError(errno.ECONNRESET, "reset")
        except OSError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as error:
        caught = error
    forget_tracebacks(caught)
    assert all(cause.__traceback__ is None for cause in causes(caught))
