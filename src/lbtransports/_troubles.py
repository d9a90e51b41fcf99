"""What each HTTP library's exceptions mean, as one table per library.

The clients catch whatever their library raises while connecting, sending
or reading, and look it up here, the first matching row winning (as
httpcore's own ``map_exceptions`` does). A :class:`Trouble` then becomes
the same report to the core in both clients (:func:`reported`), so a
timeout or a broken connection means one thing whichever library saw it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

import httpcore
import requests
import urllib3.exceptions

from lbcore import Failure, TimeoutPhase

from ._link import CoreLink
from ._network import (
    causes,
    connect_failure,
    forget_tracebacks,
    stale_failure,
    stream_failure,
    timed_out,
)
from ._reader import Failed
from ._run import Attempt, RequestRun

__all__ = (
    "HTTPCORE_ERRORS",
    "HTTPCORE_TROUBLES",
    "REQUESTS_ERRORS",
    "REQUESTS_TROUBLES",
    "Trouble",
    "report",
    "reported",
    "trouble_of",
)


class Trouble(enum.Enum):
    """What went wrong with an attempt's connection."""

    #: Connecting took longer than the connect timeout.
    CONNECT_TIMEOUT = "connect_timeout"
    #: A wait (sending, the answer's head or body) outlived the attempt's timers.
    READ_TIMEOUT = "read_timeout"
    #: The backend could not be reached: refused, unreachable, TLS handshake failed.
    NOT_CONNECTED = "not_connected"
    #: The connection broke once the request may have been sent.
    LOST = "lost"


#: A row's extra test: given the exception and everything it wraps (its causes).
Test = Callable[[BaseException, list[BaseException]], bool]
#: A row: the exception types, an extra test of the exception (or None), the trouble.
Row = tuple[tuple[type[BaseException], ...], Test | None, Trouble]


def trouble_of(table: tuple[Row, ...], error: BaseException) -> Trouble | None:
    """The trouble of the first row ``error`` matches; None if it is no network trouble.

    A matched error is handled from here on: its tracebacks are dropped.
    """
    # The chain is walked once, for every row's test and the tracebacks: a
    # refused connect through requests asked it three times (about 10 µs).
    found: list[BaseException] | None = None
    for types, test, trouble in table:
        if not isinstance(error, types):
            continue
        if test is not None:
            if found is None:
                found = causes(error)
            if not test(error, found):
                continue
        forget_tracebacks(error, found)
        return trouble
    return None


def reported(trouble: Trouble, error: BaseException, *, reused: bool) -> TimeoutPhase | Failure:
    """What the core hears: a timeout's phase, or the failure.

    ``reused``: the connection came from the pool and broke before any byte of
    an answer, which is a stale connection rather than the backend failing.
    """
    if trouble is Trouble.CONNECT_TIMEOUT:
        return TimeoutPhase.CONNECT
    if trouble is Trouble.READ_TIMEOUT:
        return TimeoutPhase.READ
    if trouble is Trouble.NOT_CONNECTED:
        return connect_failure(error)
    return stale_failure(error) if reused else stream_failure(error)


def report(
    link: CoreLink, run: RequestRun, attempt: Attempt, outcome: TimeoutPhase | Failure
) -> None:
    """Tell the core what :func:`reported` made of a trouble."""
    if isinstance(outcome, TimeoutPhase):
        link.expire(run, attempt, outcome)
    else:
        link.finish(run, attempt, Failed(outcome))


def _connecting(error: BaseException, found: list[BaseException] | None = None) -> bool:
    """Whether ``requests`` failed while opening the connection, before anything was sent.

    A TLS error raised while sending comes from the handshake, which urllib3
    runs as part of connecting (httpcore reports it as a ConnectError).
    """
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.SSLError)


def _connect_timed_out(error: BaseException, found: list[BaseException]) -> bool:
    return _connecting(error) and timed_out(error, found)


REQUESTS_TROUBLES: Final[tuple[Row, ...]] = (
    ((requests.exceptions.ConnectTimeout,), None, Trouble.CONNECT_TIMEOUT),
    (
        (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError),
        None,
        Trouble.READ_TIMEOUT,
    ),
    # urllib3 reports a socket timeout that ended a blocked send (or handshake)
    # as a broken connection; it is the same timeout the async client reports.
    ((requests.exceptions.ConnectionError,), _connect_timed_out, Trouble.CONNECT_TIMEOUT),
    ((requests.exceptions.RequestException,), timed_out, Trouble.READ_TIMEOUT),
    ((requests.exceptions.ConnectionError,), _connecting, Trouble.NOT_CONNECTED),
    # A deadline's timeout that no library wrapped.
    ((TimeoutError,), None, Trouble.READ_TIMEOUT),
    (
        (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError),
        None,
        Trouble.LOST,
    ),
)
#: What the sync client catches to look up in :data:`REQUESTS_TROUBLES`.
REQUESTS_ERRORS: Final = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
)

HTTPCORE_TROUBLES: Final[tuple[Row, ...]] = (
    ((httpcore.ConnectTimeout,), None, Trouble.CONNECT_TIMEOUT),
    ((httpcore.ReadTimeout, httpcore.WriteTimeout), None, Trouble.READ_TIMEOUT),
    ((httpcore.ConnectError,), None, Trouble.NOT_CONNECTED),
    ((httpcore.NetworkError, httpcore.RemoteProtocolError), None, Trouble.LOST),
)
#: What the async client catches to look up in :data:`HTTPCORE_TROUBLES`.
HTTPCORE_ERRORS: Final = (
    httpcore.ConnectTimeout,
    httpcore.ReadTimeout,
    httpcore.WriteTimeout,
    httpcore.NetworkError,
    httpcore.RemoteProtocolError,
)
