"""The two ways the core refuses: bad configuration, or a misused balancer."""

from __future__ import annotations

# Everything in __all__ is re-exported by lbcore.
__all__ = ("ConfigError", "InvalidEvent", "LBError")


class LBError(Exception):
    """Base of every exception lbcore raises on purpose."""


class ConfigError(LBError, ValueError):
    """The configuration breaks a rule. The message names the field and the rule."""


class InvalidEvent(LBError, ValueError):
    """The caller fed the balancer an event it cannot accept.

    Raised before anything changes: after this exception the balancer is
    exactly as it was, and may go on being used. It is a ValueError so that
    msgspec reports a bad value inside a decoded trace as a validation error.
    """
