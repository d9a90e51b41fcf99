"""Keeps httpcore's DEBUG log from carrying response header values.

With DEBUG logging on, httpcore logs each response's head, header values
included (``receive_response_headers.complete return_value=(..., [(b'name',
b'value'), ...])``). A backend that echoes the request's key in a header would
put the key in the log. The async client installs, once per process, a filter
on httpcore's loggers that keeps the status line and drops the header list;
every other httpcore record passes unchanged. (urllib3, under the sync client,
logs no headers at all.)
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ("guard_httpcore_logs",)

#: Every httpcore logger that reports a response head.
HTTPCORE_LOGGERS: Final = (
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
_HEADERS_EVENT: Final = "receive_response_headers.complete"
# The status line of httpcore's message: (b'HTTP/1.1', 200, b'OK', ...
_STATUS: Final = re.compile(r"(receive_response_headers\.complete return_value=\(b'[^']*', \d+)")
HIDDEN: Final = ", [header values not logged: lbtransports])"


class HideResponseHeaders(logging.Filter):
    """Rewrites httpcore's response-head record to its status; passes the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if isinstance(message, str) and message.startswith(_HEADERS_EVENT):
            status = _STATUS.match(message)
            # A message whose shape httpcore changed loses everything but its name.
            record.msg = status.group(1) + HIDDEN if status else _HEADERS_EVENT + HIDDEN
            record.args = None
        return True


def guard_httpcore_logs() -> None:
    """Install the filter on httpcore's loggers (idempotent, process-wide)."""
    for name in HTTPCORE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideResponseHeaders) for f in logger.filters):
            logger.addFilter(HideResponseHeaders())
