"""The fold: contract fields, classification in all three semantic-convention modes, captures, identifiers."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

import gotrails_otel as gt

from .conftest import TrailHarness
from .instrumentation import MODES, remote_parent

CONTRACT = (
    "timestamp",
    "trace_id",
    "request_id",
    "service",
    "environment",
    "request",
    "response",
    "latency_ms",
    "internal_steps",
    "integrations",
    "errors",
    "metadata",
)


def payment_request(h: TrailHarness, mode: str) -> dict[str, Any]:
    """The seed's payment flow, emitted as the instrumentations would, plus their noise."""
    inst = h.instrumented(mode)
    with inst.fastapi_request("POST", "/v1/payments", "/v1/payments", 201, query="dry=0"):
        with gt.step("ValidateRequest"):
            pass
        with gt.step("CreatePaymentUsecase"):
            inst.sqlalchemy_connect()
            inst.sqlalchemy("INSERT INTO payments (id, amount) VALUES (%(id)s, %(amount)s)")
            inst.redis("SET ? ?")
            inst.redis("GET ?")
            inst.redis("SET ? ?", "GET ?")
            inst.httpx("POST", "https://api.midtrans.com/v2/charge", 201)
            inst.httpx("GET", "https://api.midtrans.com/v2/status", 503)
            inst.grpc_client("users.v1.UserService", "GetUser")
            inst.kafka_send("payment.created", 3)
        inst.background_task("notify")
    return h.one()


def test_trail_has_every_contract_field(harness: TrailHarness) -> None:
    trail = payment_request(harness, "old")
    for key in CONTRACT:
        assert key in trail
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", trail["timestamp"])
    assert re.fullmatch(r"[0-9a-f]{32}", trail["trace_id"])
    assert trail["request_id"] == trail["trace_id"] == trail["otel"]["trace_id"]
    assert trail["service"] == "payment-service"
    assert trail["environment"] == "test"
    assert trail["request"] == {
        "method": "POST",
        "path": "/v1/payments",
        "query": "dry=0",
        "route": "/v1/payments",
        "headers": {},
        "body": None,
    }
    assert trail["response"] == {"status": 201, "headers": {}, "body": None}
    assert trail["latency_ms"] > 0
    assert trail["entry"] == {"kind": "http", "name": "POST /v1/payments"}
    assert trail["complete"] is True and trail["flush_reason"] == "complete"
    assert trail["status"] == "ok"


@pytest.mark.parametrize("mode", MODES)
def test_classification_and_names(harness: TrailHarness, mode: str) -> None:
    trail = payment_request(harness, mode)
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest", "CreatePaymentUsecase"]
    got = [(i["type"], i["name"]) for i in trail["integrations"]]
    assert got == [
        ("database", "postgres.payments.insert"),
        ("cache", "redis.set"),
        ("cache", "redis.get"),
        ("cache", "redis.pipeline"),
        ("http", "POST api.midtrans.com/v2/charge"),
        ("http", "GET api.midtrans.com/v2/status"),
        ("grpc", "UserService.GetUser"),
        ("kafka", "payment.created"),
    ]
    by_name = {i["name"]: i for i in trail["integrations"]}
    db = by_name["postgres.payments.insert"]
    assert db["request"] == {
        "query": "INSERT INTO payments (id, amount) VALUES (%(id)s, %(amount)s)",
        "args": None,
    }
    assert db["metadata"] == {"system": "postgresql", "namespace": "payments_db"}
    assert by_name["redis.set"]["request"] == {"command": "SET", "key": None}
    assert by_name["redis.pipeline"]["request"]["command"] == "SET GET"
    charge = by_name["POST api.midtrans.com/v2/charge"]
    assert charge["request"]["url"] == "https://api.midtrans.com/v2/charge"
    assert charge["response"]["status"] == 201 and charge["error"] is None
    failed = by_name["GET api.midtrans.com/v2/status"]
    assert failed["error"]["message"] == "HTTP 503"
    grpc = by_name["UserService.GetUser"]
    assert grpc["request"]["method"] == "/users.v1.UserService/GetUser"
    assert grpc["response"]["status_code"] == "OK"
    kafka = by_name["payment.created"]
    assert kafka["request"]["action"] == "produce" and kafka["request"]["topic"] == "payment.created"
    assert kafka["response"] == {"partition": 3, "offset": None}
    assert [e["source"] for e in trail["errors"]] == ["GET api.midtrans.com/v2/status"]
    offsets = [i["start_offset_ms"] for i in trail["internal_steps"] + trail["integrations"]]
    assert all(0 <= o <= trail["latency_ms"] for o in offsets)


