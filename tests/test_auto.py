"""Zero-code setup: real services under ``opentelemetry-instrument``, the one-call setup, and the propagator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.context import Context

from gotrails_otel import GotrailsPropagator

from .conftest import collect_trails, trails_in_file
from .services import free_port, stop_pid, wait_port

pytestmark = pytest.mark.service  # service processes under opentelemetry-instrument; never skipped in CI

APPS = Path(__file__).parent / "apps"
BASE_ENV = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_SERVICE_NAME": "payment-service",
    "PYTHONPATH": str(APPS),
}


def _instrument_bin() -> str:
    found = shutil.which("opentelemetry-instrument")
    if found is None:
        pytest.skip("opentelemetry-instrument is not installed")
    return found


class Service:
    """A service process under opentelemetry-instrument, writing its trails to a file."""

    def __init__(self, command: list[str], port: int, trails: Path, env: dict[str, str]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.trails_path = trails
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GOTRAILS_"))}
        full_env.update(BASE_ENV)
        full_env.update({"GOTRAILS_EXPORTER": "file", "GOTRAILS_FILE": str(trails), "GOTRAILS_GRACE_MS": "200"})
        full_env.update(env)
        self.log = trails.with_suffix(".log")
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [_instrument_bin(), *command], env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        try:
            wait_port(port, timeout=30)
        except TimeoutError:
            self.stop()
            raise AssertionError(self.log.read_text()) from None

    def trails(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        return collect_trails(
            lambda: trails_in_file(self.trails_path), count, timeout, lambda: f"; log:\n{self.log.read_text()}"
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_pid(self.process.pid, timeout=0)
            self.process.wait(timeout=10)
        self._log_file.close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def start(kind: str, env: dict[str, str] | None = None, name: str = "svc") -> Service:
        port = free_port()
        env = dict(env or {})
        if kind == "fastapi":
            command = ["uvicorn", "fastapi_service:app", "--port", str(port), "--log-level", "warning"]
        elif kind == "flask":
            command = [sys.executable, "-m", "flask", "--app", "flask_service", "run", "--port", str(port)]
        elif kind == "grpc":
            command = [sys.executable, str(APPS / "grpc_users.py")]
            env["GRPC_PORT"] = str(port)
        else:
            command = [sys.executable, str(APPS / "kafka_worker.py")]
            env["HEALTH_PORT"] = str(port)
        service = Service(command, port, tmp_path / f"{name}.jsonl", env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.mark.parametrize("distro", ["stock", "none"])
def test_fastapi_under_opentelemetry_instrument(services: Any, distro: str) -> None:
    env = {} if distro == "stock" else {"OTEL_PYTHON_DISTRO": "absent", "OTEL_PYTHON_CONFIGURATOR": "absent"}
    service = services("fastapi", env)
    response = httpx.post(f"{service.url}/v1/payments", json={"amount": 150000}, headers={"X-Request-ID": "r-1"})
    assert response.status_code == 200
    (trail,) = service.trails(1)
    assert trail["service"] == "payment-service"
    assert trail["request_id"] == "r-1"
    assert trail["request"]["body"] == {"amount": 150000}
    assert trail["response"]["body"] == {"payment_id": "pay-123", "amount": 150000}
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest"]
    log = service.log.read_text()
    assert "already instrumented" not in log and "falls outside of that range" not in log


def test_flask_under_opentelemetry_instrument(services: Any) -> None:
    service = services("flask")
    assert httpx.post(f"{service.url}/v1/payments", json={"amount": 7}).status_code == 201
    (trail,) = service.trails(1)
    assert trail["request"]["body"] == {"amount": 7}
    assert trail["response"]["body"] == {"payment_id": "pay-123", "amount": 7}
    assert trail["entry"]["name"] == "POST /v1/payments"


def test_two_services_share_the_callers_trace_id(services: Any) -> None:
    callee = services("fastapi", name="users")
    caller = services("fastapi", {"DOWNSTREAM_URL": callee.url}, name="payments")
    response = httpx.post(f"{caller.url}/v1/payments", json={"amount": 1}, headers={"X-Trace-ID": "flow-abc-1"})
    assert response.json()["downstream"]["user_id"] == "u-1"
    (outer,) = caller.trails(1)
    (inner,) = callee.trails(1)
    assert outer["trace_id"] == inner["trace_id"] == "flow-abc-1"
    assert inner["request_id"] == "flow-abc-1"  # sent on by the caller
    (call,) = outer["integrations"]
    assert call["request"]["headers"]["x-trace-id"] == ["flow-abc-1"]  # the headers as sent
    assert inner["otel"]["parent_span_id"] == call["span_id"]  # the callee's trail links to the caller's span
    assert inner["otel"]["trace_id"] == outer["otel"]["trace_id"]


@pytest.mark.service
def test_grpc_services_share_the_callers_trace_id(services: Any) -> None:
    users = services("grpc", name="users")
    caller = services("fastapi", {"USERS_GRPC": f"127.0.0.1:{users.port}"}, name="payments")
    response = httpx.post(f"{caller.url}/v1/payments", json={"amount": 2}, headers={"X-Trace-ID": "flow-grpc-7"})
    assert response.json()["user"] == {"user_id": "u-1", "email": "user@email.com"}
    (outer,) = caller.trails(1)
    (inner,) = users.trails(1)
    assert inner["entry"] == {"kind": "grpc", "name": "/users.v1.UserService/GetUser"}
    assert outer["trace_id"] == inner["trace_id"] == "flow-grpc-7"
    (call,) = outer["integrations"]
    assert call["name"] == "UserService.GetUser"
    assert inner["otel"]["parent_span_id"] == call["span_id"]
    assert inner["request"]["message"] == {"user_id": "u-1"}


@pytest.mark.service
def test_kafka_consumer_trail_carries_the_producers_trace_id(services: Any, kafka_service: Any) -> None:
    producer = services("fastapi", {"KAFKA": kafka_service.url}, name="producer")
    response = httpx.post(f"{producer.url}/v1/payments", json={"amount": 3}, headers={"X-Trace-ID": "flow-kafka-1"})
    assert response.status_code == 200
    (produced,) = producer.trails(1)
    (message,) = produced["integrations"]
    assert message["type"] == "kafka" and message["response"]["offset"] is not None
    worker = services("worker", {"KAFKA": kafka_service.url, "TOPIC": "payment.created"}, name="worker")
    (consumed,) = worker.trails(1, timeout=20)
    assert consumed["entry"]["kind"] == "kafka"
    assert consumed["trace_id"] == "flow-kafka-1"
    assert consumed["otel"]["trace_id"] == produced["otel"]["trace_id"]
    assert consumed["request"]["value"] == {"payment_id": "pay-123"}
    assert [s["name"] for s in consumed["internal_steps"]] == ["HandlePaymentCreated"]
    assert consumed["metadata"] == {"key": "pay-123"}


def test_hex_x_trace_id_becomes_the_otel_trace_id(services: Any) -> None:
    service = services("fastapi")
    flow = "4bf92f3577b34da6a3ce929d0e0e4736"
    httpx.post(f"{service.url}/v1/payments", json={"amount": 1}, headers={"X-Trace-ID": flow})
    (trail,) = service.trails(1)
    assert trail["trace_id"] == flow and trail["otel"]["trace_id"] == flow


def test_disabled_and_misconfigured_apps_still_start(services: Any) -> None:
    off = services("fastapi", {"GOTRAILS_ENABLED": "false"}, name="off")
    bad = services("fastapi", {"GOTRAILS_GRACE_MS": "soon"}, name="bad")
    skipped = services("fastapi", {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fastapi"}, name="skipped")
    for service in (off, bad, skipped):
        assert httpx.post(f"{service.url}/v1/payments", json={"amount": 1}).status_code == 200
    time.sleep(0.5)
    assert not off.trails_path.exists() and not bad.trails_path.exists()
    log = bad.log.read_text()
    assert log.count("GOTRAILS_GRACE_MS='soon'") == 1 and "Traceback" not in log
    # With the FastAPI instrumentation disabled, FastAPI's own telemetry still makes a SERVER span: a trail with
    # the step, but without the bodies that the (disabled) ASGI capture would have added.
    (trail,) = skipped.trails(1)
    assert trail["request"]["body"] is None and trail["response"]["body"] is None
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest"]


# ------------------------------------------------------------------------------------------ propagator


def test_propagator_extracts_validates_and_injects() -> None:
    propagator = GotrailsPropagator()
    ctx = propagator.extract({"x-trace-id": "4bf92f3577b34da6a3ce929d0e0e4736", "x-request-id": "r-9"})
    assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    carrier: dict[str, str] = {}
    propagator.inject(carrier, ctx)
    assert carrier == {"x-trace-id": "4bf92f3577b34da6a3ce929d0e0e4736", "x-request-id": "r-9"}

    hostile = propagator.extract({"x-trace-id": "bad\r\nid", "x-request-id": "x" * 500}, Context())
    assert not trace.get_current_span(hostile).get_span_context().is_valid
    carrier = {}
    propagator.inject(carrier, hostile)
    assert carrier == {}

    named = propagator.extract({"X-Trace-ID": "flow-1"}, Context())
    assert not trace.get_current_span(named).get_span_context().is_valid  # not hex: trace id unchanged
    carrier = {}
    propagator.inject(carrier, named)
    assert carrier == {"x-trace-id": "flow-1", "x-request-id": "flow-1"}


# ------------------------------------------------------------------------- OTLP -> collector -> Kafka


def _any_value(value: Any) -> Any:
    """An OTLP JSON AnyValue as a Python value (camelCase or snake_case keys)."""
    if not isinstance(value, dict):
        return value
    if "value" in value and len(value) == 1:
        value = value["value"] or {}
    kvlist = _field(value, "kvlistValue")
    if kvlist is not None:
        return {kv["key"]: _any_value(kv.get("value", {})) for kv in kvlist.get("values", [])}
    array = _field(value, "arrayValue")
    if array is not None:
        return [_any_value(v) for v in array.get("values", [])]
    number = _field(value, "intValue")
    if number is not None:
        return int(number)
    for key in ("stringValue", "boolValue", "doubleValue"):
        found = _field(value, key)
        if found is not None:
            return found
    return None


def _field(item: dict[str, Any], camel: str) -> Any:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return item.get(camel, item.get(snake))


def _trails_in(payload: Any) -> list[dict[str, Any]]:
    """Trails in one message of rotel's JSON logs export (a ResourceLogs list, or an object holding one)."""
    resources = payload if isinstance(payload, list) else _field(payload, "resourceLogs") or []
    trails = []
    for resource_logs in resources:
        for scope_logs in _field(resource_logs, "scopeLogs") or []:
            for record in _field(scope_logs, "logRecords") or []:
                if _field(record, "eventName") == "gotrails.trail":
                    trail = _any_value(record["body"])
                    trail["_record_trace_id"] = _field(record, "traceId")
                    trails.append(trail)
    return trails


