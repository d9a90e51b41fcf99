"""``lb``: the dispatcher, the trace tools, and ``lb chat`` against real local backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbcore import (
    RequestAborted,
    RequestCompleted,
    RequestFailed,
    decode_trace,
    request_ids,
    tell,
    verify_trace,
)
from lbtransports.cli import main
from lbtransports.testing import Fail, LocalBackends, Stream

TRACES = Path(__file__).parents[2] / "spec" / "traces"
SECRET = "sk-lb-chat-secret-0123456789"


@pytest.fixture
def backends() -> Iterator[LocalBackends]:
    servers = LocalBackends()
    servers.add("bad", "openai", default=Fail(503, message="The model is overloaded"))
    servers.add("good", "anthropic", default=Stream(chunks=3))
    with servers:
        yield servers


def write_config(
    path: Path, backends: LocalBackends, names: tuple[str, ...], strategy: str = "failover"
) -> Path:
    lines = [f'strategy = "{strategy}"', 'profile_name = "cli"', ""]
    for backend in backends:
        if backend.name not in names:
            continue
        lines += [
            "[[backends]]",
            f'name = "{backend.name}"',
            f'provider = "{backend.provider.value}"',
            f'model = "{backend.name}-model"',
            f'base_url = "{backend.base_url}"',
            f'credential = {{ key = "{SECRET}" }}',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


# ------------------------------------------------------------------ the dispatcher


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve", "chat", "demo", "replay", "show", "explain", "serve-fake"):
        assert f"  {command} " in out


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: lb COMMAND" in capsys.readouterr().err


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err == "lb: unknown command 'frobnicate'; `lb --help` lists them\n"


@pytest.mark.parametrize(
    "command", ["serve", "chat", "replay", "show", "explain", "serve-fake", "demo"]
)
def test_each_command_has_help_under_its_own_name(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lb {command}")


# ------------------------------------------------------------------ trace tools


def test_replay_checks_golden_traces(capsys: pytest.CaptureFixture[str]) -> None:
    trace = TRACES / "failover_tries_in_order.jsonl"
    assert main(["replay", str(trace)]) == 0
    assert capsys.readouterr().out.startswith(f"{trace}: ok (")


def test_explain_tells_why_the_request_ended_where_it_did(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trace = TRACES / "breaker_opens_and_skips.jsonl"
    assert main(["explain", str(trace), "--request", "r3"]) == 0
    story = capsys.readouterr().out
    assert "The balancer skipped a: its circuit breaker was open" in story
    assert story.rstrip().endswith(
        "In short: it completed on b after a skipped: its circuit breaker was open."
    )


def test_explain_an_unknown_request_fails(capsys: pytest.CaptureFixture[str]) -> None:
    trace = TRACES / "failover_tries_in_order.jsonl"
    assert main(["explain", str(trace), "--request", "r99"]) == 1
    assert "'r99' does not appear in this trace" in capsys.readouterr().out


@pytest.mark.parametrize("trace", sorted(TRACES.glob("*.jsonl")), ids=lambda p: p.stem)
def test_every_golden_request_ends_its_story_with_its_terminal_action(trace: Path) -> None:
    header, steps = decode_trace(trace.read_bytes())
    endings: dict[str, str] = {}
    for step in steps:
        for action in step.actions:
            if isinstance(action, RequestCompleted):
                endings[action.request_id] = f"In short: it completed on {action.backend}"
            elif isinstance(action, RequestFailed):
                endings[action.request_id] = f"In short: it failed ({type(action.error).__name__})"
            elif isinstance(action, RequestAborted):
                endings[action.request_id] = "In short: the caller cancelled it"
    for request_id in request_ids(steps):
        last = tell(header, steps, request_id).splitlines()[-1]
        expected = endings.get(request_id, f"In short: {request_id} had not ended")
        assert last.startswith(expected), (request_id, last)


# ------------------------------------------------------------------ lb chat


def test_chat_streams_the_answer_after_failing_over(
    backends: LocalBackends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "lb.toml", backends, ("bad", "good"))
    trace = tmp_path / "chat.jsonl"
    status = main(["chat", "--config", str(config), "--trace", str(trace), "--stats", "Hi"])
    out, err = capsys.readouterr()
    assert status == 0
    assert out.endswith("\n") and len(out.strip()) > 0
    stats = json.loads(err)
    assert stats["total_requests"] == 1
    assert verify_trace(trace.read_bytes()) is None
    assert backends["bad"].requests_total >= 1
    assert backends["good"].requests_total == 1
    assert SECRET not in out + err + trace.read_text()


def _gateway_toml(path: Path, backends: LocalBackends) -> Path:
    """A config as ``lb serve`` reads it: a group per backend, caller keys from the env."""
    lines = ["[gateway]", 'key_env = "LB_TEST_GATEWAY_KEY_NOT_SET"', ""]
    for backend in backends:
        lines += [
            f"[groups.{backend.name}]",
            'strategy = "round-robin"',
            "[[groups." + backend.name + ".backends]]",
            f'name = "{backend.name}"',
            f'provider = "{backend.provider.value}"',
            f'model = "{backend.name}-model"',
            f'base_url = "{backend.base_url}"',
            f'credential = {{ key = "{SECRET}" }}',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def test_chat_uses_one_group_of_a_gateway_config(
    backends: LocalBackends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _gateway_toml(tmp_path / "gateway.toml", backends)
    assert main(["chat", "--config", str(config), "--model", "good", "Hi"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("good-0") and err == ""
    assert backends["good"].requests_total == 1 and backends["bad"].requests_total == 0


def test_chat_with_a_gateway_config_needs_the_group_named(
    backends: LocalBackends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _gateway_toml(tmp_path / "gateway.toml", backends)
    assert main(["chat", "--config", str(config), "Hi"]) == 2
    assert "choose one with --model" in capsys.readouterr().err
    assert main(["chat", "--config", str(config), "--model", "nope", "Hi"]) == 2
    err = capsys.readouterr().err
    assert "no such group" in err and "'bad', 'good'" in err and SECRET not in err
    plain = write_config(tmp_path / "lb.toml", backends, ("good",), "round-robin")
    assert main(["chat", "--config", str(plain), "--model", "good", "Hi"]) == 2
    assert "only a gateway config has groups" in capsys.readouterr().err


def test_chat_reads_the_prompt_from_stdin(backends: LocalBackends, tmp_path: Path) -> None:
    config = write_config(tmp_path / "lb.toml", backends, ("good",), "round-robin")
    done = subprocess.run(
        [sys.executable, "-m", "lbtransports.cli", "chat", "--config", str(config)],
        input="Say hello",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert done.stderr == ""


def test_chat_failure_is_one_line_without_traceback_or_key(
    backends: LocalBackends, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "lb.toml", backends, ("bad",), "round-robin")
    done = subprocess.run(
        [sys.executable, "-m", "lbtransports.cli", "chat", "--config", str(config), "Hi"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("lb chat: BackendError: ")
    assert "The model is overloaded" in lines[0]
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_chat_with_a_broken_config_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lb.toml"
    config.write_text(f'strategy = "failover"\n[[backends]]\nname = 3\nprovider = "{SECRET}"\n')
    assert main(["chat", "--config", str(config), "Hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lb chat: config: ") and "backends[0].name" in err
    assert SECRET not in err


def test_chat_with_unreadable_toml_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lb.toml"
    config.write_text('strategy = "failover\n')
    assert main(["chat", "--config", str(config), "Hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lb chat: {config}: not valid TOML: ") and "line 1" in err


def test_chat_with_a_missing_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["chat", "--config", str(missing), "Hi"]) == 2
    assert (
        capsys.readouterr().err == f"lb chat: {missing}: cannot read: No such file or directory\n"
    )


def test_chat_from_a_profile(
    backends: LocalBackends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = backends["good"]
    (tmp_path / "good.json").write_text(
        json.dumps(
            {
                "version": 1,
                "provider": "anthropic",
                "model": "good-model",
                "ephemeralSettings": {"base-url": good.base_url, "auth-key": SECRET},
            }
        )
    )
    (tmp_path / "team.json").write_text(
        json.dumps(
            {"version": 1, "type": "loadbalancer", "policy": "roundrobin", "profiles": ["good"]}
        )
    )
    status = main(["chat", "--profile", "team", "--profiles-dir", str(tmp_path), "Hi"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.strip()
    assert SECRET not in out + err


# ------------------------------------------------------------------ lb serve


def test_serve_answers_the_openai_sdk_and_stops_on_sigterm(
    backends: LocalBackends, tmp_path: Path
) -> None:
    import signal

    import openai

    good = backends["good"]
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[gateway]\nport = 0\nno_auth = true\n\n"
        '[groups.team]\nstrategy = "round-robin"\n\n'
        "[[groups.team.backends]]\n"
        'name = "good"\nprovider = "anthropic"\nmodel = "good-model"\n'
        f'base_url = "{good.base_url}"\n'
        f'credential = {{ key = "{SECRET}" }}\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "lbtransports.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("lb serve: listening on http://127.0.0.1:"), line
        url = line.split()[4]
        caller = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = caller.chat.completions.create(
            model="team", messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content
        assert SECRET not in answer.model_dump_json()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err


def test_serve_refuses_no_auth_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[groups.team]\nstrategy = "round-robin"\n[[groups.team.backends]]\n'
        'name = "a"\nprovider = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:9"\n'
    )
    status = main(["serve", "--config", str(config), "--host", "0.0.0.0", "--no-auth"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("lb serve: no_auth: refused on the non-loopback address '0.0.0.0'")
