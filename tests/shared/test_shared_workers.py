"""``lb serve --workers N --shared URL``: N gateway processes on one port, one view."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from lbtransports.testing import Fail, LocalBackends, Stream

from .conftest import RedisServer, _free_port


def _config(path: Path, backends: LocalBackends) -> None:
    lines = [
        "[groups.team]",
        'strategy = "failover"',
        'trace = "team.jsonl"',
        "settings = { failover_retry_count = 1, circuit_breaker_enabled = true, "
        "circuit_breaker_failure_threshold = 1 }",
    ]
    for backend in backends:
        lines += ["[[groups.team.backends]]", f'name = "{backend.name}"', 'provider = "openai"']
        lines += ['model = "m"', f'base_url = "{backend.base_url}"']
    path.write_text("\n".join(lines) + "\n")


def test_workers_share_one_port_and_one_breaker(redis_server: RedisServer, tmp_path: Path) -> None:
    backends = LocalBackends()
    bad = backends.add("bad", "openai", default=Fail(503))
    backends.add("good", "openai", default=Stream(2))
    with backends:
        config = tmp_path / "gateway.toml"
        _config(config, backends)
        port = _free_port()
        command = [sys.executable, "-m", "lbtransports.cli", "serve", "--config", str(config)]
        command += ["--port", str(port), "--no-auth", "--workers", "2"]
        command += ["--shared", redis_server.url, "--shared-prefix", "workers"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        parent = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert parent.stdout is not None
            lines = sorted(parent.stdout.readline().strip() for _ in range(2))
            assert [line.rsplit(" ", 2)[-1] for line in lines] == ["0)", "1)"]
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = {"model": "team", "messages": [{"role": "user", "content": "Hi"}]}
            served = []
            for _ in range(20):  # fresh connections: the kernel spreads them over the workers
                with requests.Session() as session:
                    answer = session.post(url, json=body, timeout=10)
                assert answer.status_code == 200
                served.append(answer.headers["x-lb-backend"])
                time.sleep(0.01)
            assert set(served) == {"good"}
            # One worker tripped bad's breaker; the other heard of it and never tried bad.
            assert len(bad.received) == 1
        finally:
            if parent.poll() is None:
                os.kill(parent.pid, signal.SIGTERM)
            parent.wait(30)
            if parent.stdout is not None:
                parent.stdout.close()
        # The first worker stopped the others: nothing listens on the port any more
        # (SO_REUSEADDR: the connections' TIME_WAIT does not count).
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    traces = sorted(p.name for p in tmp_path.glob("team*.jsonl"))
    assert traces == ["team-w1.jsonl", "team.jsonl"]
    for name in traces:  # both workers served (20 connections, spread by the kernel)
        assert b'"RequestStarted"' in (tmp_path / name).read_bytes()
