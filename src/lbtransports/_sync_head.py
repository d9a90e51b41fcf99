"""The sync client reads a response's head as strictly as the async client's h11 does.

http.client is lenient where h11 is not, and each leniency either breaks an
answer or waits for nothing:

- it passes on every interim (1xx) answer but ``100 Continue`` as the answer
  itself, so a ``103 Early Hints`` before the real answer failed as "HTTP 103";
- it reads a status line by splitting it on any whitespace, so ``HTTP/1.1  200``,
  a tab, ``HTTP/1.10`` or a status of ``2_00`` (Python's int()) passed, which
  h11 refuses;
- a ``Transfer-Encoding`` other than ``chunked`` (``gzip, chunked``), a
  ``Content-Length`` it cannot read (``12, 12``, ``-1``), or a header line it
  cannot parse (``Content-Type : x``, which puts every later header in the body)
  all leave the body without framing: read until the server closes, so a
  kept-alive connection held the attempt until its idle timeout.

:class:`StrictResponse` skips interim answers and refuses such a head at once
(an ``http.client.HTTPException``, which urllib3 reports as a lost
connection, as httpcore reports h11's refusal), and reads a list of equal
lengths as one length, as h11 does (spec/transports.md section 3).
"""

from __future__ import annotations

import http.client
import re
from typing import Final

__all__ = ("StrictResponse",)

_DIGITS: Final = re.compile(r"[0-9]+")
#: The status line as h11 reads it: one space each side of three digits.
_STATUS_LINE: Final = re.compile(r"(HTTP/[0-9]\.[0-9]) ([0-9]{3})(?: ([^\r\n]*))?\r?\n")
#: http.client's own limit on a line of the head.
_MAX_LINE: Final = 65536
#: Control characters h11 refuses in a header value (HTAB is allowed), and the line
#: break of an obsolete folded line (which h11 accepts), taken out before looking.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FOLD: Final = re.compile(r"\r?\n[ \t]")


class MalformedHead(http.client.HTTPException):
    """The response's head breaks HTTP/1.1 framing: the connection is lost for this answer."""


class StrictResponse(http.client.HTTPResponse):
    """An http.client response that skips every interim answer and checks its framing."""

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            line = self.fp.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                raise http.client.LineTooLong("status line")
            if not line:
                # What http.client raises here: urllib3 takes it for a stale connection.
                raise http.client.RemoteDisconnected("closed without a response")
            text = line.decode("latin-1")
            match = _STATUS_LINE.fullmatch(text)
            if match is None:
                raise http.client.BadStatusLine(text)
            version, status, reason = match[1], int(match[2]), match[3] or ""
            if status < 100:
                raise http.client.BadStatusLine(text)  # h11 refuses these too
            if not 100 <= status <= 199 or status == 101:
                return version, status, reason
            # An interim answer (100 Continue, 103 Early Hints): its headers are dropped.
            http.client.parse_headers(self.fp)

    def begin(self) -> None:
        if self.headers is not None:
            return
        super().begin()
        problem = _head_problem(self)
        if problem:
            raise MalformedHead(problem)


def _head_problem(response: StrictResponse) -> str:
    """What is wrong with ``response``'s head, as h11 would refuse it; "" if nothing.

    Sets the length a list of equal ``Content-Length`` values gives.
    """
    message = response.msg
    if response.status == 101:
        return "the server switched protocols, which was never asked for"
    if message.defects:
        return "a response header line is malformed"
    for value in message.values():
        if _CONTROL.search(_FOLD.sub(" ", value)):
            return "a response header holds a control character"
    codings = [
        coding.strip().lower()
        for value in message.get_all("transfer-encoding") or ()
        for coding in value.split(",")
    ]
    if codings and codings != ["chunked"]:
        return "a response's transfer coding is not chunked"
    lengths = {
        length.strip()
        for value in message.get_all("content-length") or ()
        for length in value.split(",")
    }
    if not lengths:
        return ""
    if len(lengths) > 1 or not all(_DIGITS.fullmatch(length) for length in lengths):
        return "a response's Content-Length is invalid"
    if response.length is None and not response.chunked:
        response.length = int(lengths.pop())
        # http.client took the connection for closing because it saw no length.
        response.will_close = response._check_close()  # type: ignore[attr-defined]
    return ""