@pytest.mark.service
def test_trails_leave_through_otlp_to_a_collector_and_kafka(services: Any, kafka_service: Any) -> None:
    from kafka import KafkaConsumer

    from .services import otel_collector

    with otel_collector(kafka_service) as collector:
        service = services(
            "fastapi",
            {
                "OTEL_LOGS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{collector.url}/v1/logs",
                "OTEL_BLRP_SCHEDULE_DELAY": "100",
                "GOTRAILS_EXPORTER": "",
            },
        )
        for amount in (1, 2, 3):
            assert httpx.post(f"{service.url}/v1/payments", json={"amount": amount}).status_code == 200
        consumer = KafkaConsumer(
            "otlp_logs", bootstrap_servers=kafka_service.url, auto_offset_reset="earliest", consumer_timeout_ms=1000
        )
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(found) < 3 and time.monotonic() < deadline:
            for message in consumer:
                payload = orjson.loads(message.value)
                found.extend(_trails_in(payload))
        consumer.close()
    assert sorted(t["request"]["body"]["amount"] for t in found) == [1, 2, 3]
    for trail in found:
        assert trail.pop("_record_trace_id") == trail["otel"]["trace_id"]
        assert trail["response"]["body"]["payment_id"] == "pay-123"
        assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest"]
        assert trail["service"] == "payment-service"


