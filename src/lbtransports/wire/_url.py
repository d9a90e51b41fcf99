"""Showing the URL an attempt tried, in a failure, without the credential it may carry.

A 404 from a wrong ``base_url`` (Anthropic's with ``/v1`` twice, Gemini's
without ``/v1beta``) reads like a missing model unless the message says where
the request went. A URL is shown only after anything secret in it is hidden:
a user part, query parameters named like credentials (Google's ``?key=``),
the request's own key and anything shaped like one.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from typing import Final

import msgspec

from lbcore import Failure, clean_text

from ._errors import MESSAGE_LIMIT, REDACTED, redact
from ._target import secret_name

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("shown_url", "with_url_tried")

#: Query parameters whose values are credentials beyond the setting names
#: ``secret_name`` knows: bare tokens and signed-URL signatures.
_SECRET_PARAM: Final = re.compile(r"(^|[-_])(token|sig|signature)$", re.IGNORECASE)
#: The URL is cut at this many code points, so the message keeps room for the reason.
_URL_LIMIT: Final = 240
#: Statuses that say the request went to the wrong place rather than that it was refused.
WRONG_PLACE: Final = frozenset({301, 302, 303, 307, 308, 404, 405})


def _shown_param(param: str) -> str:
    name, sep, _ = param.partition("=")
    plain = urllib.parse.unquote_plus(name)
    if sep and (secret_name(plain) or _SECRET_PARAM.search(plain)):
        return f"{name}={REDACTED}"
    return param


def shown_url(url: str, secrets: Sequence[str] = ()) -> str:
    """``url`` as a message may show it: user part and credential-named parameters hidden."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # a malformed IPv6 host: nothing in it can be shown safely
        return "(unparsable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(_shown_param(param) for param in parts.query.split("&")) if parts.query else ""
    shown = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return redact(shown, secrets)


def with_url_tried(failure: Failure, url: str, secrets: Sequence[str] = ()) -> Failure:
    """``failure`` naming the URL tried, when its status says the URL is the problem."""
    if failure.status not in WRONG_PLACE:
        return failure
    suffix = f" (url tried: {clean_text(shown_url(url, secrets), _URL_LIMIT)})"
    message = clean_text(failure.message, MESSAGE_LIMIT - len(suffix)) + suffix
    return msgspec.structs.replace(failure, message=message)
