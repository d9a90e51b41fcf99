"""Two gateway processes' worth of gateways sharing state (``lb serve --shared``)."""

from __future__ import annotations

import time

import pytest
import requests

from lbcore import ConfigError
from lbtransports.gateway import share_groups
from lbtransports.testing import Fail, LocalBackends, Stream
from tests.gateway.harness import KEY, base_url, group, make_config, serving

from .conftest import RedisServer

SETTINGS = {
    "failover_retry_count": 1,
    "circuit_breaker_enabled": True,
    "circuit_breaker_failure_threshold": 1,
    "circuit_breaker_recovery_timeout_ms": 60_000,
}


def _ask(port_url: str) -> requests.Response:
    return requests.post(
        f"{port_url}/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "team", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=10,
    )


def test_two_gateways_share_a_breaker(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_TEST_BACKEND_KEY", "sk-test-123456")
    backends = LocalBackends()
    bad = backends.add("bad", "openai", default=Fail(503))
    good = backends.add("good", "openai", default=Stream(2))
    with backends:
        config = make_config({"team": group(bad, good, settings=SETTINGS)})
        config = share_groups(config, redis_server.url, "gw")
        assert config.groups[0].client.shared_state is not None
        assert config.groups[0].client.shared_state.prefix == "gw:team"
        with serving(config) as first, serving(config) as second:
            assert _ask(base_url(first)).headers["x-lb-backend"] == "good"
            assert len(bad.received) == 1
            time.sleep(0.1)  # the second gateway hears of it within milliseconds
            for _ in range(3):
                assert _ask(base_url(second)).headers["x-lb-backend"] == "good"
            assert len(bad.received) == 1  # the second gateway never tried bad


def test_a_group_name_that_cannot_be_a_prefix_is_refused(redis_server: RedisServer) -> None:
    backends = LocalBackends()
    only = backends.add("only", "openai", default=Stream(1))
    other = backends.add("other", "openai", default=Stream(1))
    with backends:
        config = make_config({"my team": group(only, other)})
        with pytest.raises(ConfigError, match="shared_prefix"):
            share_groups(config, redis_server.url, "gw")