def test_instrument_is_idempotent_and_undone_by_uninstrument() -> None:
    from opentelemetry import propagate
    from opentelemetry.sdk.trace import TracerProvider

    import gotrails_otel as gt
    from gotrails_otel.hooks import _done

    provider = TracerProvider()
    before = propagate.get_global_textmap()
    first = gt.instrument(provider, gt.TrailConfig(exporters=("stdout",)))
    second = gt.instrument(provider, gt.TrailConfig(exporters=("stdout",)))
    assert first is not None and first is second
    assert "x-trace-id" in propagate.get_global_textmap().fields and "x-trace-id" not in before.fields
    assert "httpx" in _done and "fastapi" in _done
    second_wave = {"requests", "urllib3", "psycopg", "psycopg2", "sqlite3", "asyncpg", "celery", "confluent_kafka"}
    assert second_wave | {"aiohttp-client", "aiohttp-server"} <= set(_done)
    assert "django" not in _done  # no Django project in this process: its settings are left alone
    gt.uninstrument()
    assert propagate.get_global_textmap() is before
    assert _done == {}
    assert gt.instrument(provider, gt.TrailConfig(enabled=False)) is None
    with pytest.raises(TypeError, match="SDK TracerProvider"):
        gt.instrument(trace.NoOpTracerProvider(), gt.TrailConfig())


