"""Turning what a backend said into a :class:`lbcore.Failure`.

Everything a backend sends back is untrusted: statuses may be out of range,
bodies may be HTML, headers may be garbage and messages may echo our own
credential. The helpers here never raise on such input; they produce a clean,
redacted failure instead.
"""

from __future__ import annotations

import datetime
import email.utils
import http
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import msgspec

from lbcore import Failure, FailureKind, clean_text

from ._types import Chunk

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("Headers", "WireError", "header_value", "redact", "redact_secrets", "retry_after_ms")

#: Response headers as transports have them: a mapping (requests) or pairs (httpcore).
Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

#: Failure messages are capped at this many code points, like the core's own messages.
MESSAGE_LIMIT: Final = 512
#: Non-JSON error bodies are quoted up to this many code points.
BODY_SNIPPET_LIMIT: Final = 200
#: A Retry-After longer than a day is treated as a day: nobody waits longer.
RETRY_AFTER_CAP_MS: Final = 86_400_000
#: Secrets shorter than this are not redacted by value: replacing "a" everywhere
#: would garble messages and such a key protects nothing anyway.
_MIN_SECRET_LEN: Final = 6
REDACTED: Final = "[redacted]"

# Shapes of credentials that backends sometimes echo even when they are not ours.
# A key starts a word: "task-identifier-1" holds "sk-" but is no key.
_KEY_PATTERNS: Final = re.compile(
    r"(?<![A-Za-z0-9_\-])"
    r"(?:sk-[A-Za-z0-9_\-]{8,}"  # OpenAI, Anthropic (sk-ant-...), OpenRouter (sk-or-...)
    r"|AIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*)"
)


class WireError(Exception):
    """The one exception the wire layer raises on purpose.

    It carries the :class:`~lbcore.Failure` to hand to the core, so a transport
    loop needs a single ``except WireError as error: failure = error.failure``.
    Its string form is the failure's (already sanitised) message.

    A stream decoder also attaches the chunks that the same piece of input
    completed before the failure (usually none): deliver them, then fail.
    """

    def __init__(self, failure: Failure, chunks: Sequence[Chunk] = ()) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.chunks: tuple[Chunk, ...] = tuple(chunks)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace every known secret, and anything shaped like an API key, in ``text``."""
    return _KEY_PATTERNS.sub(REDACTED, redact_secrets(text, secrets))


def redact_secrets(text: str, secrets: Sequence[str]) -> str:
    """Replace the known ``secrets`` only: for text forwarded as it is, such as
    an answer's content, where a key-shaped word may be the answer itself."""
    for secret in secrets:
        if len(secret) >= _MIN_SECRET_LEN and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def sanitize(text: str, secrets: Sequence[str] = (), limit: int = MESSAGE_LIMIT) -> str:
    """A one-line, capped, redacted message. Redaction runs first so a cut never splits a key."""
    return clean_text(redact(text, secrets), limit)


def failure(
    kind: FailureKind,
    message: str,
    *,
    secrets: Sequence[str] = (),
    status: int | None = None,
    code: object = None,
    provider_type: object = None,
    retry_after: int | None = None,
) -> Failure:
    """Build a failure from untrusted parts without ever tripping its validation."""
    if status is not None and not 100 <= status <= 599:
        status = None
    return Failure(
        kind=kind,
        message=sanitize(message, secrets) or kind.value,
        status=status,
        code=_short(code, secrets),
        provider_type=_short(provider_type, secrets),
        retry_after_ms=retry_after,
    )


def _short(value: object, secrets: Sequence[str]) -> str | None:
    # Codes come as strings from OpenAI and as numbers from OpenRouter; both are kept as text.
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return sanitize(str(value), secrets, 100) or None
    return None


#: An HTTP status written as text ("500", as LiteLLM sends it): three ASCII digits, 100..599.
_STATUS_TEXT: Final = re.compile(r"[1-5][0-9]{2}")


def status_from_code(code: object) -> int | None:
    """The HTTP status a provider put in an error's ``code``: 502 or "502", else None.

    OpenRouter and Google write the status as a number, LiteLLM as a digit
    string; a code such as "invalid_api_key", a float or a bool is no status.
    """
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code if 100 <= code <= 599 else None
    if isinstance(code, str) and _STATUS_TEXT.fullmatch(code):
        return int(code)
    return None


