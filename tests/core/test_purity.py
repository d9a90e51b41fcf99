"""The core stays pure: no clock, randomness, logging, threads, sockets or files.

The check is an AST scan rather than an import hook, so it also catches
imports inside functions and branches that a test run never reaches.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "lbcore"

FORBIDDEN_MODULES = frozenset(
    {
        "time",
        "random",
        "logging",
        "threading",
        "asyncio",
        "socket",
        "os",
        "requests",
        "httpcore",
        "anyio",
        "datetime",
        "uuid",
        "secrets",
        "subprocess",
    }
)
FORBIDDEN_CALLS = frozenset({"open", "print", "input"})

#: The command line reads trace files and prints reports: it is the one module
#: allowed to call open/print and use sys. It must still not import the
#: forbidden modules (checked below), only the builtin calls are excused.
COMMAND_LINE = CORE / "__main__.py"

SOURCES = sorted(CORE.rglob("*.py"))


def _forbidden_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        # "import os.path" and "from os.path import join" both reach os.
        found += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
    return found


def _forbidden_calls(tree: ast.AST) -> list[str]:
    return [
        f"line {node.lineno}: {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FORBIDDEN_CALLS
    ]


def test_the_scan_sees_the_core_sources() -> None:
    # A wrong path would make every other test here pass vacuously.
    names = {path.name for path in SOURCES}
    assert {"__init__.py", "_balancer.py", "_breaker.py", "__main__.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert _forbidden_imports(tree) == []


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if p != COMMAND_LINE],
    ids=lambda p: str(p.relative_to(CORE)),
)
def test_core_module_calls_no_io_builtins(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert _forbidden_calls(tree) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "import time as clock",
        "from os import path",
        "from os.path import join",
        "import json, random",
        "def f():\n    import logging",
        "try:\n    import anyio\nexcept ImportError:\n    pass",
    ],
)
def test_scan_catches_forbidden_imports(source: str) -> None:
    assert _forbidden_imports(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    ["import ostrich", "import timeit_like", "from . import time", "from ._time import x"],
)
def test_scan_ignores_lookalike_and_relative_imports(source: str) -> None:
    assert _forbidden_imports(ast.parse(source)) == []


@pytest.mark.parametrize(
    "source", ["open('f')", "print(1)", "x = input()", "def f():\n    print()"]
)
def test_scan_catches_io_builtin_calls(source: str) -> None:
    assert _forbidden_calls(ast.parse(source))
