"""Trace headers leave settings added after format 1 out at their defaults (spec §15.1)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from lbcore import (
    TRACE_FORMAT,
    BackendSpec,
    BalancerConfig,
    Settings,
    TraceHeader,
    decode_trace,
    encode_line,
)
from lbcore._config import LATER_BACKEND_FIELDS, LATER_SETTINGS
from lbcore._trace import _drop_later_defaults

from .trace_snapshot import GOLDEN_DIR

#: The settings trace format 1 was fixed with: always written.
FORMAT_1_SETTINGS = (
    "failover_retry_count",
    "failover_retry_delay_ms",
    "failover_on_network_errors",
    "failover_status_codes",
    "tpm_threshold",
    "timeout_ms",
    "circuit_breaker_enabled",
    "circuit_breaker_failure_threshold",
    "circuit_breaker_failure_window_ms",
    "circuit_breaker_recovery_timeout_ms",
)
FORMAT_1_BACKEND_FIELDS = ("name", "provider", "model", "context_window")


def _defaults(struct: type[msgspec.Struct]) -> dict[str, object]:
    return {f.name: f.default for f in msgspec.structs.fields(struct)}


def test_every_later_setting_is_named_with_its_real_default() -> None:
    defaults = _defaults(Settings)
    assert tuple(defaults)[: len(FORMAT_1_SETTINGS)] == FORMAT_1_SETTINGS
    later = {k: v for k, v in defaults.items() if k not in FORMAT_1_SETTINGS}
    assert later == LATER_SETTINGS
    backend = _defaults(BackendSpec)
    assert {k: v for k, v in backend.items() if k not in FORMAT_1_BACKEND_FIELDS} == (
        LATER_BACKEND_FIELDS
    )


def _header(config: BalancerConfig) -> TraceHeader:
    return TraceHeader(format=TRACE_FORMAT, config=config)


def _config(settings: Settings, limit: int | None = None) -> BalancerConfig:
    backends = (
        BackendSpec(name="a", provider="openai", max_concurrent=limit),
        BackendSpec(name="b", provider="openai"),
    )
    return BalancerConfig(strategy="failover", backends=backends, settings=settings)


def test_a_default_header_names_no_later_setting() -> None:
    line = msgspec.json.decode(encode_line(_header(_config(Settings()))))
    assert set(line["config"]["settings"]) == set(FORMAT_1_SETTINGS)
    for backend in line["config"]["backends"]:
        assert set(backend) == set(FORMAT_1_BACKEND_FIELDS)


def _names_no_later_setting(path: Path) -> bool:
    header = msgspec.json.decode(path.read_bytes().split(b"\n", 1)[0])
    return not set(header["config"]["settings"]) & set(LATER_SETTINGS)


#: Golden traces whose header is written as trace format 1 wrote it.
_FORMAT_1_GOLDENS = [p for p in sorted(GOLDEN_DIR.glob("*.jsonl")) if _names_no_later_setting(p)]


@pytest.mark.parametrize("path", _FORMAT_1_GOLDENS[:5], ids=lambda p: p.stem)
def test_a_header_without_later_settings_decodes_to_their_defaults(path: Path) -> None:
    header, _ = decode_trace(path.read_bytes())
    settings = msgspec.structs.asdict(header.config.settings)
    assert {k: settings[k] for k in LATER_SETTINGS} == LATER_SETTINGS
    for backend in header.config.backends:
        assert backend.max_concurrent is None


def test_non_default_later_settings_round_trip() -> None:
    settings = Settings(max_concurrent=4, max_queued=0, queue_timeout_ms=250)
    header = _header(_config(settings, limit=2))
    line = encode_line(header)
    decoded = msgspec.json.decode(line)
    assert decoded["config"]["settings"]["max_queued"] == 0
    assert decoded["config"]["backends"][0]["max_concurrent"] == 2
    assert "max_concurrent" not in decoded["config"]["backends"][1]
    assert decode_trace(line + b"\n")[0] == header
    assert encode_line(decode_trace(line + b"\n")[0]) == line


def test_a_later_setting_equal_to_its_default_only_by_value_is_kept() -> None:
    # 0 == False in Python: a strict comparison keeps a header honest even if a
    # later default were a bool and a value an int (or the other way round).
    fields: dict[str, object] = {"seed": False}
    _drop_later_defaults(fields, {"seed": 0})
    assert fields == {"seed": False}