def _normalised(trail: dict[str, Any]) -> Any:
    """The trail without ids and timings, which differ from run to run."""
    volatile = {"timestamp", "trace_id", "request_id", "latency_ms", "start_offset_ms", "span_id", "parent_span_id"}
    volatile.add("integrity")  # chain ids and hashes differ from run to run

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in volatile and k != "otel"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(trail)


def test_semconv_modes_give_the_same_trail(make_harness: Any) -> None:
    trails = []
    for mode in MODES:
        h = make_harness()
        trails.append(_normalised(payment_request(h, mode)))
        h.processor.shutdown()
    # The new keys carry error.type; everything else must be identical.
    for trail in trails:
        for item in trail["integrations"]:
            if item["error"]:
                item["error"].pop("type", None)
        for error in trail["errors"]:
            error.pop("type", None)
    assert trails[0] == trails[1] == trails[2]


@pytest.mark.parametrize("mode", MODES)
def test_flask_root_reads_target_and_query(harness: TrailHarness, mode: str) -> None:
    with harness.instrumented(mode).flask_request("GET", "/orders/<int:oid>", "/orders/7?verbose=1", 200):
        pass
    trail = harness.one()
    assert trail["request"]["path"] == "/orders/7"
    assert trail["request"]["query"] == "verbose=1"
    assert trail["request"]["route"] == "/orders/<int:oid>"
    assert trail["response"]["status"] == 200
    assert trail["internal_steps"] == [] and trail["integrations"] == []


