"""The committed lock was compiled from the pyproject.toml and tools list in the tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_lock_records_the_inputs_it_was_compiled_from() -> None:
    inputs = (ROOT / "pyproject.toml").read_bytes() + (ROOT / "requirements/tools.in").read_bytes()
    recorded = (ROOT / "requirements/dev.lock").read_text().splitlines()[-1]
    # Run `make lock` after changing pyproject.toml or requirements/tools.in.
    assert recorded == f"# inputs sha256: {hashlib.sha256(inputs).hexdigest()}"