def test_propagator_is_usable_through_otel_propagators() -> None:
    code = "from opentelemetry import propagate; print(sorted(propagate.get_global_textmap().fields))"
    env = {**os.environ, "OTEL_PROPAGATORS": "tracecontext,gotrails"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "x-trace-id" in result.stdout and "traceparent" in result.stdout


def test_secrets_are_masked_under_opentelemetry_instrument(services: Any) -> None:
    """Multipart fields and files, bracketed query keys and exception text, in a service run with the stock distro."""
    service = services("fastapi")
    upload = httpx.post(
        f"{service.url}/v1/upload?user[password]=auto-q-pw&user%5Btoken%5D=auto-q-tok",
        data={"user": "ann", "password": "auto-mp-pw"},
        files={"avatar": ("me.txt", b"auto-file-content " * 8, "text/plain")},
    )
    assert upload.json() == {"user": "ann", "size": 144}
    failed = httpx.post(f"{service.url}/v1/fail", json={"card": "4111 1111 1111 1111", "password": "auto-exc-pw"})
    assert failed.status_code == 500
    trails = service.trails(2)
    (sent,) = [t for t in trails if t["request"]["path"] == "/v1/upload"]
    assert sent["request"]["query"] == "user[password]=***&user%5Btoken%5D=***"
    assert sent["request"]["body"] == {
        "user": "ann",
        "password": "***",
        "avatar": {"filename": "me.txt", "content_type": "text/plain", "size": 144},
    }
    (error,) = [t for t in trails if t["request"]["path"] == "/v1/fail"]
    assert error["status"] == "error" and error["errors"]
    assert "[parameters: ***]" in error["errors"][0]["message"]
    assert error["redacted"]["driver_message"] >= 1
    raw = orjson.dumps(trails)
    for secret in ("auto-q-pw", "auto-q-tok", "auto-mp-pw", "auto-file-content", "auto-exc-pw", "1111 1111 1111"):
        assert secret.encode() not in raw, f"{secret} leaked"
