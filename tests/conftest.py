"""Options shared by the whole suite."""

from __future__ import annotations

import pytest

from lbtransports import AsyncClient


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--plain-http",
        choices=("httpcore", "h11"),
        default="httpcore",
        help="what serves http:// backends in every AsyncClient a test makes without saying "
        "(`make test` runs the async transport tests once more with h11, the gateway's choice)",
    )


def pytest_configure(config: pytest.Config) -> None:
    choice = config.getoption("--plain-http")
    defaults = AsyncClient.__init__.__kwdefaults__
    assert defaults is not None and "plain_http" in defaults
    defaults["plain_http"] = choice
