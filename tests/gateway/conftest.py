from __future__ import annotations

import pytest

from .harness import BACKEND_SECRET


@pytest.fixture(autouse=True)
def backend_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The backends' key comes from the environment, as in a real deployment.
    monkeypatch.setenv("GW_TEST_BACKEND_KEY", BACKEND_SECRET)
