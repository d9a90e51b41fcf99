"""Config validation: every rule, its exact message, and the order rules are checked in.

Messages are asserted verbatim because callers (and the reference's tests)
match on them; a reworded message is a visible change, not a refactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lbcore import BackendSpec, Balancer, BalancerConfig, ConfigError, Settings

A = BackendSpec(name="a", provider="openai")
B = BackendSpec(name="b", provider="anthropic")

STRATEGY_HINT = (
    'Supported: "round-robin", "failover", "weighted-round-robin", "least-busy", "latency".'
)


def _message(build: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as caught:
        build()
    return str(caught.value)


def _config(**overrides: Any) -> BalancerConfig:
    fields: dict[str, Any] = {"strategy": "failover", "backends": (A, B)}
    fields.update(overrides)
    return BalancerConfig(**fields)


# --------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"backends": ()}, "Balancer requires at least one backend in configuration"),
        ({"backends": []}, "Balancer requires at least one backend in configuration"),
        # The backend rule is checked before the strategy, as in the reference.
        (
            {"backends": (), "strategy": "bogus"},
            "Balancer requires at least one backend in configuration",
        ),
        ({"strategy": "bogus"}, f'Invalid strategy "bogus". {STRATEGY_HINT}'),
        ({"strategy": ""}, f'Invalid strategy "". {STRATEGY_HINT}'),
        ({"strategy": "Failover"}, f'Invalid strategy "Failover". {STRATEGY_HINT}'),
        ({"strategy": "roundrobin"}, f'Invalid strategy "roundrobin". {STRATEGY_HINT}'),
        ({"strategy": "x" * 60}, f'Invalid strategy "{"x" * 50}". {STRATEGY_HINT}'),
        ({"strategy": "a\r\nb\tc"}, f'Invalid strategy "a  b c". {STRATEGY_HINT}'),
        # The cut comes first: a control character past 50 never shows.
        ({"strategy": "y" * 49 + "\n\n"}, f'Invalid strategy "{"y" * 49} ". {STRATEGY_HINT}'),
        ({"strategy": 42}, f'Invalid strategy "<non-string>". {STRATEGY_HINT}'),
        ({"strategy": None}, f'Invalid strategy "<non-string>". {STRATEGY_HINT}'),
        (
            {"backends": (A,)},
            "Failover strategy requires at least 2 backends (minimum 2 backends for failover)",
        ),
        (
            {"backends": (A, BackendSpec(name="a", provider="other"))},
            'backends: duplicate backend name "a"; names must be unique',
        ),
        (
            {"backends": (A, B, BackendSpec(name="b", provider="other"))},
            'backends: duplicate backend name "b"; names must be unique',
        ),
        (
            {"backends": (A, {"name": "b", "provider": "openai"})},
            "backends: every entry must be a BackendSpec, got {'name': 'b', 'provider': 'openai'}",
        ),
        ({"profile_name": ""}, "profile_name: must be a non-empty string"),
        ({"profile_name": "  "}, "profile_name: must be a non-empty string"),
        ({"profile_name": 7}, "profile_name: must be a non-empty string"),
        (
            {"settings": {"timeout_ms": 5}},
            "settings: must be a Settings (see Settings.from_mapping)",
        ),
        ({"context_limit": 0}, "context_limit: must be an integer >= 1 or null, got 0"),
        ({"context_limit": -5}, "context_limit: must be an integer >= 1 or null, got -5"),
        ({"context_limit": True}, "context_limit: must be an integer >= 1 or null, got True"),
        ({"context_limit": 1.5}, "context_limit: must be an integer >= 1 or null, got 1.5"),
    ],
)
def test_config_rule_message(overrides: dict[str, Any], expected: str) -> None:
    assert _message(lambda: _config(**overrides)) == expected


def test_round_robin_accepts_a_single_backend() -> None:
    config = _config(strategy="round-robin", backends=(A,))
    assert config.backends == (A,)


def test_backend_lists_become_tuples() -> None:
    # A tuple keeps the config hashable-ish and its trace header stable.
    assert _config(backends=[A, B]).backends == (A, B)


def _generator() -> Any:
    yield A
    yield B


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        ("ab", "backends: must be a tuple or list of BackendSpec, got a str: 'ab'"),
        (_generator(), "backends: must be a tuple or list of BackendSpec, got a generator"),
        ({A: 1}, "backends: must be a tuple or list of BackendSpec, got a dict"),
    ],
    ids=["string", "generator", "dict"],
)
def test_backends_of_the_wrong_type_say_what_was_given(backends: object, expected: str) -> None:
    assert _message(lambda: _config(backends=backends)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (" a", "backends[].name: must not start or end with whitespace, got ' a'"),
        ("a\t", "backends[].name: must not start or end with whitespace, got 'a\\t'"),
        ("a\nb", "backends[].name: must not contain control characters, got 'a\\nb'"),
        ("a\x00", "backends[].name: must not contain control characters, got 'a\\x00'"),
        ("a\x85b", "backends[].name: must not contain control characters, got 'a\\x85b'"),
    ],
    ids=["leading space", "trailing tab", "newline", "nul", "c1 control"],
)
def test_backend_names_are_refused_with_the_rule(name: str, expected: str) -> None:
    assert _message(lambda: BackendSpec(name=name, provider="openai")) == expected


def test_names_differing_only_by_surrounding_whitespace_never_pass_as_two() -> None:
    # Either one would print as "a" beside the other: refused before any duplicate check.
    message = _message(lambda: _config(backends=(A, BackendSpec(name="a ", provider="x"))))
    assert message == "backends[].name: must not start or end with whitespace, got 'a '"


def test_inner_spaces_and_unicode_stay_allowed() -> None:
    assert BackendSpec(name="my backend é", provider="openai").name == "my backend é"


# --------------------------------------------------------------- backends


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"name": "", "provider": "p"},
            'Each backend must have a valid "name" field (non-empty string)',
        ),
        (
            {"name": "  ", "provider": "p"},
            'Each backend must have a valid "name" field (non-empty string)',
        ),
        (
            {"name": None, "provider": "p"},
            'Each backend must have a valid "name" field (non-empty string)',
        ),
        (
            {"name": 3, "provider": "p"},
            'Each backend must have a valid "name" field (non-empty string)',
        ),
        (
            {"name": "a", "provider": ""},
            'Backend "a" must have a valid "provider" field (non-empty string)',
        ),
        (
            {"name": "a", "provider": None},
            'Backend "a" must have a valid "provider" field (non-empty string)',
        ),
        (
            # Control characters in a name are refused before the provider is looked at.
            {"name": "a\tb", "provider": " "},
            "backends[].name: must not contain control characters, got 'a\\tb'",
        ),
        ({"name": "a", "provider": "p", "model": 5}, 'Backend "a": model must be a string'),
        (
            {"name": "a", "provider": "p", "context_window": 0},
            'Backend "a": context_window must be an integer >= 1 or null, got 0',
        ),
        (
            {"name": "a", "provider": "p", "context_window": True},
            'Backend "a": context_window must be an integer >= 1 or null, got True',
        ),
        (
            {"name": "a", "provider": "p", "context_window": "8k"},
            "Backend \"a\": context_window must be an integer >= 1 or null, got '8k'",
        ),
    ],
)
def test_backend_rule_message(fields: dict[str, Any], expected: str) -> None:
    assert _message(lambda: BackendSpec(**fields)) == expected


# --------------------------------------------------------------- settings


def _range(key: str, minimum: int, shown: str, *, optional: bool = False) -> str:
    null = " or null" if optional else ""
    return f"settings.{key}: must be an integer >= {minimum}{null}, got {shown}"


def _boolean(key: str, shown: str) -> str:
    return f"settings.{key}: must be true or false, got {shown}"


CODES_TYPE = "settings.failover_status_codes: must be a list of HTTP status codes or null, got "
CODES_ENTRY = (
    "settings.failover_status_codes: every entry must be an integer between 100 and 599, got "
)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("failover_retry_count", 0, _range("failover_retry_count", 1, "0")),
        ("failover_retry_count", -1, _range("failover_retry_count", 1, "-1")),
        ("failover_retry_count", "2", _range("failover_retry_count", 1, "'2'")),
        ("failover_retry_count", 2.0, _range("failover_retry_count", 1, "2.0")),
        ("failover_retry_count", True, _range("failover_retry_count", 1, "True")),
        ("failover_retry_count", None, _range("failover_retry_count", 1, "None")),
        ("failover_retry_delay_ms", -1, _range("failover_retry_delay_ms", 0, "-1")),
        ("failover_retry_delay_ms", "0", _range("failover_retry_delay_ms", 0, "'0'")),
        ("failover_on_network_errors", "false", _boolean("failover_on_network_errors", "'false'")),
        ("failover_on_network_errors", 0, _boolean("failover_on_network_errors", "0")),
        ("failover_on_network_errors", None, _boolean("failover_on_network_errors", "None")),
        ("failover_status_codes", "429", CODES_TYPE + "'429'"),
        ("failover_status_codes", 429, CODES_TYPE + "429"),
        ("failover_status_codes", {429}, CODES_TYPE + "{429}"),
        ("failover_status_codes", [429, "bad"], CODES_ENTRY + "'bad'"),
        ("failover_status_codes", (99,), CODES_ENTRY + "99"),
        ("failover_status_codes", (600,), CODES_ENTRY + "600"),
        ("failover_status_codes", (True,), CODES_ENTRY + "True"),
        ("failover_status_codes", (429.0,), CODES_ENTRY + "429.0"),
        ("tpm_threshold", 0, _range("tpm_threshold", 1, "0", optional=True)),
        ("tpm_threshold", -100, _range("tpm_threshold", 1, "-100", optional=True)),
        ("tpm_threshold", "500", _range("tpm_threshold", 1, "'500'", optional=True)),
        ("timeout_ms", 0, _range("timeout_ms", 1, "0", optional=True)),
        ("timeout_ms", 1.5, _range("timeout_ms", 1, "1.5", optional=True)),
        ("timeout_ms", False, _range("timeout_ms", 1, "False", optional=True)),
        ("circuit_breaker_enabled", "true", _boolean("circuit_breaker_enabled", "'true'")),
        ("circuit_breaker_enabled", 1, _boolean("circuit_breaker_enabled", "1")),
        (
            "circuit_breaker_failure_threshold",
            0,
            _range("circuit_breaker_failure_threshold", 1, "0"),
        ),
        (
            "circuit_breaker_failure_threshold",
            "3",
            _range("circuit_breaker_failure_threshold", 1, "'3'"),
        ),
        (
            "circuit_breaker_failure_window_ms",
            0,
            _range("circuit_breaker_failure_window_ms", 1, "0"),
        ),
        (
            "circuit_breaker_recovery_timeout_ms",
            -1,
            _range("circuit_breaker_recovery_timeout_ms", 0, "-1"),
        ),
        (
            "circuit_breaker_recovery_timeout_ms",
            None,
            _range("circuit_breaker_recovery_timeout_ms", 0, "None"),
        ),
    ],
)
def test_settings_rule_names_the_key(key: str, value: object, expected: str) -> None:
    assert _message(lambda: Settings(**{key: value})) == expected
    # from_mapping goes through the same checks.
    assert _message(lambda: Settings.from_mapping({key: value})) == expected


def test_rejected_value_is_shown_cut_to_60_code_points() -> None:
    message = _message(lambda: Settings(failover_retry_count="x" * 100))
    shown = message.removeprefix("settings.failover_retry_count: must be an integer >= 1, got ")
    assert shown == "'" + "x" * 58 + "\u2026"
    assert len(shown) == 60


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("failover_retry_count", 1),
        ("failover_retry_delay_ms", 0),
        ("failover_status_codes", ()),
        ("failover_status_codes", (100, 599)),
        ("failover_status_codes", None),
        ("tpm_threshold", 1),
        ("tpm_threshold", None),
        ("timeout_ms", 1),
        ("timeout_ms", None),
        ("circuit_breaker_failure_threshold", 1),
        ("circuit_breaker_failure_window_ms", 1),
        ("circuit_breaker_recovery_timeout_ms", 0),
    ],
)
def test_settings_boundary_values_are_accepted(key: str, value: object) -> None:
    assert getattr(Settings(**{key: value}), key) == value


def test_settings_defaults_match_the_reference() -> None:
    settings = Settings()
    assert settings.failover_retry_count == 2
    assert settings.failover_retry_delay_ms == 0
    assert settings.failover_on_network_errors is True
    assert settings.failover_status_codes is None
    assert settings.tpm_threshold is None
    assert settings.timeout_ms is None
    assert settings.circuit_breaker_enabled is False
    assert settings.circuit_breaker_failure_threshold == 3
    assert settings.circuit_breaker_failure_window_ms == 60_000
    assert settings.circuit_breaker_recovery_timeout_ms == 30_000


def test_status_code_lists_become_tuples() -> None:
    assert Settings(failover_status_codes=[408, 409]).failover_status_codes == (408, 409)


def test_from_mapping_ignores_keys_that_are_not_about_routing() -> None:
    settings = Settings.from_mapping(
        {
            "temperature": 0.2,
            "max_tokens": 100,
            "maxTokens": 100,
            "stream": True,
            "context-limit": 8000,
            "base-url": "http://127.0.0.1:1",
            "timeout_ms": 250,
        }
    )
    assert settings == Settings(timeout_ms=250)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "failover_retry_cout",
            "settings.failover_retry_cout: unknown routing setting; "
            "did you mean 'failover_retry_count'?",
        ),
        # The names the reference's docs list but its code never reads.
        (
            "lb_tpm_failover_threshold",
            "settings.lb_tpm_failover_threshold: unknown routing setting; "
            "did you mean 'tpm_threshold'?",
        ),
        (
            "lb_circuit_breaker_threshold",
            "settings.lb_circuit_breaker_threshold: unknown routing setting; "
            "did you mean 'circuit_breaker_failure_threshold'?",
        ),
        (
            "failover_anything_else_zz",
            "settings.failover_anything_else_zz: unknown routing setting",
        ),
        # Other spellings of real keys: kebab-case and camelCase.
        ("timeout-ms", "settings.timeout-ms: unknown routing setting; did you mean 'timeout_ms'?"),
        ("timeoutMs", "settings.timeoutMs: unknown routing setting; did you mean 'timeout_ms'?"),
        (
            "circuit-breaker-enabled",
            "settings.circuit-breaker-enabled: unknown routing setting; "
            "did you mean 'circuit_breaker_enabled'?",
        ),
        (
            "tpmThreshold",
            "settings.tpmThreshold: unknown routing setting; did you mean 'tpm_threshold'?",
        ),
    ],
)
def test_from_mapping_refuses_unknown_routing_keys(key: str, expected: str) -> None:
    # A typo in a routing key must not silently fall back to the default.
    assert _message(lambda: Settings.from_mapping({key: 1})) == expected


def test_from_mapping_of_nothing_gives_the_defaults() -> None:
    assert Settings.from_mapping({}) == Settings()


def test_from_mapping_refuses_a_non_mapping() -> None:
    assert _message(lambda: Settings.from_mapping([1])) == "settings: must be a mapping, got [1]"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("retry_count", "attempts"), [(1, 1), (2, 2), (3, 3), (100, 100), (101, 100), (999, 100)]
)
def test_retry_count_above_100_acts_as_100(retry_count: int, attempts: int) -> None:
    settings = Settings(failover_retry_count=retry_count)
    assert settings.failover_retry_count == retry_count  # kept as given, for the trace
    assert settings.attempts_per_backend == attempts


# --------------------------------------------------------------- context limits


def _windows(*windows: int | None, limit: int | None = None) -> BalancerConfig:
    backends = tuple(
        BackendSpec(name=f"b{i}", provider="p", context_window=w) for i, w in enumerate(windows)
    )
    return _config(backends=backends, context_limit=limit)


@pytest.mark.parametrize(
    ("windows", "limit", "shared", "per_target"),
    [
        ((None, None), None, None, [None, None]),
        ((1000, None), None, 1000, [1000, 1000]),
        ((1000, 500), None, 500, [500, 500]),
        ((1000, 500, None), None, 500, [500, 500, 500]),
        # The explicit limit overrides the smallest window, but never loosens a backend's own.
        ((1000, 500), 800, 800, [800, 500]),
        ((1000, 500), 2000, 2000, [1000, 500]),
        ((None, None), 300, 300, [300, 300]),
        ((None, 200), 300, 300, [300, 200]),
    ],
)
def test_context_limit_helpers(
    windows: tuple[int | None, ...],
    limit: int | None,
    shared: int | None,
    per_target: list[int | None],
) -> None:
    config = _windows(*windows, limit=limit)
    assert config.shared_context_limit() == shared
    assert [config.target_context_limit(b) for b in config.backends] == per_target
    balancer = Balancer(config)
    assert balancer.context_limit() == shared
    assert [m.context_window for m in balancer.models()] == [shared]


def test_balancer_refuses_anything_but_a_config() -> None:
    with pytest.raises(TypeError, match="config must be a BalancerConfig, got dict"):
        Balancer({"strategy": "failover"})  # type: ignore[arg-type]
