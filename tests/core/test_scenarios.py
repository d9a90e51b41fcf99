"""Golden traces: every named scenario, recorded and reviewed in ``spec/traces/``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from lbcore import TRACE_FORMAT, TraceHeader, encode_trace, run, verify_trace

from .scenarios import SCENARIOS, Scenario
from .trace_snapshot import GOLDEN_DIR, TraceSnapshotExtension


@pytest.fixture
def golden(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(TraceSnapshotExtension)


def record(case: Scenario) -> bytes:
    header = TraceHeader(
        format=TRACE_FORMAT, config=case.config, about=f"{case.group}: {case.about}"
    )
    return encode_trace(header, run(case.config, case.events))


@pytest.mark.parametrize("case", SCENARIOS, ids=lambda case: case.name)
def test_golden_trace(case: Scenario, golden: SnapshotAssertion) -> None:
    assert record(case) == golden


def test_scenario_names_are_unique() -> None:
    names = [case.name for case in SCENARIOS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", sorted(GOLDEN_DIR.glob("*.jsonl")), ids=lambda p: p.stem)
def test_every_golden_trace_replays_byte_for_byte(path: Path) -> None:
    assert verify_trace(path.read_bytes()) is None


def test_every_golden_trace_has_a_scenario() -> None:
    on_disk = {p.stem for p in GOLDEN_DIR.glob("*.jsonl")}
    assert on_disk == {case.name for case in SCENARIOS}


def test_the_spec_indexes_every_golden_trace() -> None:
    spec = (GOLDEN_DIR.parent / "behaviour.md").read_text()
    indexed = set(re.findall(r"^\| `([a-z0-9_]+)\.jsonl` \|", spec, re.M))
    assert indexed == {case.name for case in SCENARIOS}


@pytest.mark.parametrize("case", SCENARIOS, ids=lambda case: case.name)
def test_the_spec_index_uses_the_scenario_group(case: Scenario) -> None:
    spec = (GOLDEN_DIR.parent / "behaviour.md").read_text()
    row = re.search(rf"^\| `{case.name}\.jsonl` \| ([^|]+) \|", spec, re.M)
    assert row is not None and row.group(1).strip() == case.group
