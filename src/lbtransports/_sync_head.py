"""The sync client reads a response's head as strictly as the async client's h11 does.

http.client is lenient where h11 is not, and each leniency either breaks an
answer or waits for nothing:

- it passes on every interim (1xx) answer but ``100 Continue`` as the answer
  itself, so a ``103 Early Hints`` before the real answer failed as "HTTP 103";
- it reads a status line by splitting it on any whitespace, so ``HTTP/1.1  200``,
  a tab, ``HTTP/1.10`` or a status of ``2_00`` (Python's int()) passed, which
  h11 refuses;
- a ``Transfer-Encoding`` other than ``chunked`` (``gzip, chunked``), a
  ``Content-Length`` it cannot read (``12, 12``, ``-1``), a header line it
  cannot parse (``Content-Type : x``, which puts every later header in the body),
  a bare CR in a line (its email parser ends the line there, and takes what
  follows a line it then reads as empty for a body), or a name that is not a
  token (``Con}ent-Length``, kept as an unknown header) all leave the body
  without framing: read until the server closes, so a kept-alive connection
  held the attempt until its idle timeout.

:class:`StrictResponse` skips interim answers and refuses such a head at once
(an ``http.client.HTTPException``, which urllib3 reports as a lost
connection, as httpcore reports h11's refusal), and reads a list of equal
lengths as one length, as h11 does (spec/transports.md section 3).
"""

from __future__ import annotations

import email.errors
import email.message
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
#: What the email parser under http.client says of the (empty) body it thinks a
#: multipart type announces: nothing wrong with the head itself.
_BODY_DEFECTS: Final = (
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.CloseBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
    email.errors.NoBoundaryInMultipartDefect,
)
#: A header name as h11 takes it: an RFC 9110 token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


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


def _leftover(message: email.message.Message) -> bool:
    """Whether the parser kept anything after the head's lines (under a
    ``message/rfc822`` type, as the headers of a message inside it)."""
    payload = message.get_payload()
    if isinstance(payload, str):
        return bool(payload)
    parts = [part for part in payload if isinstance(part, email.message.Message)]
    return len(parts) != len(payload) or any(part.keys() or _leftover(part) for part in parts)


def _head_problem(response: StrictResponse) -> str:
    """What is wrong with ``response``'s head, as h11 would refuse it; "" if nothing.

    Sets the length a list of equal ``Content-Length`` values gives.
    """
    message = response.msg
    if response.status == 101:
        return "the server switched protocols, which was never asked for"
    # The email parser behind http.client ends a line at a bare CR too, and keeps
    # whatever follows a line it read as empty as a body nobody reads.
    if _leftover(message) or any(
        not isinstance(defect, _BODY_DEFECTS) for defect in message.defects
    ):
        return "a response header line is malformed"
    if not all(_TOKEN.fullmatch(name) for name in message.keys()):  # noqa: SIM118
        return "a response header name is not a token"
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