def test_grpc_server_root(harness: TrailHarness) -> None:
    with harness.instrumented().grpc_server("users.v1.UserService", "GetUser", code=5, parent=remote_parent()):
        pass
    trail = harness.one()
    assert trail["entry"] == {"kind": "grpc", "name": "/users.v1.UserService/GetUser"}
    assert trail["request"] == {"method": "/users.v1.UserService/GetUser", "metadata": {}, "message": None}
    assert trail["response"] == {"status_code": "NOT_FOUND", "message": None}
    assert trail["otel"]["parent_span_id"] == "b7ad6b7169203331"
    assert trail["otel"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_kafka_consumer_root_with_captured_record(harness: TrailHarness) -> None:
    with harness.instrumented().kafka_consumer("payment.created", 2, parent=remote_parent()) as span:
        harness.processor.captures.update(
            span.get_span_context().span_id,
            "request",
            {"offset": 41, "key": "pay-123", "value": {"payment_id": "pay-123"}},
        )
    trail = harness.one()
    assert trail["entry"]["kind"] == "kafka"
    assert trail["request"] == {
        "action": "consume",
        "topic": "payment.created",
        "partition": 2,
        "offset": 41,
        "key": "pay-123",
        "value": {"payment_id": "pay-123"},
        "headers": {},
    }


def test_captured_payloads_are_merged_into_their_integration(harness: TrailHarness) -> None:
    inst = harness.instrumented("new")
    store = harness.processor.captures
    with inst.fastapi_request("POST", "/v1/payments", "/v1/payments", 201) as root:
        root_id = root.get_span_context().span_id
        store.update(
            root_id, "request", {"body": {"amount": 150000}, "headers": {"content-type": ["application/json"]}}
        )
        db = inst.sqlalchemy("INSERT INTO payments (id, amount) VALUES ($1, $2)")
        store.update(db.get_span_context().span_id, "request", {"args": ["pay-123", 150000]})
        store.update(db.get_span_context().span_id, "response", {"rows_affected": 1})
        cache = inst.redis("SET ? ?")
        store.update(cache.get_span_context().span_id, "request", {"key": "payment:pay-123"})
        store.update(cache.get_span_context().span_id, "response", {"status": "OK"})
        http = inst.httpx("POST", "https://api.midtrans.com/v2/charge", 201)
        store.put(http.get_span_context().span_id, "name", "midtrans.charge")
        kafka = inst.kafka_send("payment.created", 3)
        # The broker's acknowledgement (the offset) arrives after the span and the root ended.
        release = store.hold(kafka.get_span_context().span_id)
        assert release is not None
        store.update(root_id, "response", {"body": {"payment_id": "pay-123", "status": "PENDING"}})
    # The root has ended but the trail waits for the held payload.
    harness.settle(0.05)
    assert harness.exporter.get_finished_trails() == []
    # The HTTP response body arrives after the span ended, too.
    store.update(http.get_span_context().span_id, "response", {"body": {"transaction_id": "trx-456"}})
    store.update(kafka.get_span_context().span_id, "response", {"offset": 98123})
    release()
    release()  # twice is harmless
    trail = harness.one()
    assert trail["complete"] is True
    assert trail["request"]["body"] == {"amount": 150000}
    assert trail["request"]["headers"] == {"content-type": ["application/json"]}
    assert trail["response"]["body"] == {"payment_id": "pay-123", "status": "PENDING"}
    by_name = {i["name"]: i for i in trail["integrations"]}
    assert by_name["postgres.payments.insert"]["request"]["args"] == ["pay-123", 150000]
    assert by_name["postgres.payments.insert"]["response"] == {"rows_affected": 1}
    assert by_name["redis.set"]["request"] == {"command": "SET", "key": "payment:pay-123"}
    assert by_name["redis.set"]["response"] == {"status": "OK"}
    assert by_name["midtrans.charge"]["response"]["body"] == {"transaction_id": "trx-456"}
    assert by_name["payment.created"]["response"] == {"partition": 3, "offset": 98123}


def test_capture_for_a_span_outside_every_trail_is_refused(harness: TrailHarness) -> None:
    with harness.tracer().start_as_current_span("startup", kind=SpanKind.INTERNAL) as span:
        span_id = span.get_span_context().span_id
        assert harness.processor.captures.update(span_id, "request", {"x": 1}) is False
        assert harness.processor.captures.hold(span_id) is None
    assert harness.processor.stats()["captures.no_trail"] == 1


def test_held_payload_that_never_arrives_expires_with_the_grace(make_harness: Any) -> None:
    h = make_harness(grace_ms=50)
    with h.instrumented().fastapi_request("POST", "/p", "/p", 200):
        kafka = h.instrumented().kafka_send("t", 0)
        assert h.processor.captures.hold(kafka.get_span_context().span_id) is not None
    trail = h.one(timeout=2)
    assert trail["flush_reason"] == "grace_expired" and trail["complete"] is False


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("req-abc-123", "req-abc-123"),
        ("0af7651916cd43dd8448eb211c80319c", "0af7651916cd43dd8448eb211c80319c"),
        ("evil\r\nSet-Cookie: x", None),
        ("has space", None),
        ("x" * 129, None),
        ("", None),
        ("<script>", None),
    ],
)
def test_incoming_trace_and_request_ids_are_validated(harness: TrailHarness, header: str, expected: str | None) -> None:
    with harness.instrumented().fastapi_request("GET", "/", "/", 200) as root:
        harness.processor.captures.update(
            root.get_span_context().span_id,
            "request",
            {"headers": {"X-Trace-ID": [header], "x-request-id": [header]}},
        )
    trail = harness.one()
    otel_trace_id = trail["otel"]["trace_id"]
    assert trail["trace_id"] == (expected or otel_trace_id)
    assert trail["request_id"] == (expected or trail["trace_id"])


