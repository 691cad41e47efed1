"""Exporters: stdout, file, OTel logs through a real SDK LoggerProvider, and the default choice."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

import gotrails_otel as gt
from gotrails_otel.exporters import exporter_from_config

from .conftest import TrailHarness, validate_trail


def _request(h: TrailHarness, path: str = "/v1/payments") -> None:
    with h.instrumented().fastapi_request("POST", "/v1/payments", path, 201):
        with gt.step("ValidateRequest"):
            pass
        h.instrumented().httpx("POST", "https://api.midtrans.com/v2/charge", 201)


def test_stdout_exporter_writes_one_compact_line_per_trail(harness: TrailHarness) -> None:
    stream = io.BytesIO()
    harness.processor.exporter = gt.StdoutTrailExporter(stream)
    _request(harness, "/one")
    _request(harness, "/two")
    harness.processor.force_flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert all(b"\n" not in line and not line.startswith(b" ") for line in lines)
    trails = [orjson.loads(line) for line in lines]
    for trail in trails:
        validate_trail(trail)
    assert [t["request"]["path"] for t in trails] == ["/one", "/two"]


def test_file_exporter_appends_json_lines(harness: TrailHarness, tmp_path: Path) -> None:
    path = tmp_path / "trails" / "audit.jsonl"
    first = gt.FileTrailExporter(path)
    harness.processor.exporter = first
    _request(harness, "/a")
    harness.processor.force_flush()
    first.shutdown()
    harness.processor.exporter = gt.FileTrailExporter(path)  # a restart appends, it does not truncate
    _request(harness, "/b")
    harness.processor.force_flush()
    trails = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [t["request"]["path"] for t in trails] == ["/a", "/b"]
    with pytest.raises(RuntimeError, match="shut down"):
        first.export(trails[0])


def test_otel_log_exporter_emits_one_linked_record(harness: TrailHarness) -> None:
    logs = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    harness.processor.exporter = gt.OTelLogTrailExporter(provider)
    _request(harness)
    assert harness.processor.force_flush()
    records = logs.get_finished_logs()
    assert len(records) == 1
    record = records[0].log_record
    body: dict[str, Any] = record.body  # type: ignore[assignment]
    validate_trail(body)
    assert record.event_name == "gotrails.trail"
    assert format(record.trace_id, "032x") == body["otel"]["trace_id"]
    assert format(record.span_id, "016x") == body["otel"]["span_id"]
    assert record.timestamp is not None
    assert abs(record.timestamp // 1_000_000 - _ms_since_epoch(body["timestamp"])) <= 1
    assert record.severity_text == "INFO"
    assert records[0].instrumentation_scope.name == "gotrails_otel"
    assert record.attributes is not None and record.attributes["gotrails.status"] == "ok"
    provider.shutdown()


def _ms_since_epoch(stamp: str) -> int:
    from datetime import datetime

    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def test_exporters_from_config(tmp_path: Path) -> None:
    config = gt.TrailConfig.from_env({"GOTRAILS_EXPORTER": "stdout,file", "GOTRAILS_FILE": str(tmp_path / "t.jsonl")})
    exporter = exporter_from_config(config)
    kinds = sorted(type(e).__name__ for e in exporter.exporters)  # type: ignore[attr-defined]
    assert kinds == ["FileTrailExporter", "StdoutTrailExporter"]
    exporter.shutdown()
    assert isinstance(exporter_from_config(gt.TrailConfig(exporters=("otel",))), gt.OTelLogTrailExporter)


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTRAILS_", "OTEL_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        check=False,
    )


_SCRIPT = """
    import logging
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind
    import gotrails_otel as gt

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    {setup}
    provider = TracerProvider()
    processor = gt.TrailProcessor()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    for path in ("/a", "/b"):
        with tracer.start_as_current_span("GET " + path, kind=SpanKind.SERVER, attributes={{"http.method": "GET"}}):
            pass
    provider.shutdown()
"""


def test_default_without_a_logger_provider_is_stdout_with_one_notice() -> None:
    result = _run(_SCRIPT.format(setup=""))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3  # two trails, then the hash chain's final checkpoint
    for line in lines[:2]:
        validate_trail(orjson.loads(line))
    assert orjson.loads(lines[2])["record"] == "gotrails.checkpoint"
    assert result.stderr.count("no OpenTelemetry SDK LoggerProvider with a logs exporter is configured") == 1


def test_an_sdk_logger_provider_without_exporters_is_not_a_destination() -> None:
    setup = """
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    set_logger_provider(LoggerProvider())  # what the SDK configurator sets up when OTEL_LOGS_EXPORTER is none
    """
    result = _run(_SCRIPT.format(setup=textwrap.indent(textwrap.dedent(setup), "    ")))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3  # the trails (and checkpoint) went to stdout instead of vanishing
    assert "with a logs exporter" in result.stderr


def test_default_with_an_sdk_logger_provider_is_otel_logs() -> None:
    setup = """
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor, InMemoryLogRecordExporter
    import atexit, json
    logs = InMemoryLogRecordExporter()
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    set_logger_provider(lp)
    atexit.register(lambda: print(json.dumps([r.log_record.event_name for r in logs.get_finished_logs()])))
    """
    result = _run(_SCRIPT.format(setup=textwrap.indent(textwrap.dedent(setup), "    ")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '["gotrails.trail", "gotrails.trail", "gotrails.checkpoint"]'
    assert "LoggerProvider" not in result.stderr


def test_invalid_environment_fails_at_startup_naming_the_variable() -> None:
    result = _run(_SCRIPT.format(setup=""), {"GOTRAILS_GRACE_MS": "soon"})
    assert result.returncode != 0
    assert "GOTRAILS_GRACE_MS='soon'" in result.stderr
