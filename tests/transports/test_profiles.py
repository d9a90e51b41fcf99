"""Loading a saved profile directory into a ClientConfig (spec/profiles.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lbcore import BackendSpec, ConfigError, Settings
from lbtransports import ClientConfig, ProfileWarning, load_profile
from lbtransports.wire import BackendTarget, CredentialSource, resolve_credential

KEY = "sk-profile-secret-0123456789abcdef"
LB = "team"
POLICY_HINT = 'Must be "roundrobin", "failover", "weighted-round-robin", "least-busy" or "latency".'


def lb_profile(profiles: Any, policy: Any = "failover", **fields: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "type": "loadbalancer",
        "policy": policy,
        "profiles": profiles,
        "provider": "",
        "model": "",
        "modelParams": {},
        "ephemeralSettings": {},
        **fields,
    }


def member(provider: str, model: str, **ephemeral: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "provider": provider,
        "model": model,
        "modelParams": {},
        "ephemeralSettings": ephemeral,
    }


def write(directory: Path, name: str, data: Any) -> Path:
    path = directory / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def chain(error: BaseException | None) -> list[BaseException]:
    """The error and everything it carries along as cause or context."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def assert_no_key(error: BaseException) -> None:
    for link in chain(error):
        assert KEY not in str(link)
        assert KEY not in repr(link)
        assert all(KEY not in repr(arg) for arg in link.args)


