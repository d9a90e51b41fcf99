"""What a broken connection means, whichever HTTP library reported it.

The HTTP libraries' exception texts carry URLs, hosts and nested reprs; none
of that goes into a failure. We keep a fixed message per situation and the
operating system's error name (``ECONNREFUSED``...) as the failure's code.
"""

from __future__ import annotations

import errno
import ssl

from lbcore import Failure, FailureKind

__all__ = (
    "causes",
    "connect_failure",
    "forget_tracebacks",
    "os_error_code",
    "stale_failure",
    "stream_failure",
    "timed_out",
    "tls_failed",
)

_MAX_DEPTH = 12


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and everything it wraps: causes, contexts, and exceptions in its
    args, breadth first, each once, at most :data:`_MAX_DEPTH` of them.

    A caller asking several questions of one error walks it once and passes the
    list on (``found``): each walk costs a few µs, on every failed attempt."""
    found = [error]
    seen = {id(error)}
    index = 0
    while index < len(found) < _MAX_DEPTH:
        current = found[index]
        index += 1
        # anyio reports a failed connect as an OSError caused by a group of them.
        for inner in (
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
            *current.args,
            *getattr(current, "exceptions", ()),
        ):
            if isinstance(inner, BaseException) and id(inner) not in seen:
                seen.add(id(inner))
                found.append(inner)
    return found[:_MAX_DEPTH]


def forget_tracebacks(error: BaseException, found: list[BaseException] | None = None) -> None:
    """Drop the tracebacks of a handled ``error`` and of what it wraps
    (``found``: its :func:`causes`, when the caller has them already).

    A traceback keeps every frame it passed through alive (a pool, a
    connection, the attempt), often in a reference cycle only the garbage
    collector frees; a failure classified and reported needs none of it.
    """
    for cause in causes(error) if found is None else found:
        cause.__traceback__ = None


def os_error_code(error: BaseException) -> str | None:
    """The first operating-system error name found in ``error``'s chain."""
    for cause in causes(error):
        if isinstance(cause, ssl.SSLError):
            continue  # an OSError whose errno is OpenSSL's (1 would read EPERM)
        number = getattr(cause, "errno", None)
        if isinstance(cause, OSError) and isinstance(number, int):
            return errno.errorcode.get(number)
    return None


def timed_out(error: BaseException, found: list[BaseException] | None = None) -> bool:
    """Whether a socket timeout is what ``error`` wraps (urllib3 reports one that
    ends a blocked send as a broken connection); ``found``: its :func:`causes`."""
    chain = causes(error) if found is None else found
    return any(isinstance(cause, TimeoutError) for cause in chain)


def tls_failed(error: BaseException) -> bool:
    """Whether ``error`` comes from TLS (a failed handshake, an unverifiable certificate)."""
    return any(isinstance(cause, ssl.SSLError) for cause in causes(error))


def connect_failure(error: BaseException) -> Failure:
    """The backend could not be reached (refused, unreachable, reset while connecting,
    TLS handshake failed)."""
    code = os_error_code(error)
    detail = f" ({code})" if code else " (TLS handshake failed)" if tls_failed(error) else ""
    return Failure(
        kind=FailureKind.NETWORK, message=f"could not connect to the backend{detail}", code=code
    )


def stream_failure(error: BaseException) -> Failure:
    """The connection broke after the request was sent, before the answer ended."""
    code = os_error_code(error)
    detail = f" ({code})" if code else ""
    return Failure(
        kind=FailureKind.NETWORK,
        message=f"connection lost before the answer ended{detail}",
        code=code,
    )


def stale_failure(error: BaseException) -> Failure:
    """A connection reused from the pool broke before any byte of the answer came,
    again on the one retry (spec/transports.md section 5)."""
    code = os_error_code(error)
    detail = f" ({code})" if code else ""
    return Failure(
        kind=FailureKind.NETWORK,
        message=f"the backend closed a reused connection before answering{detail}",
        code=code or "stale_connection",
    )
