"""Running the gateway: its metrics text, its trace file, its connection limit,
draining on shutdown, and trio underneath. Callers are the official SDKs, or raw
sockets where the point is what the server does with a connection."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from lbcore import decode_trace, explain, verify_trace
from lbtransports.gateway import Gateway, serve_in_thread
from lbtransports.testing import Fail, Hang, LocalBackends, Stream

from .harness import KEY, base_url, group, make_config, serving

HELLO = [{"role": "user", "content": "hello"}]


def oai(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url(gateway), api_key=KEY, max_retries=0, timeout=10)


@pytest.fixture
def backends() -> Iterator[LocalBackends]:
    backends = LocalBackends()
    backends.add("down", "openai", default=Fail(503))
    backends.add("up", "openai")
    backends.add("slow", "openai", default=Stream(10, delay_ms=100))
    backends.add("hangs", "openai", default=Hang())
    with backends:
        yield backends


# ------------------------------------------------------------------ /metrics

_SAMPLE = re.compile(r'^([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf)$')


def _parse_exposition(text: str) -> dict[str, dict[str, float]]:
    """A strict reading of the text format: every sample belongs to a family
    declared by HELP then TYPE just before it, values are numbers, the text
    ends with a newline. Returns family -> {sample name + labels: value}."""
    assert text.endswith("\n")
    families: dict[str, dict[str, float]] = {}
    kinds: dict[str, str] = {}
    current: str | None = None
    lines = text[:-1].split("\n")
    for index, line in enumerate(lines):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in families, f"{name} declared twice"
            assert lines[index + 1].startswith(f"# TYPE {name} "), line
            families[name], current = {}, name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and kind in {"counter", "gauge", "histogram"}, line
            kinds[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match is not None, f"not a sample line: {line!r}"
            sample = match.group(1)
            assert current is not None
            allowed = {current}
            if kinds[current] == "histogram":
                allowed |= {f"{current}_bucket", f"{current}_sum", f"{current}_count"}
            assert sample in allowed, f"{sample} outside its family {current}"
            families[current][sample + (match.group(2) or "")] = float(match.group(3))
    return families


def test_metrics_are_valid_exposition_text_that_adds_up(backends: LocalBackends) -> None:
    config = make_config({"m": group(backends["down"], backends["up"])})
    with serving(config) as gateway, oai(gateway) as client:
        for _ in range(3):
            client.chat.completions.create(model="m", messages=HELLO)
        response = httpx.get(
            base_url(gateway, "/metrics"), headers={"authorization": f"Bearer {KEY}"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = _parse_exposition(response.text)
    labels = '{model="m",backend="%s"}'
    requests = families["lb_backend_requests_total"]
    # The first request tries down twice (the default retry count), then up serves
    # it; failover then sticks to up for the next two.
    assert requests[f"lb_backend_requests_total{labels % 'down'}"] == 2
    assert requests[f"lb_backend_requests_total{labels % 'up'}"] == 3
    assert families["lb_backend_failures_total"][f"lb_backend_failures_total{labels % 'down'}"] == 1
    histogram = families["lb_backend_latency_seconds"]
    buckets = [
        value
        for key, value in histogram.items()
        if key.startswith('lb_backend_latency_seconds_bucket{model="m",backend="up"')
    ]
    assert buckets == sorted(buckets), "buckets must be cumulative"
    count = histogram['lb_backend_latency_seconds_count{model="m",backend="up"}']
    assert buckets[-1] == count == 3  # the +Inf bucket holds every observation
    assert families["lb_gateway_open_connections"]["lb_gateway_open_connections"] >= 0


def _scrape(gateway: Gateway) -> dict[str, dict[str, float]]:
    response = httpx.get(base_url(gateway, "/metrics"), headers={"authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    return _parse_exposition(response.text)


def _in_flight_becomes(gateway: Gateway, backend: str, value: float) -> None:
    key = f'lb_backend_in_flight{{model="m",backend="{backend}"}}'
    deadline = time.monotonic() + 5
    while (seen := _scrape(gateway)["lb_backend_in_flight"][key]) != value:
        assert time.monotonic() < deadline, f"{key} stayed {seen}, expected {value}"
        time.sleep(0.02)


def test_in_flight_counts_attempts_at_each_backend_from_the_core(
    backends: LocalBackends,
) -> None:
    # A whole (non-streamed) request to a backend that never answers is in flight
    # there from the moment it is sent, before any chunk; it stops counting once
    # the caller leaves. Each backend of the group has its own gauge.
    config = make_config({"m": group(backends["hangs"], backends["up"])})
    with serving(config) as gateway:
        left = threading.Event()

        def call() -> None:
            with openai.OpenAI(
                base_url=base_url(gateway), api_key=KEY, max_retries=0, timeout=1.5
            ) as client:
                with pytest.raises(openai.APITimeoutError):
                    client.chat.completions.create(model="m", messages=HELLO)
            left.set()

        caller = threading.Thread(target=call)
        caller.start()
        try:
            _in_flight_becomes(gateway, "hangs", 1)
            assert (
                _scrape(gateway)["lb_backend_in_flight"][
                    'lb_backend_in_flight{model="m",backend="up"}'
                ]
                == 0
            )
        finally:
            caller.join(10)
        assert left.is_set()
        _in_flight_becomes(gateway, "hangs", 0)


# ------------------------------------------------------------------ the trace file


def test_the_trace_file_replays_and_explains_where_each_request_went(
    backends: LocalBackends, tmp_path: Path
) -> None:
    trace = tmp_path / "m.jsonl"
    config = make_config({"m": group(backends["down"], backends["up"], trace=str(trace))})
    with serving(config) as gateway:
        with oai(gateway) as client:
            raw = client.chat.completions.with_raw_response.create(model="m", messages=HELLO)
        assert raw.headers["x-lb-backend"] == "up"
    data = trace.read_bytes()
    assert verify_trace(data) is None
    header, steps = decode_trace(data)
    story = explain(header, steps)
    assert "COMPLETED on up" in story and "fail over down -> up" in story
    assert b"sk-" not in data and KEY.encode() not in data


# ------------------------------------------------------------------ connections


def test_connections_beyond_the_limit_get_503_and_a_close(backends: LocalBackends) -> None:
    config = make_config({"m": group(backends["up"], strategy="round-robin")}, max_connections=2)
    with serving(config) as gateway:
        assert gateway.port is not None
        address = ("127.0.0.1", gateway.port)
        held = [socket.create_connection(address, timeout=5) for _ in range(2)]
        try:
            time.sleep(0.2)  # both are accepted and counted by now
            with socket.create_connection(address, timeout=5) as third:
                answer = b""
                while chunk := third.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"too many connections" in answer
        finally:
            for sock in held:
                sock.close()
        # Once they are gone, callers are served again.
        deadline = time.monotonic() + 3
        while True:
            try:
                with oai(gateway) as client:
                    client.chat.completions.create(model="m", messages=HELLO)
                break
            except openai.APIStatusError:
                assert time.monotonic() < deadline
                time.sleep(0.05)


def _stream_in_thread(
    gateway: Gateway, texts: list[str], errors: list[BaseException]
) -> threading.Thread:
    first = threading.Event()

    def read() -> None:
        try:
            with oai(gateway) as client:
                stream = client.chat.completions.create(model="m", messages=HELLO, stream=True)
                for chunk in stream:
                    if chunk.choices:
                        texts.append(chunk.choices[0].delta.content or "")
                    first.set()
        except BaseException as error:  # reported to the test
            errors.append(error)
        finally:
            first.set()

    thread = threading.Thread(target=read)
    thread.start()
    assert first.wait(5)
    return thread


def test_shutdown_lets_a_stream_in_flight_finish_then_refuses(backends: LocalBackends) -> None:
    config = make_config({"m": group(backends["slow"], strategy="round-robin")})
    texts: list[str] = []
    errors: list[BaseException] = []
    with serving(config) as gateway:
        port = gateway.port
        reader = _stream_in_thread(gateway, texts, errors)
        # Leaving the block shuts the gateway down while about 0.9 s of the answer remain.
    reader.join(10)
    assert not reader.is_alive() and errors == []
    assert "".join(texts) == "".join(f"slow-{n} " for n in range(10))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # type: ignore[arg-type]


def test_shutdown_cancels_what_outlives_the_grace_period(backends: LocalBackends) -> None:
    config = make_config({"m": group(backends["slow"], strategy="round-robin")}, grace_period_s=0.2)
    texts: list[str] = []
    errors: list[BaseException] = []
    with serving(config) as gateway:
        reader = _stream_in_thread(gateway, texts, errors)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3  # not the 0.9 s the answer needs, plus slack
    reader.join(10)
    assert not reader.is_alive()
    # Cut short: the caller never sees a complete answer as a clean finish.
    assert len(texts) < 10
    assert errors, "a cut answer must raise in the caller, not end quietly"
    deadline = time.monotonic() + 3
    while backends["slow"].open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backends["slow"].open_connections == 0


# ------------------------------------------------------------------ trio


def test_the_gateway_serves_on_trio(backends: LocalBackends) -> None:
    config = make_config({"m": group(backends["down"], backends["up"])})
    with serve_in_thread(config, backend="trio") as gateway:
        with oai(gateway) as client:
            stream = client.chat.completions.create(model="m", messages=HELLO, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert stream.response.headers["x-lb-backend"] == "up"
    assert text == "up-0 up-1 up-2 "