def load_error(directory: Path, name: str = LB, **options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_profile(directory, name, **options)
    assert_no_key(caught.value)
    return str(caught.value)


@pytest.fixture
def three(tmp_path: Path) -> Path:
    """A failover balancer over three providers, one credential form each."""
    write(
        tmp_path,
        "fast",
        {
            "version": 1,
            "provider": "openai",
            "model": "gpt-4.1-mini",
            "modelParams": {"top_p": 0.8},
            "ephemeralSettings": {
                "base-url": "  https://llm.example.com/v1 ",
                "auth-key": f" {KEY} ",
                "auth-keyfile": "~/ignored-because-auth-key-wins",
                "temperature": 0.2,
                "streaming": True,
            },
        },
    )
    write(
        tmp_path,
        "claude",
        member("anthropic", "claude-sonnet-4", **{"auth-key-name": "ANTHROPIC_KEY_VAR"}),
    )
    write(
        tmp_path,
        "gemini",
        member(
            "gemini",
            "gemini-2.5-pro",
            **{"auth-key": "  ", "auth-keyfile": "~/.keys/gemini", "base-url": ""},
        ),
    )
    write(
        tmp_path,
        LB,
        lb_profile(
            ["fast", "claude", "gemini"],
            contextLimit=120_000,
            modelParams={"top_k": 40},
            ephemeralSettings={
                "failover_retry_count": 3,
                "timeout_ms": 5000,
                "circuit_breaker_enabled": True,
                "temperature": 0.9,
            },
        ),
    )
    return tmp_path


def test_failover_over_three_providers(three: Path) -> None:
    config = load_profile(three, LB)

    assert isinstance(config, ClientConfig)
    assert config.balancer.strategy == "failover"
    assert config.balancer.profile_name == LB
    assert config.balancer.context_limit == 120_000
    assert config.balancer.settings == Settings(
        failover_retry_count=3, timeout_ms=5000, circuit_breaker_enabled=True
    )
    assert config.balancer.backends == (
        BackendSpec(name="fast", provider="openai", model="gpt-4.1-mini"),
        BackendSpec(name="claude", provider="anthropic", model="claude-sonnet-4"),
        BackendSpec(name="gemini", provider="gemini", model="gemini-2.5-pro"),
    )
    assert config.targets == (
        BackendTarget(
            name="fast",
            provider="openai",
            model="gpt-4.1-mini",
            base_url="https://llm.example.com/v1",
            credential=CredentialSource(key=KEY),
            ephemeral_settings={"temperature": 0.2, "streaming": True},
            model_params={"top_p": 0.8},
        ),
        BackendTarget(
            name="claude",
            provider="anthropic",
            model="claude-sonnet-4",
            credential=CredentialSource(env="ANTHROPIC_KEY_VAR"),
        ),
        BackendTarget(
            name="gemini",
            provider="gemini",
            model="gemini-2.5-pro",
            # Left as written: the wire layer expands ~ when it reads the file.
            credential=CredentialSource(key_file="~/.keys/gemini"),
        ),
    )
    # The load balancer's own settings, routing and request keys alike.
    assert config.settings == {
        "failover_retry_count": 3,
        "timeout_ms": 5000,
        "circuit_breaker_enabled": True,
        "temperature": 0.9,
    }
    assert config.model_params == {"top_k": 40}
    assert config.connect_timeout_ms == 10_000
    assert config.idle_timeout_ms == 300_000
    for target in config.targets:
        assert not {"base-url", "auth-key", "auth-key-name", "auth-keyfile"} & set(
            target.ephemeral_settings
        )
    for shown in (repr(config), str(config), repr(config.targets), repr(config.target("fast"))):
        assert KEY not in shown


def test_each_credential_form_resolves_through_the_wire_layer(three: Path, tmp_path: Path) -> None:
    config = load_profile(three, LB)
    assert resolve_credential(config.target("fast").credential, "fast") == KEY
    assert (
        resolve_credential(
            config.target("claude").credential, "claude", environ={"ANTHROPIC_KEY_VAR": "env-key"}
        )
        == "env-key"
    )
    read: list[Path] = []

    def read_text(path: Path) -> str:
        read.append(path)
        return "file-key\n"

    gemini = config.target("gemini").credential
    assert resolve_credential(gemini, "gemini", read_text=read_text) == "file-key"
    assert read == [Path("~/.keys/gemini").expanduser()]


def test_timeouts_are_passed_through(three: Path) -> None:
    config = load_profile(three, LB, connect_timeout_ms=500, idle_timeout_ms=60_000)
    assert (config.connect_timeout_ms, config.idle_timeout_ms) == (500, 60_000)
    with pytest.raises(ConfigError, match="idle_timeout_ms: must be an integer >= 1"):
        load_profile(three, LB, idle_timeout_ms=0)


def test_directory_may_be_a_string(three: Path) -> None:
    assert load_profile(str(three), LB) == load_profile(three, LB)


def test_roundrobin_maps_to_round_robin_and_may_have_one_member(tmp_path: Path) -> None:
    write(tmp_path, "only", member("openai", "gpt-4.1"))
    write(tmp_path, LB, lb_profile(["only"], policy="roundrobin"))
    config = load_profile(tmp_path, LB)
    assert config.balancer.strategy == "round-robin"
    assert [b.name for b in config.balancer.backends] == ["only"]
    assert config.target("only").credential == CredentialSource()
    assert config.target("only").base_url is None


def test_optional_lb_fields_may_be_left_out(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    write(tmp_path, "b", member("openai", "m"))
    write(
        tmp_path,
        LB,
        {"version": 1, "type": "loadbalancer", "policy": "failover", "profiles": ["a", "b"]},
    )
    config = load_profile(tmp_path, LB)
    assert (config.settings, config.model_params, config.balancer.context_limit) == ({}, {}, None)


_NO = object()


@pytest.mark.parametrize(
    ("context_limit", "ephemeral_limit", "expected"),
    [
        (8000, 4000, 8000),
        (8000.0, _NO, 8000),
        (_NO, 4000, 4000),
        (0, 4000, 4000),
        (-5, 4000, 4000),
        (1.5, 4000, 4000),
        (_NO, 0, None),
        (_NO, -1, None),
        (_NO, "4000", None),
        (_NO, True, None),
        (0, 0, None),
        (_NO, _NO, None),
    ],
)
def test_context_limit_then_ephemeral_context_limit(
    tmp_path: Path, context_limit: object, ephemeral_limit: object, expected: int | None
) -> None:
    write(tmp_path, "a", member("openai", "m"))
    write(tmp_path, "b", member("openai", "m"))
    fields: dict[str, Any] = {"ephemeralSettings": {}}
    if context_limit is not _NO:
        fields["contextLimit"] = context_limit
    if ephemeral_limit is not _NO:
        fields["ephemeralSettings"]["context-limit"] = ephemeral_limit
    write(tmp_path, LB, lb_profile(["a", "b"], **fields))
    assert load_profile(tmp_path, LB).balancer.context_limit == expected


# (fields to change in the load balancer profile, exact message after "<path>: ")
LB_ERRORS = [
    ({"version": 2}, "unsupported profile version 2 (expected 1)"),
    ({"version": "1"}, "unsupported profile version a string (expected 1)"),
    ({"version": True}, "unsupported profile version a boolean (expected 1)"),
    ({"version": None}, "unsupported profile version null (expected 1)"),
    (
        {"type": "standard"},
        f"profile '{LB}' is not a LoadBalancer profile "
        '(type must be "loadbalancer", got "standard")',
    ),
    (
        {"type": None},
        f"profile '{LB}' is not a LoadBalancer profile (type must be \"loadbalancer\", got null)",
    ),
    (
        {"policy": "round-robin"},
        'Invalid policy "round-robin". ' + POLICY_HINT,
    ),
    ({"policy": "Failover"}, 'Invalid policy "Failover". ' + POLICY_HINT),
    ({"policy": 1}, "Invalid policy (a number). " + POLICY_HINT),
    (
        {"profiles": []},
        f"LoadBalancer profile '{LB}' must reference at least one profile (profiles is empty)",
    ),
    (
        {"profiles": "a"},
        f"LoadBalancer profile '{LB}' must reference at least one profile "
        "(profiles must be a list of profile names, got a string)",
    ),
    (
        {"profiles": {"a": 1}},
        f"LoadBalancer profile '{LB}' must reference at least one profile "
        "(profiles must be a list of profile names, got an object)",
    ),
    (
        # JSON has no holes in arrays; null is how a sparse one comes out.
        {"profiles": ["a", None, "b"]},
        f"LoadBalancer profile '{LB}' must reference at least one profile "
        "(profiles[1] must be a non-empty string, got null)",
    ),
    (
        {"profiles": ["a", 7]},
        f"LoadBalancer profile '{LB}' must reference at least one profile "
        "(profiles[1] must be a non-empty string, got a number)",
    ),
    (
        {"profiles": ["a", ""]},
        f"LoadBalancer profile '{LB}' must reference at least one profile "
        "(profiles[1] must be a non-empty string, got an empty one)",
    ),
    (
        {"profiles": ["a", "b", "a"]},
        f"LoadBalancer profile '{LB}' lists profile 'a' more than once; "
        "member names must be unique",
    ),
    ({"contextLimit": "8000"}, "contextLimit must be a number, got a string"),
    ({"contextLimit": None}, "contextLimit must be a number, got null"),
    ({"provider": 3}, "provider must be a string, got a number"),
    ({"model": None}, "model must be a string, got null"),
    ({"modelParams": []}, "modelParams must be a JSON object, got an array"),
    ({"modelParams": KEY}, "modelParams must be a JSON object, got a string"),
    ({"ephemeralSettings": None}, "ephemeralSettings must be a JSON object, got null"),
    ({"ephemeralSettings": [KEY]}, "ephemeralSettings must be a JSON object, got an array"),
]


@pytest.mark.parametrize(("fields", "message"), LB_ERRORS)
def test_load_balancer_profile_errors(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    write(tmp_path, "a", member("openai", "m", **{"auth-key": KEY}))
    write(tmp_path, "b", member("openai", "m"))
    path = write(tmp_path, LB, {**lb_profile(["a", "b"]), **fields})
    assert load_error(tmp_path) == f"{path}: {message}"


@pytest.mark.parametrize("field", ["version", "type", "policy", "profiles"])
def test_required_lb_fields(tmp_path: Path, field: str) -> None:
    data = lb_profile(["a", "b"])
    del data[field]
    path = write(tmp_path, LB, data)
    message = load_error(tmp_path)
    assert message.startswith(f"{path}: ")
    assert {
        "version": "unsupported profile version missing",
        "type": "got nothing",
        "policy": "Invalid policy (missing).",
        "profiles": "got nothing",
    }[field] in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"version": 1, "ephemeralSettings": {"auth-key": "' + KEY + '"},', "invalid JSON ("),
        ('{"auth-key": "' + KEY + '" "version": 1}', "invalid JSON (Expecting ',' delimiter"),
        ('{"version": NaN}', "invalid JSON (NaN is not a JSON value)"),
        ("", "invalid JSON (Expecting value at line 1 column 1)"),
        ("[1]", "must hold a JSON object, got an array"),
        ("null", "must hold a JSON object, got null"),
        (json.dumps(KEY), "must hold a JSON object, got a string"),
    ],
)
def test_unreadable_lb_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, LB, text)
    message = load_error(tmp_path)
    assert message.startswith(f"{path}: {problem}")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / f"{LB}.json"
    path.write_bytes(b'{"auth-key": "' + KEY.encode() + b'\xff"}')
    assert load_error(tmp_path) == f"{path}: is not UTF-8 text"


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    path = tmp_path / f"{LB}.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(lb_profile(["a"], "roundrobin")).encode())
    assert load_profile(tmp_path, LB).balancer.backends[0].name == "a"


