"""The gateway's upstream over HTTPS: a group's ``ca_file`` reaches the backends' connections."""

from __future__ import annotations

import ssl
from pathlib import Path

import openai
import pytest

from lbtransports.testing import LocalBackends, Stream

from .harness import KEY, base_url, group, make_config, serving

TLS = Path(__file__).parent.parent / "transports" / "tls"


def test_an_https_backend_behind_a_private_authority_serves_sdk_callers() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    backends = LocalBackends(tls=context)
    backends.add("oa", "openai", default=Stream(3))
    with backends:
        trusted = group(backends["oa"], strategy="round-robin", ca_file=str(TLS / "ca.pem"))
        untrusted = group(backends["oa"], strategy="round-robin")
        config = make_config({"trusted": trusted, "untrusted": untrusted})
        with (
            serving(config) as gateway,
            openai.OpenAI(
                base_url=base_url(gateway), api_key=KEY, max_retries=0, timeout=10
            ) as client,
        ):
            whole = client.chat.completions.create(
                model="trusted", messages=[{"role": "user", "content": "hi"}]
            )
            streamed = client.chat.completions.create(
                model="trusted", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            with pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(
                    model="untrusted", messages=[{"role": "user", "content": "hi"}]
                )
        requests_seen = backends["oa"].requests_total
    assert whole.choices[0].message.content == "oa-0 oa-1 oa-2 "
    assert text == "oa-0 oa-1 oa-2 "
    assert refused.value.status_code == 502
    assert "TLS handshake failed" in str(refused.value.message)
    assert requests_seen == 2
