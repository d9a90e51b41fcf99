"""spec/behaviour.md must say what the code does: the tables that can be checked, are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lbcore import FailoverReason, Settings, SkipReason

SPEC = (Path(__file__).resolve().parents[2] / "spec" / "behaviour.md").read_text()
DEFAULTS = Settings()


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "None" if value is None else str(value)


@pytest.mark.parametrize("key", Settings.__struct_fields__)
def test_every_setting_is_in_the_spec_with_its_default(key: str) -> None:
    row = re.search(rf"^\| `{key}` \| [^|]+(?:\\\|[^|]+)* \| `([^`]+)`", SPEC, re.M)
    assert row is not None, f"spec/behaviour.md has no settings row for {key}"
    assert row.group(1) == _shown(getattr(DEFAULTS, key))


@pytest.mark.parametrize("reason", [*FailoverReason, *SkipReason])
def test_every_reason_is_named_in_the_spec(reason: str) -> None:
    assert f"`{reason}`" in SPEC