def test_missing_lb_profile(tmp_path: Path) -> None:
    assert load_error(tmp_path) == f"{tmp_path / 'team.json'}: profile 'team' does not exist"


def test_a_directory_where_the_file_should_be(tmp_path: Path) -> None:
    (tmp_path / f"{LB}.json").mkdir()
    assert load_error(tmp_path).startswith(f"{tmp_path / 'team.json'}: cannot read (")


# --- members ---------------------------------------------------------------------------------


def test_nested_load_balancer_member(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    write(tmp_path, "b", member("anthropic", "c"))
    write(tmp_path, "inner", lb_profile(["b", "a"], "roundrobin"))
    write(tmp_path, LB, lb_profile(["a", "inner"]))
    config = load_profile(tmp_path, LB)
    spec = config.balancer.backends[1]
    assert (spec.name, spec.provider, spec.model) == ("inner", "load-balancer", "c")
    inner = config.nested["inner"]
    assert inner.balancer.strategy == "round-robin"
    assert [b.name for b in inner.balancer.backends] == ["b", "a"]


def test_nested_load_balancer_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    write(tmp_path, "inner", lb_profile(["a", LB]))
    write(tmp_path, LB, lb_profile(["a", "inner"]))
    assert load_error(tmp_path).endswith(
        "nested load balancer profiles form a cycle: 'team' -> 'inner' -> 'team'"
    )


def test_non_existent_member(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m", **{"auth-key": KEY}))
    path = write(tmp_path, LB, lb_profile(["a", "ghost", "also-gone"]))
    assert load_error(tmp_path) == (
        f"{path}: LoadBalancer profile 'team' references non-existent profile 'ghost' "
        f"({tmp_path / 'ghost.json'} not found)"
    )


_MEMBER_ERRORS = [
    ({"version": 3}, "unsupported profile version 3 (expected 1)"),
    ({"provider": ""}, "provider must be a non-empty string, got a blank string"),
    ({"provider": None}, "provider must be a non-empty string, got null"),
    ({"model": 4}, "model must be a string, got a number"),
    ({"modelParams": "x"}, "modelParams must be a JSON object, got a string"),
    ({"ephemeralSettings": [1]}, "ephemeralSettings must be a JSON object, got an array"),
    (
        {"ephemeralSettings": {"auth-key": [KEY]}},
        "ephemeralSettings.auth-key must be a string, got an array",
    ),
    (
        {"ephemeralSettings": {"auth-key-name": 12}},
        "ephemeralSettings.auth-key-name must be a string, got a number",
    ),
    (
        {"ephemeralSettings": {"auth-keyfile": True}},
        "ephemeralSettings.auth-keyfile must be a string, got a boolean",
    ),
    (
        {"ephemeralSettings": {"base-url": {"url": "https://x"}}},
        "ephemeralSettings.base-url must be a string, got an object",
    ),
    (
        {"ephemeralSettings": {"base-url": "llm.example.com"}},
        "ephemeralSettings.base-url: must be an http:// or https:// URL with a host, "
        "got 'llm.example.com'",
    ),
    (
        {"ephemeralSettings": {"base-url": f"https://user:{KEY}@llm.example.com"}},
        "ephemeralSettings.base-url: must not carry a user or password; use credential instead",
    ),
]


@pytest.mark.parametrize(("fields", "message"), _MEMBER_ERRORS)
def test_member_profile_errors(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    write(tmp_path, "a", member("openai", "m", **{"auth-key": KEY}))
    bad = {**member("openai", "m", **{"auth-key": KEY}), **fields}
    path = write(tmp_path, "b", bad)
    write(tmp_path, LB, lb_profile(["a", "b"]))
    assert load_error(tmp_path) == f"{path}: {message}"


def test_member_missing_model(tmp_path: Path) -> None:
    data = member("openai", "m")
    del data["model"]
    path = write(tmp_path, "a", data)
    write(tmp_path, LB, lb_profile(["a"], "roundrobin"))
    assert load_error(tmp_path) == f"{path}: model must be a string, got nothing"


def test_member_with_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, "a", '{"ephemeralSettings": {"auth-key": "' + KEY + '"}')
    write(tmp_path, LB, lb_profile(["a"], "roundrobin"))
    assert load_error(tmp_path).startswith(f"{path}: invalid JSON (")


def test_member_optional_objects_may_be_left_out(tmp_path: Path) -> None:
    write(tmp_path, "a", {"version": 1, "provider": "openai", "model": "m"})
    write(tmp_path, LB, lb_profile(["a"], "roundrobin"))
    target = load_profile(tmp_path, LB).target("a")
    assert (target.ephemeral_settings, target.model_params) == ({}, {})


def test_member_type_standard_is_a_member(tmp_path: Path) -> None:
    write(tmp_path, "a", {**member("openai", "m"), "type": "standard"})
    write(tmp_path, LB, lb_profile(["a"], "roundrobin"))
    assert load_profile(tmp_path, LB).target("a").provider == "openai"


def test_failover_with_one_member_keeps_the_core_rule(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    path = write(tmp_path, LB, lb_profile(["a"]))
    assert load_error(tmp_path) == (
        f"{path}: Failover strategy requires at least 2 backends (minimum 2 backends for failover)"
    )


# --- names that could leave the directory ----------------------------------------------------


BAD_NAMES = [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("../team", "must not contain a path separator"),
    ("sub/team", "must not contain a path separator"),
    ("sub\\team", "must not contain a path separator"),
    ("/etc/team", "must not contain a path separator"),
    ("..", "must not start with '.'"),
    (".team", "must not start with '.'"),
    ("te\nam", "must not contain control characters"),
    ("te\x00am", "must not contain control characters"),
]


@pytest.mark.parametrize(("name", "rule"), BAD_NAMES)
def test_profile_names_stay_inside_the_directory(tmp_path: Path, name: str, rule: str) -> None:
    inside = tmp_path / "profiles"
    inside.mkdir()
    # A valid profile just outside: no name may reach it.
    write(tmp_path, "team", lb_profile(["a"], "roundrobin"))
    write(tmp_path, "a", member("openai", "m"))
    message = load_error(inside, name)
    assert message.startswith("profile name '")
    assert message.endswith(f": {rule}")


@pytest.mark.parametrize(("name", "rule"), [n for n in BAD_NAMES if n[0]])
def test_member_names_stay_inside_the_directory(tmp_path: Path, name: str, rule: str) -> None:
    inside = tmp_path / "profiles"
    inside.mkdir()
    write(tmp_path, "team", member("openai", "m"))
    write(inside, "ok", member("openai", "m"))
    path = write(inside, LB, lb_profile(["ok", name], "roundrobin"))
    message = load_error(inside)
    assert message.startswith(f"{path}: profiles[1] '")
    assert message.endswith(f": profile name {rule}")


def test_profile_name_must_be_a_string(tmp_path: Path) -> None:
    assert load_error(tmp_path, 3) == "profile name: must be a string, got a number"  # type: ignore[arg-type]


# --- routing settings in the load balancer profile --------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"timeout-ms": 5000},
            "ephemeralSettings.timeout-ms: unknown routing setting; did you mean 'timeout_ms'?",
        ),
        (
            {"failover_retry_cout": 3},
            "ephemeralSettings.failover_retry_cout: unknown routing setting; "
            "did you mean 'failover_retry_count'?",
        ),
        (
            {"lb_circuit_breaker_threshold": 3},
            "ephemeralSettings.lb_circuit_breaker_threshold: unknown routing setting",
        ),
        (
            {"failover_retry_count": "3"},
            "ephemeralSettings.failover_retry_count: must be an integer >= 1, got '3'",
        ),
    ],
)
def test_routing_setting_errors_name_the_file_and_key(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    write(tmp_path, "a", member("openai", "m"))
    write(tmp_path, "b", member("openai", "m"))
    path = write(
        tmp_path, LB, lb_profile(["a", "b"], ephemeralSettings={"auth-key": KEY, **settings})
    )
    assert load_error(tmp_path).startswith(f"{path}: {message}")


def test_request_settings_pass_the_routing_check(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    lb_settings = {"temperature": 0.3, "maxTokens": 100, "context-limit": 9000, "streaming": False}
    write(tmp_path, LB, lb_profile(["a"], "roundrobin", ephemeralSettings=lb_settings))
    config = load_profile(tmp_path, LB)
    assert config.settings == lb_settings
    assert config.balancer.settings == Settings()


# --- missing="warn" (the reference's issue #3574) --------------------------------------------


def test_warn_skips_missing_members_and_keeps_order(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path, name, member("openai", f"model-{name}"))
    write(tmp_path, LB, lb_profile(["ghost", "a", "b", "gone", "c"]))
    with pytest.warns(ProfileWarning) as record:
        config = load_profile(tmp_path, LB, missing="warn")
    assert [b.name for b in config.balancer.backends] == ["a", "b", "c"]
    assert [t.name for t in config.targets] == ["a", "b", "c"]
    assert [str(w.message) for w in record] == [
        "LoadBalancer profile 'team' references non-existent profile 'ghost'; going on without "
        f"it ({tmp_path / 'ghost.json'} not found)",
        "LoadBalancer profile 'team' references non-existent profile 'gone'; going on without "
        f"it ({tmp_path / 'gone.json'} not found)",
    ]
    # Attributed to the caller, not to the loader.
    assert {w.filename for w in record} == {__file__}


def test_warn_with_nothing_missing_warns_nothing(three: Path) -> None:
    assert load_profile(three, LB, missing="warn") == load_profile(three, LB)


def test_warn_when_no_member_resolves(tmp_path: Path) -> None:
    path = write(tmp_path, LB, lb_profile(["ghost", "gone"]))
    # No warning either: filterwarnings=error would turn one into the raised exception.
    assert load_error(tmp_path, missing="warn") == (
        f"{path}: LoadBalancer profile 'team' has no member profile that exists "
        "(missing: 'ghost', 'gone')"
    )


def test_warn_failover_left_with_one_member(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    path = write(tmp_path, LB, lb_profile(["a", "ghost", "gone"]))
    assert load_error(tmp_path, missing="warn") == (
        f"{path}: Failover strategy requires at least 2 backends (minimum 2 backends for "
        "failover); LoadBalancer profile 'team' has only 'a', missing: 'ghost', 'gone'"
    )


def test_warn_roundrobin_left_with_one_member(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    write(tmp_path, LB, lb_profile(["ghost", "a"], "roundrobin"))
    with pytest.warns(ProfileWarning, match="non-existent profile 'ghost'"):
        config = load_profile(tmp_path, LB, missing="warn")
    assert [b.name for b in config.balancer.backends] == ["a"]


def test_warn_still_refuses_a_broken_member(tmp_path: Path) -> None:
    write(tmp_path, "a", member("openai", "m"))
    write(tmp_path, "broken", {**member("openai", "m"), "version": 3})
    write(tmp_path, LB, lb_profile(["a", "ghost", "broken"]))
    assert "unsupported profile version 3" in load_error(tmp_path, missing="warn")


def test_missing_must_be_error_or_warn(three: Path) -> None:
    with pytest.raises(ValueError, match="missing must be 'error' or 'warn'"):
        load_profile(three, LB, missing="ignore")  # type: ignore[arg-type]


# ------------------------------------------------- lbcore's own strategies


@pytest.mark.parametrize("policy", ["weighted-round-robin", "least-busy", "latency"])
def test_lbcore_strategies_are_policies_too(tmp_path: Path, policy: str) -> None:
    write(tmp_path, "a", member("openai", "m"))
    write(tmp_path, LB, lb_profile(["a"], policy))
    assert load_profile(tmp_path, LB).balancer.strategy == policy


def test_weights_go_to_the_named_members(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path, name, member("openai", "m"))
    weights = {"a": 3, "c": 0.0}
    write(tmp_path, LB, lb_profile(["a", "b", "c"], "weighted-round-robin", weights=weights))
    specs = load_profile(tmp_path, LB).balancer.backends
    assert [s.weight for s in specs] == [3, 1, 0]


def test_weights_reach_a_nested_load_balancer_member(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write(tmp_path, name, member("openai", "m"))
    write(tmp_path, "inner", lb_profile(["b", "a"], "failover"))
    write(
        tmp_path,
        LB,
        lb_profile(["a", "inner"], "weighted-round-robin", weights={"a": 2, "inner": 0}),
    )
    specs = load_profile(tmp_path, LB).balancer.backends
    assert [(s.name, s.weight) for s in specs] == [("a", 2), ("inner", 0)]
    path = write(tmp_path, LB, lb_profile(["a", "inner"], "failover", weights={"inner": 5}))
    assert load_error(tmp_path).startswith(f'{path}: Backend "inner": weight is read only by')


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"z": 1}, "weights.z: not a member of this load balancer"),
        ({"a": -1}, "weights.a must be a whole number >= 0, got -1"),
        ({"a": 1.5}, "weights.a must be a whole number >= 0, got 1.5"),
        ({"a": "2"}, "weights.a must be a whole number >= 0, got a string"),
        ({"a": True}, "weights.a must be a whole number >= 0, got a boolean"),
        ([1], "weights must be a JSON object, got an array"),
    ],
)
def test_weight_errors(tmp_path: Path, weights: Any, message: str) -> None:
    for name in ("a", "b"):
        write(tmp_path, name, member("openai", "m"))
    path = write(tmp_path, LB, lb_profile(["a", "b"], "weighted-round-robin", weights=weights))
    assert load_error(tmp_path) == f"{path}: {message}"


def test_weights_under_another_policy_are_the_core_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write(tmp_path, name, member("openai", "m"))
    path = write(tmp_path, LB, lb_profile(["a", "b"], "failover", weights={"b": 2}))
    assert load_error(tmp_path) == (
        f'{path}: Backend "b": weight is read only by "weighted-round-robin", not by "failover"; '
        "leave it at 1"
    )


def test_client_config_mapping_reads_strategy_and_weight() -> None:
    config = ClientConfig.from_mapping(
        {
            "strategy": "weighted-round-robin",
            "backends": [
                {"name": "a", "provider": "openai", "weight": 4},
                {"name": "b", "provider": "openai", "weight": 0},
            ],
        }
    )
    assert [b.weight for b in config.balancer.backends] == [4, 0]