def test_request_id_defaults_to_incoming_trace_id(harness: TrailHarness) -> None:
    with harness.instrumented().fastapi_request("GET", "/", "/", 200) as root:
        harness.processor.captures.update(
            root.get_span_context().span_id, "request", {"headers": {"x-trace-id": ["flow-42"]}}
        )
    trail = harness.one()
    assert trail["trace_id"] == "flow-42" and trail["request_id"] == "flow-42"


def test_non_json_values_become_marked_json(harness: TrailHarness) -> None:
    class Opaque:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with harness.instrumented().fastapi_request("POST", "/", "/", 200) as root:
        harness.processor.captures.update(
            root.get_span_context().span_id,
            "request",
            {"body": {"raw": b"\xff\xfe", "text": b"ok", "nan": float("nan"), "set": {1}, "obj": Opaque(), 3: "int"}},
        )
        gt.set_metadata(big=2**70, nested=[[[]]])
    trail = harness.one()
    body = trail["request"]["body"]
    assert body["raw"] == {"$binary": {"size": 2, "sha256": hashlib.sha256(b"\xff\xfe").hexdigest()}}
    assert body["text"] == "ok" and body["nan"] == "nan" and body["set"] == [1] and body["3"] == "int"
    assert body["obj"]["$repr"].startswith("<unrepresentable Opaque")
    assert trail["metadata"] == {"big": str(2**70), "nested": [[[]]]}


def test_user_internal_spans_are_steps_and_instrumentation_noise_is_not(harness: TrailHarness) -> None:
    inst = harness.instrumented()
    app = harness.tracer("app.orders")
    with inst.fastapi_request("GET", "/o", "/o", 200):
        with app.start_as_current_span("LoadOrder", attributes={"order_id": "ord-1"}):
            inst.asgi_noise("GET /o", "http.disconnect")
        inst.background_task("audit")
        with harness.tracer("fastapi").start_as_current_span("fastapi.endpoint"):
            pass
        inst.sqlalchemy_connect()
        with app.start_as_current_span("call-partner", kind=SpanKind.CLIENT):
            pass
    trail = harness.one()
    assert [(s["name"], s.get("metadata")) for s in trail["internal_steps"]] == [("LoadOrder", {"order_id": "ord-1"})]
    assert [(i["type"], i["name"]) for i in trail["integrations"]] == [("custom", "call-partner")]


def test_span_names_alone_never_decide_the_type(harness: TrailHarness) -> None:
    inst = harness.instrumented()
    with inst.fastapi_request("GET", "/x", "/x", 200):
        inst.httpx("GET", "http://10.0.0.1:9000/a", 200)
        inst.redis("GET ?")
    trail = harness.one()
    assert [(i["type"], i["name"]) for i in trail["integrations"]] == [
        ("http", "GET 10.0.0.1/a"),
        ("cache", "redis.get"),
    ]


def test_config_overrides_service_and_environment(make_harness: Any) -> None:
    h = make_harness(service_name="billing", environment="staging")
    with h.instrumented().fastapi_request("GET", "/", "/", 200):
        pass
    trail = h.one()
    assert (trail["service"], trail["environment"]) == ("billing", "staging")


def test_fold_is_pure_and_deterministic(harness: TrailHarness) -> None:
    from gotrails_otel.fold import FoldInput, fold

    spans = []
    inst = harness.instrumented()
    with inst.fastapi_request("GET", "/", "/", 200) as root:
        spans.append(inst.redis("SET ? ?"))
    harness.one()
    readable_root = root  # the SDK span is a ReadableSpan; after end it is immutable
    data = FoldInput(root=readable_root, spans=spans, now_ns=0)  # type: ignore[arg-type]
    assert fold(data) == fold(data)
    assert fold(data)["integrations"][0]["name"] == "redis.set"
    assert trace.get_current_span() is trace.INVALID_SPAN
