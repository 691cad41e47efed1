"""TrailConfig: defaults, GOTRAILS_* variables, validation with messages that name the variable."""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.trace import SpanKind

from gotrails_otel import ConfigError, TrailConfig


def test_defaults() -> None:
    config = TrailConfig()
    assert config.enabled is True
    assert config.grace_ms == 1000
    assert config.root_kinds == frozenset({SpanKind.SERVER, SpanKind.CONSUMER})
    assert config.exporters is None


def test_from_env_reads_every_variable() -> None:
    config = TrailConfig.from_env(
        {
            "GOTRAILS_ENABLED": "false",
            "GOTRAILS_SERVICE": "billing",
            "GOTRAILS_ENVIRONMENT": "staging",
            "GOTRAILS_ROOT_KINDS": "server, consumer,internal",
            "GOTRAILS_GRACE_MS": "250",
            "GOTRAILS_MAX_AGE_MS": "60000",
            "GOTRAILS_MAX_TRAILS": "10",
            "GOTRAILS_MAX_SPANS": "100",
            "GOTRAILS_MAX_ERRORS": "5",
            "GOTRAILS_EXPORTER": "stdout,FILE",
            "GOTRAILS_FILE": "/tmp/trails.jsonl",
            "UNRELATED": "x",
        }
    )
    assert config == TrailConfig(
        enabled=False,
        service_name="billing",
        environment="staging",
        root_kinds=frozenset({SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.INTERNAL}),
        grace_ms=250,
        max_age_ms=60000,
        max_trails=10,
        max_spans_per_trail=100,
        max_errors_per_trail=5,
        exporters=("stdout", "file"),
        file_path="/tmp/trails.jsonl",
    )


def test_empty_variables_keep_defaults_and_overrides_win() -> None:
    config = TrailConfig.from_env({"GOTRAILS_GRACE_MS": " ", "GOTRAILS_MAX_TRAILS": "7"}, max_trails=9)
    assert config.grace_ms == 1000 and config.max_trails == 9


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GOTRAILS_GRACE_MS": "soon"}, "GOTRAILS_GRACE_MS='soon'"),
        ({"GOTRAILS_GRACE_MS": "-1"}, "GOTRAILS_GRACE_MS='-1': must be >= 0"),
        ({"GOTRAILS_GRACE_MS": "nan"}, "GOTRAILS_GRACE_MS='nan': expected a finite number"),
        ({"GOTRAILS_ENABLED": "maybe"}, "GOTRAILS_ENABLED='maybe': expected true or false"),
        ({"GOTRAILS_MAX_TRAILS": "0"}, "GOTRAILS_MAX_TRAILS='0': must be >= 1"),
        ({"GOTRAILS_MAX_SPANS": "1.5"}, "GOTRAILS_MAX_SPANS='1.5'"),
        ({"GOTRAILS_ROOT_KINDS": "server,daemon"}, "unknown span kind 'daemon'"),
        ({"GOTRAILS_EXPORTER": "kafka"}, "GOTRAILS_EXPORTER='kafka': unknown exporter ['kafka']"),
        ({"GOTRAILS_EXPORTER": "file"}, "GOTRAILS_EXPORTER='file': the file exporter needs file_path"),
        ({"GOTRAILS_MAX_AGE_MS": "10", "GOTRAILS_GRACE_MS": "20"}, "GOTRAILS_MAX_AGE_MS='10': must be >= grace_ms"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrailConfig.from_env(env)
    assert message in str(info.value)


def test_direct_construction_is_validated_and_frozen() -> None:
    with pytest.raises(ConfigError, match="invalid max_spans_per_trail: must be >= 1"):
        TrailConfig(max_spans_per_trail=0)
    with pytest.raises(ConfigError, match="root_kinds"):
        TrailConfig(root_kinds=frozenset())
    config = TrailConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.grace_ms = 5  # type: ignore[misc]
    assert config.replace(grace_ms=5).grace_ms == 5
    with pytest.raises(ConfigError):
        config.replace(grace_ms=-5)


def test_removing_an_unknown_detector_is_refused_not_read_as_a_pattern() -> None:
    # "-url_password" named a default before URLs got their own masker; read as a regular expression it would
    # silently mask the literal text "-url_password" and keep nothing else from changing.
    with pytest.raises(ConfigError, match=r"GOTRAILS_MASK_PATTERNS='-url_password'.*remove no default detector"):
        TrailConfig.from_env({"GOTRAILS_MASK_PATTERNS": "-url_password"})
    policy = TrailConfig(mask_patterns=("-jwt", "[-]EMP\\d{4}")).policy()
    assert policy.mask_text("id -EMP1234 here") == "id *** here"