def protocol_error(message: str, secrets: Sequence[str] = ()) -> WireError:
    return WireError(failure(FailureKind.PROTOCOL, message, secrets=secrets))


def header_value(headers: Headers, name: str) -> str | None:
    """The first value of header ``name``, case-insensitively, decoded leniently."""
    wanted = name.lower()
    pairs: Iterable[tuple[str | bytes, str | bytes]]
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in pairs:
        key_text = key.decode("latin-1") if isinstance(key, bytes) else key
        if key_text.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


#: A delay as servers write it: digits, perhaps a fraction. float() alone would
#: also take "1_0", "1e3" and "inf", which no server means as a delay.
_DELAY: Final = re.compile(r"-?\d+(?:\.\d+)?")


def _seconds_to_ms(seconds: float) -> int | None:
    # An absurdly long delay (float("9" * 400) is inf) is capped like any long one.
    if math.isnan(seconds):
        return None
    return int(min(max(seconds * 1000.0, 0.0), RETRY_AFTER_CAP_MS))


def _delay(text: str) -> float | None:
    text = text.strip()
    return float(text) if _DELAY.fullmatch(text) else None


def _http_date(text: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # HTTP dates are GMT; the asctime form and "-0000" come back zone-less,
        # and timestamp() would read them in the machine's local time.
        parsed = parsed.replace(tzinfo=datetime.UTC)
    try:
        return parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def retry_after_ms(headers: Headers, now: float | None = None) -> int | None:
    """How long the backend asked us to wait, in milliseconds, or None.

    ``retry-after-ms`` (OpenAI, Anthropic) wins over ``Retry-After``. A
    ``Retry-After`` HTTP date is measured against ``now`` (epoch seconds) when
    given, else against the response's own ``Date`` header, so this function
    never reads a clock. Values are clamped to 0..24 h.
    """
    raw_ms = header_value(headers, "retry-after-ms")
    milliseconds = _delay(raw_ms) if raw_ms is not None else None
    if milliseconds is not None:
        return _seconds_to_ms(milliseconds / 1000.0)
    raw = header_value(headers, "retry-after")
    if raw is None:
        return None
    seconds = _delay(raw)
    if seconds is not None:
        return _seconds_to_ms(seconds)
    until = _http_date(raw.strip())
    if until is None:
        return None
    if now is None:
        date = header_value(headers, "date")
        now = _http_date(date) if date is not None else None
        if now is None:
            return None
    return _seconds_to_ms(until - now)


_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def google_retry_delay(details: object) -> int | None:
    """The ``RetryInfo.retryDelay`` ("30s") Google puts in an error's details, in ms."""
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = detail.get("retryDelay")
            match = _DURATION.match(delay) if isinstance(delay, str) else None
            if match:
                return _seconds_to_ms(float(match.group(1)))
    return None


def decode_json(body: bytes | str) -> Any:
    """The JSON value in ``body``, or None when it is not JSON (or not UTF-8 at all)."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None


def status_text(status: int) -> str:
    try:
        return f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def http_failure(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    message: object,
    code: object,
    provider_type: object,
    retry_after: int | None = None,
    secrets: Sequence[str] = (),
    now: float | None = None,
) -> Failure:
    """The failure for a non-2xx answer, once a provider has picked its error body apart.

    A status outside 100..599 is not HTTP at all: it becomes a protocol failure.
    Without a usable provider message, the status line and a quoted snippet of
    the body stand in.
    """
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return failure(FailureKind.PROTOCOL, f"invalid HTTP status {status!r}", secrets=secrets)
    header_delay = retry_after_ms(headers, now)
    text = message if isinstance(message, str) and message.strip() else None
    if text is None:
        snippet = sanitize(body.decode("utf-8", "replace"), secrets, BODY_SNIPPET_LIMIT)
        text = f"{status_text(status)}: {snippet}" if snippet else status_text(status)
    return failure(
        FailureKind.HTTP,
        text,
        secrets=secrets,
        status=status,
        code=code,
        provider_type=provider_type,
        retry_after=header_delay if header_delay is not None else retry_after,
    )
