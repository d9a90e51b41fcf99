"""Fixtures shared by the transport tests."""

from __future__ import annotations

import pytest

from .harness import MODES


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Each client in turn: "sync" (``Client``), then ``AsyncClient`` on "asyncio" and "trio".

    A test about the async client alone parametrizes ``mode`` with ``ASYNC_MODES``.
    """
    return str(request.param)
