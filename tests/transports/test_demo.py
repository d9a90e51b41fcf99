"""`python -m lbtransports.demo` (`make demo`) runs, tells its story, and its traces replay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lbcore import FailOver, RequestCompleted, RequestFailed, decode_trace, verify_trace
from lbtransports import demo

ROUTE = "after openai (429) -> anthropic (no first chunk in 300 ms) -> gemini: "
ANSWER = "gemini-0 gemini-1 gemini-2 gemini-3"


def check_output(out: str) -> None:
    lines = out.splitlines()
    assert any(line.startswith(f"r1  {ROUTE}{ANSWER}") for line in lines), out
    assert any(line.startswith(f"r2  gemini: {ANSWER}") for line in lines), out
    # r3 breaks mid-answer: the caller keeps the two chunks and gets the backend's error.
    assert any(line.startswith("r3  gemini: gemini-0 gemini-1") for line in lines), out
    assert (
        'raised BackendError: backend "gemini" failed after 2 chunks: '
        "connection lost before the answer ended"
    ) in out
    assert ".backend='gemini' .chunks_delivered=2" in out
    for request_id in ("a1", "a2", "a3"):
        assert any(line.startswith(f"{request_id}  {ROUTE}{ANSWER}") for line in lines), out
    assert "a4  raised FailoverError: " in out
    assert "gemini: The model is overloaded (status: 503)" in out
    # The explanation ran, and so did the replay.
    assert "fail over openai -> anthropic (retries_exhausted: http 429)" in out
    assert "cancel #2 on anthropic (first_chunk_timeout)" in out
    assert out.count("steps replay identically") == 2
    assert "Client: 2 requests completed, 0 in flight" in out
    assert "AsyncClient: 3 requests completed, 0 in flight" in out
    assert "openai.OpenAI(base_url=gateway) got 'gemini-0 gemini-1" in out
    assert len(lines) <= 70


def check_traces(sync_trace: Path, async_trace: Path) -> None:
    for path in (sync_trace, async_trace):
        assert verify_trace(path.read_bytes()) is None, path
    _, steps = decode_trace(sync_trace.read_bytes())
    actions = [action for step in steps for action in step.actions]
    hops = [(a.from_backend, a.to_backend) for a in actions if isinstance(a, FailOver)]
    assert hops == [("openai", "anthropic"), ("anthropic", "gemini")]
    completed = [(a.request_id, a.backend) for a in actions if isinstance(a, RequestCompleted)]
    assert completed == [("r1", "gemini"), ("r2", "gemini")]
    failed = [
        (a.request_id, type(a.error).__name__) for a in actions if isinstance(a, RequestFailed)
    ]
    assert failed == [("r3", "BackendFailed")]
    _, steps = decode_trace(async_trace.read_bytes())
    actions = [action for step in steps for action in step.actions]
    served = sorted(a.request_id for a in actions if isinstance(a, RequestCompleted))
    assert served == ["a1", "a2", "a3"]
    assert [
        (a.request_id, type(a.error).__name__) for a in actions if isinstance(a, RequestFailed)
    ] == [("a4", "FailoverExhausted")]


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_demo_main(loop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "traces" / "demo.jsonl"
    assert demo.main(["--trace", str(trace), "--async-backend", loop]) == 0
    check_output(capsys.readouterr().out)
    check_traces(trace, tmp_path / "traces" / "demo-async.jsonl")


def test_demo_as_a_command_writes_its_traces_in_the_current_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lbtransports.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    check_output(done.stdout)
    check_traces(tmp_path / "demo-trace.jsonl", tmp_path / "demo-trace-async.jsonl")
