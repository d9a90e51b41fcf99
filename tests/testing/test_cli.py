"""``python -m lbtransports.testing``: its grammar, and the real command in a subprocess."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

import httpcore
import pytest

from lbtransports.testing import Fail, Hang, KeepAlive, Malformed, Reset, Stall, Stream
from lbtransports.testing._cli import main
from lbtransports.testing._grammar import parse_backend
from lbtransports.wire import (
    BackendTarget,
    ChatRequest,
    UserMessage,
    build_request,
    parse_error,
)

COMMAND = (sys.executable, "-m", "lbtransports.testing")


# ------------------------------------------------------------------ the grammar


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("a=openai", (Stream(),)),
        ("b=anthropic:fail:429,stream", (Fail(429), Stream())),
        ("c=gemini:hang", (Hang(),)),
        (
            "d=openai:fail:503:retry_after=2*2,stream:5:delay_ms=100",
            (Fail(503, retry_after="2"), Fail(503, retry_after="2"), Stream(5, delay_ms=100)),
        ),
        (
            "e=openai:Keep-Alive:5:after_chunks=1,reset:before_headers,malformed:1:sse,stall:2",
            (
                KeepAlive(5, after_chunks=1),
                Reset(before_headers=True),
                Malformed(1, kind="sse"),
                Stall(2),
            ),
        ),
    ],
)
def test_specs_read_into_scripts(text: str, script: tuple[object, ...]) -> None:
    spec = parse_backend(text)
    assert (spec.name, spec.script, spec.refused) == (text.partition("=")[0], script, False)


def test_closed_is_a_refusing_backend() -> None:
    spec = parse_backend("z=gemini:closed")
    assert (spec.provider, spec.script, spec.refused) == ("gemini", (), True)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("nameless", "expected NAME=PROVIDER"),
        ("a=grok", "unknown provider 'grok'"),
        ("a=openai:fial:429", "unknown behaviour 'fial'"),
        ("a=openai:fail:lots", "step 'fail:lots'"),
        ("a=openai:stream:colour=red", "no field 'colour'"),
        ("a=openai:stall:1:2", "too many values"),
        ("a=openai:fail:99", "status must be 200..599"),
        ("a=openai:hang*0", "repeat count"),
    ],
)
def test_bad_specs_exit_2_naming_the_bad_part(
    text: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([text, "--duration", "1"])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_a_duplicate_name_or_a_bad_duration_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["a=openai", "a=gemini"], ["a=openai", "--duration", "0"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "already a backend named 'a'" in err
    assert "--duration must be more than 0" in err


# ------------------------------------------------------------------ the command


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's output lines as they come, read on a thread so reads can time out."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_the_command_serves_until_ctrl_c() -> None:
    argv = [*COMMAND, "a=openai:fail:429:1", "b=gemini:hang", "c=anthropic:closed"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            lines = _lines(proc)
            announced = [lines.get(timeout=10) for _ in range(4)]
            assert announced[3] == "ready"
            names = [line.split(" ", 2) for line in announced[:3]]
            assert [(n, p) for n, p, _ in names] == [
                ("a", "openai"),
                ("b", "gemini"),
                ("c", "anthropic"),
            ]
            base_url = names[0][2]
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
            target = BackendTarget(name="a", provider="openai", model="m", base_url=base_url)
            http = build_request(target, ChatRequest(messages=(UserMessage(content="hi"),)))
            with httpcore.ConnectionPool() as pool:
                timeout = {"timeout": {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}}
                response = pool.request(
                    http.method,
                    http.url,
                    headers=list(http.headers),
                    content=http.body,
                    extensions=timeout,
                )
            failure = parse_error("openai", response.status, response.headers, response.content)
            assert (failure.status, failure.retry_after_ms) == (429, 1000)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=5) == 0
        finally:
            proc.kill()


def test_the_command_stops_after_its_duration() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [*COMMAND, "a=anthropic:stream:2", "--duration", "0.2", "--loop", "trio"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ready"
    assert time.monotonic() - started < 5


def test_the_command_exits_2_on_a_bad_argument() -> None:
    done = subprocess.run(
        [*COMMAND, "a=openai:fail:oops"], capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 2
    assert "fail:oops" in done.stderr
    assert done.stdout == ""
