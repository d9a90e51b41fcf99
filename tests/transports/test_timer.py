"""AttemptTimer stepped one event at a time, and the exception tables row by row.

No sockets and no clock: the time is an argument, as the clients pass theirs.
"""

from __future__ import annotations

import httpcore
import pytest
import requests
import urllib3.exceptions

from lbcore import FailureKind, TimeoutPhase
from lbtransports._timer import AttemptTimer, Expired
from lbtransports._troubles import (
    HTTPCORE_ERRORS,
    HTTPCORE_TROUBLES,
    REQUESTS_ERRORS,
    REQUESTS_TROUBLES,
    Trouble,
    reported,
    trouble_of,
)


def test_before_the_first_chunk_the_earlier_timer_bounds_the_wait() -> None:
    timer = AttemptTimer(idle_ms=1_000, now=0, first_chunk_due=300)
    assert timer.first_chunk_pending
    assert timer.due() == 300
    assert timer.seconds_left(0) == 0.301  # one millisecond past, to wake after it
    assert timer.expired(299) is None
    assert timer.expired(300) is Expired.FIRST_CHUNK
    assert timer.seconds_left(400) == 0.0


def test_without_a_first_chunk_deadline_the_idle_timer_runs_from_the_start() -> None:
    timer = AttemptTimer(idle_ms=1_000, now=50, first_chunk_due=None)
    assert not timer.first_chunk_pending
    assert timer.due() == 1_050
    assert timer.expired(1_049) is None
    assert timer.expired(1_050) is Expired.IDLE


def test_the_idle_timer_is_earlier_than_a_far_first_chunk_deadline() -> None:
    timer = AttemptTimer(idle_ms=200, now=0, first_chunk_due=5_000)
    assert timer.due() == 200
    assert timer.expired(200) is Expired.IDLE


def test_both_run_out_the_first_chunk_one_is_named() -> None:
    timer = AttemptTimer(idle_ms=100, now=0, first_chunk_due=100)
    assert timer.expired(100) is Expired.FIRST_CHUNK


def test_the_send_restarts_the_idle_timer_and_the_core_moves_the_deadline() -> None:
    timer = AttemptTimer(idle_ms=1_000, now=0, first_chunk_due=300)
    timer.progressed(250)  # the request is out
    timer.first_chunk_due(550)  # the core's FirstChunkDue
    assert timer.due() == 550
    assert timer.expired(549) is None
    assert timer.expired(550) is Expired.FIRST_CHUNK


def test_each_upload_piece_taken_restarts_the_idle_timer() -> None:
    timer = AttemptTimer(idle_ms=400, now=0, first_chunk_due=None)
    for now in range(300, 3_000, 300):  # the backend takes a piece every 300 ms
        assert timer.expired(now) is None
        timer.progressed(now)
    assert timer.due() == 2_700 + 400


def test_bytes_that_complete_no_chunk_are_no_event_at_all() -> None:
    # The timer has no event for framing bytes, headers or keep-alives: the
    # deadline a trickle meets is the one the last progress set.
    timer = AttemptTimer(idle_ms=600, now=0, first_chunk_due=None)
    assert [timer.expired(now) for now in range(0, 900, 100)] == [None] * 6 + [Expired.IDLE] * 3


def test_a_chunk_meets_the_first_chunk_deadline_for_good() -> None:
    timer = AttemptTimer(idle_ms=1_000, now=0, first_chunk_due=300)
    timer.answered(100)
    assert not timer.first_chunk_pending
    assert timer.due() == 1_100
    assert timer.expired(500) is None  # past the deadline, which no longer counts
    timer.first_chunk_due(200)  # a late FirstChunkDue changes nothing once answered
    assert timer.expired(500) is None
    assert timer.expired(1_100) is Expired.IDLE


def test_the_caller_taking_its_time_is_not_the_backend_s() -> None:
    timer = AttemptTimer(idle_ms=1_000, now=0, first_chunk_due=None)
    timer.answered(100)
    timer.progressed(5_000)  # the caller came back for more only now
    assert timer.due() == 6_000
    assert timer.expired(5_999) is None


def test_progress_never_moves_the_clock_back() -> None:
    timer = AttemptTimer(idle_ms=1_000, now=500, first_chunk_due=None)
    timer.progressed(100)
    timer.answered(200)
    assert timer.due() == 1_500


