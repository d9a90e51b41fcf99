"""Trusting the certificate authorities a config names, for https backends.

Self-hosted servers (vLLM, TGI, an internal proxy) often carry certificates of
a private authority. ``ClientConfig.ca_file`` names a PEM bundle; both clients
then verify every https backend against that bundle instead of the default
store, with host names checked as always. Verification is never switched off.
"""

from __future__ import annotations

import functools
import ssl

import certifi

from lbcore import ConfigError, truncate

__all__ = ("check_ca_file", "default_tls", "tls_context")


def tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """An SSL context trusting exactly ``ca_file``'s authorities; None keeps the default."""
    if ca_file is None:
        return None
    return ssl.create_default_context(cafile=ca_file)


@functools.cache
def default_tls() -> ssl.SSLContext:
    """The default store, loaded once per process: the system's authorities and
    certifi's, as httpcore trusts by default.

    Given no context, httpcore loads that same store for every new connection,
    which takes about 45 ms of CPU, the event loop stalled all the while.
    """
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    return context


def check_ca_file(ca_file: object) -> None:
    """Raise :class:`ConfigError` unless ``ca_file`` is None or a loadable PEM bundle."""
    if ca_file is None:
        return
    if not isinstance(ca_file, str) or not ca_file:
        shown = truncate(repr(ca_file), 60)
        raise ConfigError(f"ca_file: must be a path to a PEM file, got {shown}")
    try:
        tls_context(ca_file)
    except (OSError, ssl.SSLError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(
            f"ca_file: cannot load certificate authorities from {truncate(repr(ca_file), 80)}: "
            f"{truncate(reason, 80)}"
        ) from None
