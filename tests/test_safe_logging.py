"""Failures are reported in the application's log without the request data their messages may carry."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gotrails_otel.capture import guard

SECRETS = ("4111 1111 1111 1111", "hunter2", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")
MESSAGE = f"upload of card {SECRETS[0]} failed (password={SECRETS[1]}); Authorization: Bearer {SECRETS[2]}"


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


class _Leaky:
    def export(self, trail: Any) -> None:
        try:
            raise ValueError(f"payload rejected: password={SECRETS[1]}")
        except ValueError as cause:
            raise RuntimeError(MESSAGE) from cause

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        """Nothing to release."""


def test_a_failing_exporter_is_reported_without_the_secrets_in_its_message(
    make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_harness()
    h.processor.exporter = _Leaky()
    with caplog.at_level(logging.DEBUG, logger="gotrails_otel"):
        with h.instrumented().fastapi_request("GET", "/", "/", 200):
            pass
        h.processor.force_flush(5_000)
        h.processor._failures.flush()
    text = _logged(caplog)
    assert "RuntimeError" in text and "Raised at" in text  # the failure and where it happened are reported
    for secret in SECRETS:
        assert secret not in text


def test_a_failing_capture_hook_is_reported_without_the_secrets_in_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @guard
    def hook() -> None:
        raise KeyError(MESSAGE)

    with caplog.at_level(logging.DEBUG, logger="gotrails_otel"):
        hook()  # first failure: logged at ERROR
        hook()  # later ones: DEBUG
    text = _logged(caplog)
    assert text.count("KeyError: ") == 2  # each failure reported, the first at ERROR and the next at DEBUG
    for secret in SECRETS:
        assert secret not in text


def test_a_failing_custom_sampler_is_reported_without_the_secrets_in_its_message(
    make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def sampler(trail: Any) -> bool:
        raise RuntimeError(MESSAGE)

    h = make_harness(sampler=sampler)
    with caplog.at_level(logging.DEBUG, logger="gotrails_otel"):
        with h.instrumented().fastapi_request("GET", "/", "/", 200):
            pass
        assert len(h.trails(1)) == 1  # fail open: the trail is kept
    text = _logged(caplog)
    assert "custom trail sampler failed" in text
    for secret in SECRETS:
        assert secret not in text
