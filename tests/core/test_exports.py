"""Every public name of a core module is re-exported flat from ``lbcore``."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import lbcore

_MARK = "# Everything in __all__ is re-exported by lbcore."
_MODULES = sorted(
    p.stem for p in Path(lbcore.__file__).parent.glob("_*.py") if _MARK in p.read_text()
)


def test_the_marked_modules_are_found() -> None:
    assert {"_actions", "_config", "_outcomes", "_trace"} <= set(_MODULES)


@pytest.mark.parametrize("name", _MODULES)
def test_module_names_are_re_exported(name: str) -> None:
    module = importlib.import_module(f"lbcore.{name}")
    missing = [n for n in module.__all__ if n not in lbcore.__all__]
    assert missing == []
    for public in module.__all__:
        assert getattr(lbcore, public) is getattr(module, public)


def test_all_names_exist_and_are_unique() -> None:
    assert len(set(lbcore.__all__)) == len(lbcore.__all__)
    for public in lbcore.__all__:
        assert hasattr(lbcore, public)