def test_held_stops_the_first_chunk_deadline() -> None:
    timer = AttemptTimer(idle_ms=1_000, now=0, first_chunk_due=300)
    timer.held()
    assert not timer.first_chunk_pending
    assert timer.expired(900) is None
    timer.progressed(950)  # sent at last
    timer.first_chunk_due(1_250)
    assert timer.expired(1_250) is Expired.FIRST_CHUNK


# -- the exception tables ----------------------------------------------------------


def _wrapped(error: BaseException) -> requests.exceptions.ConnectionError:
    """What requests raises for an error urllib3 wrapped in MaxRetryError."""
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/", reason=error)  # type: ignore[arg-type]
    )


REQUESTS_CASES = [
    (requests.exceptions.ConnectTimeout(), Trouble.CONNECT_TIMEOUT),
    (requests.exceptions.ReadTimeout(), Trouble.READ_TIMEOUT),
    (urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"), Trouble.READ_TIMEOUT),  # type: ignore[arg-type]
    (
        _wrapped(urllib3.exceptions.NewConnectionError(None, "refused")),  # type: ignore[arg-type]
        Trouble.NOT_CONNECTED,
    ),
    (
        _wrapped(urllib3.exceptions.ProtocolError("Connection aborted.", TimeoutError())),
        Trouble.READ_TIMEOUT,
    ),
    (TimeoutError("timed out"), Trouble.READ_TIMEOUT),
    (
        _wrapped(urllib3.exceptions.ProtocolError("aborted", ConnectionResetError(104, "reset"))),
        Trouble.LOST,
    ),
    (urllib3.exceptions.ProtocolError("Response ended prematurely"), Trouble.LOST),
    (ConnectionResetError(104, "reset"), Trouble.LOST),
]


@pytest.mark.parametrize(("error", "trouble"), REQUESTS_CASES)
def test_requests_table(error: BaseException, trouble: Trouble) -> None:
    assert isinstance(error, REQUESTS_ERRORS)
    assert trouble_of(REQUESTS_TROUBLES, error) is trouble


HTTPCORE_CASES = [
    (httpcore.ConnectTimeout(), Trouble.CONNECT_TIMEOUT),
    (httpcore.ReadTimeout(), Trouble.READ_TIMEOUT),
    (httpcore.WriteTimeout(), Trouble.READ_TIMEOUT),
    (httpcore.ConnectError(), Trouble.NOT_CONNECTED),
    (httpcore.ReadError(), Trouble.LOST),
    (httpcore.WriteError(), Trouble.LOST),
    (httpcore.RemoteProtocolError(), Trouble.LOST),
]


@pytest.mark.parametrize(("error", "trouble"), HTTPCORE_CASES)
def test_httpcore_table(error: BaseException, trouble: Trouble) -> None:
    assert isinstance(error, HTTPCORE_ERRORS)
    assert trouble_of(HTTPCORE_TROUBLES, error) is trouble


def test_an_error_no_row_knows_is_none() -> None:
    assert trouble_of(HTTPCORE_TROUBLES, ValueError("not ours")) is None
    assert trouble_of(REQUESTS_TROUBLES, ValueError("not ours")) is None


def test_each_trouble_is_reported_one_way() -> None:
    reset = ConnectionResetError(104, "reset")
    assert reported(Trouble.CONNECT_TIMEOUT, reset, reused=False) is TimeoutPhase.CONNECT
    assert reported(Trouble.READ_TIMEOUT, reset, reused=True) is TimeoutPhase.READ
    refused = reported(Trouble.NOT_CONNECTED, ConnectionRefusedError(111, "no"), reused=False)
    assert not isinstance(refused, TimeoutPhase)
    assert (refused.kind, refused.code) == (FailureKind.NETWORK, "ECONNREFUSED")
    lost = reported(Trouble.LOST, reset, reused=False)
    stale = reported(Trouble.LOST, reset, reused=True)
    assert not isinstance(lost, TimeoutPhase) and not isinstance(stale, TimeoutPhase)
    assert lost.message == "connection lost before the answer ended (ECONNRESET)"
    assert stale.message.startswith("the backend closed a reused connection")
