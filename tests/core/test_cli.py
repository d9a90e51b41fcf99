"""``python -m lbcore replay`` and ``show`` on real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lbcore import TRACE_FORMAT, TraceHeader, encode_trace, run, verify_trace
from lbcore.__main__ import main

from .scenarios import SCENARIOS
from .trace_snapshot import GOLDEN_DIR


def sample_trace() -> bytes:
    case = next(c for c in SCENARIOS if c.name == "failover_all_fail")
    header = TraceHeader(format=TRACE_FORMAT, config=case.config)
    return encode_trace(header, run(case.config, case.events))


def test_replay_accepts_every_golden_trace(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in GOLDEN_DIR.glob("*.jsonl"))
    assert main(["replay", *files]) == 0
    assert capsys.readouterr().out.count(": ok (") == len(files)


def test_replay_reports_the_first_differing_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample_trace().splitlines()
    # Claim a different decision on step 3: the replay must point at line 4.
    lines[3] = lines[3].replace(b'"retries_exhausted"', b'"immediate"')
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["replay", str(path)]) == 1
    err = capsys.readouterr().err
    assert "line 4 differs" in err
    assert '"immediate"' in err


def test_replay_reports_an_unreadable_trace(tmp_path: Path) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_bytes(b"not json\n")
    mismatch = verify_trace(path.read_bytes())
    assert mismatch is not None and mismatch.line == 0
    assert main(["replay", str(path), str(tmp_path / "missing.jsonl")]) == 1


def test_replay_reports_a_refused_event() -> None:
    lines = sample_trace().splitlines()
    lines[2] = lines[2].replace(b'"attempt":1,', b'"attempt":9,', 1)
    mismatch = verify_trace(b"\n".join(lines))
    assert mismatch is not None and mismatch.line == 3
    assert mismatch.actual.startswith("refused: stale attempt 9")


def test_show_explains_one_request(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN_DIR / "breaker_opens_and_skips.jsonl"
    assert main(["show", str(path), "--request", "r3"]) == 0
    out = capsys.readouterr().out
    assert "request r3:" in out
    assert "skip a (breaker_open" in out
    assert "request r1:" not in out


def test_module_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lbcore", "replay", str(GOLDEN_DIR / "rr_order_wraps.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "replay identically" in result.stdout


def test_show_can_print_the_final_stats(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN_DIR / "breaker_opens_and_skips.jsonl"
    assert main(["show", str(path), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "stats after the last step:" in out
    assert '"state": "open"' in out


def test_a_trace_with_an_invalid_failure_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample_trace().splitlines()
    lines[2] = lines[2].replace(b'"status":503', b'"status":700', 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    mismatch = verify_trace(bad.read_bytes())
    assert mismatch is not None and mismatch.line == 0
    assert "between 100 and 599" in mismatch.actual
    good = GOLDEN_DIR / "rr_single_backend.jsonl"
    assert main(["replay", str(bad), str(good)]) == 1
    out = capsys.readouterr()
    assert "rr_single_backend.jsonl: ok" in out.out  # the next file is still checked
    assert main(["show", str(bad)]) == 1
