"""``lb``: the one command for everything a user does with lbcore from the shell.

``lb serve`` runs the gateway, ``lb chat`` asks one question through a load
balancer, ``lb replay``/``lb show``/``lb explain`` read traces, ``lb demo`` runs
the embedded demonstration and ``lb serve-fake`` serves local fault backends.
"""

from ._main import main

__all__ = ("main",)
