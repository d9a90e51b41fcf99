"""The sync client's connect to an IPv4 address fails as urllib3's own connect does.

``_SentHTTPConnection`` connects to an IPv4 literal without getaddrinfo; the
exceptions it raises must be the ones urllib3 raises (the clients classify
them, spec/transports.md section 3).
"""

from __future__ import annotations

import socket

import pytest
import urllib3.connection
import urllib3.exceptions

from lbtransports._sync_sent import _ipv4_literal, _SentHTTPConnection


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("255.255.255.255", True),
        ("127.1", False),
        ("010.0.0.1", False),
        ("1.2.3.4 ", False),
        ("256.1.1.1", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("", False),
    ],
)
def test_what_counts_as_an_ipv4_literal(host: str, literal: bool) -> None:
    assert _ipv4_literal(host) is literal


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _refusal(connection: urllib3.connection.HTTPConnection) -> urllib3.exceptions.HTTPError:
    with pytest.raises(urllib3.exceptions.HTTPError) as caught:
        connection.connect()
    assert connection.sock is None
    return caught.value


def test_a_refused_connect_is_reported_as_urllib3_reports_it() -> None:
    port = _closed_port()
    ours = _refusal(_SentHTTPConnection("127.0.0.1", port, timeout=5))
    theirs = _refusal(urllib3.connection.HTTPConnection("127.0.0.1", port, timeout=5))
    assert type(ours) is type(theirs) is urllib3.exceptions.NewConnectionError
    assert type(ours.__cause__) is type(theirs.__cause__) is ConnectionRefusedError
    assert str(ours.__cause__) == str(theirs.__cause__)
    assert ours._message == theirs._message  # type: ignore[attr-defined]


def test_a_connect_to_an_ipv4_literal_is_the_same_connection() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        connection = _SentHTTPConnection("127.0.0.1", server.getsockname()[1], timeout=5)
        connection.connect()
        try:
            sock = connection.sock
            assert sock is not None
            assert sock.family == socket.AF_INET
            assert sock.gettimeout() == 5
            # urllib3's default socket options (TCP_NODELAY) are applied.
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getpeername() == server.getsockname()
        finally:
            connection.close()
