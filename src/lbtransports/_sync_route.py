"""How the sync client reaches one backend: its own connection pool, and a
``requests.Session`` only when the environment may have a say.

A session's own work per request (merging its settings, headers, cookies
and environment into the request, then dispatching hooks and storing
cookies) changes nothing here: no cookie is ever kept, no hook is set, and
without ``trust_env`` nothing comes from the environment. So the request is
prepared once, as the session would prepare it, and handed straight to the
pool's adapter. With ``trust_env`` (proxies, ``.netrc``, ``REQUESTS_CA_BUNDLE``)
the session does the sending, as before.
"""

from __future__ import annotations

import re
from http.cookiejar import DefaultCookiePolicy
from typing import Final

import requests

from ._client_base import CLIENT_HEADERS
from ._sync_sent import SentAdapter
from .wire import HttpRequest

__all__ = ("Route",)

#: The client's own headers, keyed by their names in lower case.
_CLIENT_HEADERS: Final = {name.lower(): (name, value) for name, value in CLIENT_HEADERS}

#: URLs kept prepared per backend; more is a caller building odd URLs.
_URLS_KEPT = 16

#: A URL requests' preparation gives back unchanged: http or https, a host of
#: lowercase letters, digits, dots and hyphens (a name or an IPv4 address, so
#: no IDNA and nothing to lowercase), a port without leading zeros, a path of
#: unreserved characters, and no user, query or fragment. Dot segments (which
#: urllib3 removes) are ruled out apart (see :func:`prepared_url`).
_PLAIN_URL: Final = re.compile(
    r"https?://[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::([1-9][0-9]{0,4}))?/[A-Za-z0-9._~/-]*"
)


def prepared_url(url: str) -> str:
    """``url`` as requests prepares it (``PreparedRequest.prepare_url``).

    The URLs the wire layer builds are mostly plain ones, which come back as
    they are; telling one costs a regular expression, where preparing it costs
    about 10 µs (parsing, IDNA checks, requoting) for every backend a client
    first reaches. Anything else is prepared by requests, errors included.
    """
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None and "/." not in url and int(plain[1] or 0) <= 65535:
        return url
    scratch = requests.PreparedRequest()
    scratch.prepare_url(url, None)
    assert scratch.url is not None
    return scratch.url


class Route:
    """One backend's pooled connections, and how a request goes out over them."""

    __slots__ = ("_adapter", "_session", "_urls", "_verify")

    def __init__(self, pool_size: int, *, trust_env: bool, ca_file: str | None) -> None:
        # The core owns retries: urllib3 must never retry underneath it.
        self._adapter = SentAdapter(
            pool_connections=1, pool_maxsize=pool_size, max_retries=0, pool_block=False
        )
        #: What certificates are checked against: the config's CA file, or the defaults.
        self._verify: str | bool = ca_file if ca_file is not None else True
        self._session = _session(self._adapter, ca_file) if trust_env else None
        #: Each URL as requests prepares it (IDNA, quoting): a backend has one or two.
        self._urls: dict[str, str] = {}

    def send(self, http: HttpRequest, timeout: tuple[float, float]) -> requests.Response:
        """Send ``http`` and return its response once the head came (the body streams)."""
        if self._session is not None:
            return self._session.request(
                http.method,
                http.url,
                headers=dict(http.headers),
                data=http.body,
                stream=True,
                timeout=timeout,
                allow_redirects=False,
            )
        # The session's header merge: its own headers, then the request's over
        # them, a name replacing any spelling of itself in place (as requests'
        # CaseInsensitiveDict does, which costs a few µs more to fill).
        merged = dict(_CLIENT_HEADERS)
        for name, value in http.headers:
            merged[name.lower()] = (name, value)
        headers = dict(merged.values())
        # PreparedRequest.prepare, less what can never apply here: no cookie
        # jar, no hooks, and the URL prepared once. Headers are still checked.
        prepared = requests.PreparedRequest()
        prepared.prepare_method(http.method)
        prepared.url = self._prepared_url(http.url)
        prepared.prepare_headers(headers)
        prepared.prepare_body(http.body, None)
        if "@" in prepared.url:
            prepared.prepare_auth(None, prepared.url)  # user:password in the base URL
        return self._adapter.send(
            prepared, stream=True, timeout=timeout, verify=self._verify, cert=None, proxies={}
        )

    def _prepared_url(self, url: str) -> str:
        prepared = self._urls.get(url)
        if prepared is None:
            if len(self._urls) >= _URLS_KEPT:
                self._urls.clear()
            prepared = self._urls[url] = prepared_url(url)
        return prepared

    def close(self) -> None:
        """Close every connection pooled here (idle ones; a streaming one when it ends).

        ``HTTPAdapter.close`` only makes urllib3 forget its pools; each pool closes
        its connections when it is garbage collected, which a reference cycle (an
        exception's traceback holds the pool) can put off indefinitely.
        """
        manager = self._adapter.poolmanager
        # keys() takes the container's lock; iterating it directly is refused.
        for key in manager.pools.keys():  # noqa: SIM118
            pool = manager.pools.get(key)
            if pool is not None:
                pool.close()
        if self._session is not None:
            self._session.close()
        self._adapter.close()


def _session(adapter: SentAdapter, ca_file: str | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = True
    if ca_file is not None:
        # Wins over REQUESTS_CA_BUNDLE, as the config said so.
        session.verify = ca_file
    # Cookies one backend sets must never travel anywhere; keep none.
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.headers.clear()
    session.headers.update(dict(CLIENT_HEADERS))
    for adapter_of_session in session.adapters.values():
        adapter_of_session.close()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
