"""The README's examples must run as written.

The examples that talk to real providers run against local backends speaking
the same formats: the providers' default URLs point at them, the API key
variables hold test keys, and ``~`` is a temporary home holding a saved
profile directory. The blocks run in order in one namespace, as a reader
would paste them.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtransports.testing import LocalBackends, Stream
from lbtransports.wire import anthropic, gemini, openai

README = Path(__file__).resolve().parents[1] / "README.md"

PROVIDERS = {"gpt": openai, "claude": anthropic, "gemini": gemini}
KEYS = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "sk-g"}


def _write_profiles(home: Path, backends: LocalBackends) -> None:
    folder = home / ".llxprt" / "profiles"
    folder.mkdir(parents=True)
    for name in ("gpt", "claude"):
        member = {
            "version": 1,
            "provider": backends[name].provider,
            "model": f"{name}-model",
            "modelParams": {},
            "ephemeralSettings": {"base-url": backends[name].base_url, "auth-key": "sk-test"},
        }
        (folder / f"{name}.json").write_text(json.dumps(member))
    team = {
        "version": 1,
        "type": "loadbalancer",
        "policy": "failover",
        "profiles": ["gpt", "claude"],
        "provider": "",
        "model": "",
        "modelParams": {},
        "ephemeralSettings": {"failover_retry_count": 2},
    }
    (folder / "team.json").write_text(json.dumps(team))


@pytest.fixture
def providers_nearby(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackends]:
    backends = LocalBackends()
    backends.add("gpt", "openai", default=Stream(3))
    backends.add("claude", "anthropic", default=Stream(3))
    backends.add("gemini", "gemini", default=Stream(3))
    with backends:
        for name, module in PROVIDERS.items():
            monkeypatch.setattr(module, "DEFAULT_BASE_URL", backends[name].base_url)
        for variable, key in KEYS.items():
            monkeypatch.setenv(variable, key)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.chdir(tmp_path)
        _write_profiles(tmp_path, backends)
        yield backends


@contextlib.contextmanager
def gateway_over(backends: LocalBackends) -> Iterator[int]:
    """The README's gateway example: group "team" behind the key "my-gateway-key"."""
    from lbtransports.gateway import config_from_mapping, hash_key, serve_in_thread

    team = {
        "strategy": "failover",
        "backends": [
            {
                "name": name,
                "provider": backends[name].provider.value,
                "model": f"{name}-model",
                "base_url": backends[name].base_url,
                "credential": {"key": "sk-test"},
            }
            for name in ("gpt", "claude")
        ],
    }
    config = config_from_mapping(
        {"gateway": {"port": 0, "keys": [hash_key("my-gateway-key")]}, "groups": {"team": team}},
        environ={},
    )
    with serve_in_thread(config) as gateway:
        yield gateway.port


def test_readme_python_examples_run(
    providers_nearby: LocalBackends, capsys: pytest.CaptureFixture[str]
) -> None:
    with gateway_over(providers_nearby) as port:
        run_readme_blocks(providers_nearby, capsys, port)


def run_readme_blocks(
    providers_nearby: LocalBackends, capsys: pytest.CaptureFixture[str], port: int
) -> None:
    text = README.read_text().replace("http://127.0.0.1:8080/", f"http://127.0.0.1:{port}/")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 6, "the README shows the clients, profiles, errors and the core"
    namespace: dict[str, object] = {"__name__": "readme_example"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "gpt-0 gpt-1 gpt-2 " in printed
    assert "steady 'steady-0 steady-1 '" in printed  # the local backends example
    # The strategies example: nginx's smooth order, the drained backend never used.
    assert "['big', 'big', 'small', 'big', 'tiny', 'big', 'big']" in printed
    # Every request reached a real server, with the key from the environment.
    (first, *_) = providers_nearby["gpt"].received
    assert first.header("authorization") == "Bearer sk-o"
    assert (Path.cwd() / "trace.jsonl").read_bytes().startswith(b'{"type":"TraceHeader"')
