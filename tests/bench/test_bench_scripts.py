"""The bench scripts keep running: each one, with tiny sizes, ends cleanly.

Nothing here looks at a time: ``--quick`` runs every path of a bench (its
servers, its clients, its tables) with sizes too small to mean anything, and
stores nothing, so the committed ``bench/RESULTS.md`` is untouched. The
LiteLLM bench needs ``.peers-venv`` (``make bench-peers``) and is not run here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

SCRIPTS = [
    ["core_decisions.py"],
    ["core_memory.py"],
    ["wire_decoding.py"],
    ["transport_overhead.py"],
    ["transport_overhead.py", "--profile"],
    ["gateway.py"],
    ["shared_state.py"],
]


@pytest.mark.parametrize("script", SCRIPTS, ids=" ".join)
def test_bench_runs_with_tiny_sizes(script: list[str], tmp_path: Path) -> None:
    results = BENCH / ".results"
    before = {p.name: p.stat().st_mtime_ns for p in results.glob("*")} if results.exists() else {}
    done = subprocess.run(
        [sys.executable, str(BENCH / script[0]), *script[1:], "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "## " in done.stdout and "| ---" in done.stdout  # a section with a table
    after = {p.name: p.stat().st_mtime_ns for p in results.glob("*")} if results.exists() else {}
    assert after == before  # a quick run stores nothing
