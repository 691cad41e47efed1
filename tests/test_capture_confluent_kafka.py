"""confluent-kafka against the real Kafka-protocol broker (Tansu): produced messages with their offsets, consumed
records as trails whose processing belongs to them — the same shapes as kafka-python — in this process and in a
worker under ``opentelemetry-instrument``."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor
from opentelemetry.trace import SpanKind

import gotrails_otel as gt
from gotrails_otel.hooks import confluent_kafka as ck_hooks

from .conftest import TrailHarness
from .processes import APPS, AppProcess, start_apps
from .services import free_port

pytestmark = pytest.mark.service

SECRETS = ("hunter2", "k-secret", "4111111111111111")


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    yield from start_apps(tmp_path)


@pytest.fixture
def instrumented(semconv: str) -> Iterator[str]:
    ConfluentKafkaInstrumentor().instrument()
    ck_hooks.install()
    yield semconv
    ck_hooks.uninstall()
    ConfluentKafkaInstrumentor().uninstrument()


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER)


def _producer(broker: Any, **config: Any) -> Any:
    return confluent_kafka.Producer({"bootstrap.servers": broker.url, "linger.ms": 0, **config})


def _consumer(broker: Any, topic: str) -> Any:
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": broker.url, "group.id": f"g-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    return consumer


def _no_secrets(trails: list[dict[str, Any]]) -> None:
    text = json.dumps(trails)
    for secret in SECRETS:
        assert secret not in text, secret


def test_produce_records_key_value_headers_partition_and_offset(
    harness: TrailHarness, instrumented: str, kafka_service: Any
) -> None:
    topic = f"payment.created.{uuid.uuid4().hex[:8]}"
    producer = _producer(kafka_service)
    delivered: list[int] = []
    with _root(harness):
        producer.produce(
            topic,
            key=b"pay-123",
            value=json.dumps({"payment_id": "pay-123", "password": "hunter2", "card": "4111111111111111"}).encode(),
            headers=[("x-request-id", b"req-5"), ("api-key", b"k-secret")],
            partition=0,
            on_delivery=lambda error, message: delivered.append(message.offset()),
        )
        # positional value, key, partition and delivery callback
        producer.produce(topic, b"\xff\x00binary", b"pay-124", 0, lambda error, message: delivered.append(-1))
    # The root ended before the broker answered; the trail waits for the offsets (served by flush()).
    assert producer.flush(10) == 0
    assert delivered == [0, -1]  # the application's own delivery callbacks still run
    trail = harness.one()
    first, second = trail["integrations"]
    assert first["type"] == "kafka" and first["name"] == topic
    assert first["request"] == {
        "action": "produce",
        "topic": topic,
        "key": "pay-123",
        "value": {"payment_id": "pay-123", "password": "***", "card": "***"},
        "headers": {"x-request-id": ["req-5"], "api-key": ["***"]},
    }
    assert first["response"] == {"partition": 0, "offset": 0}
    assert second["request"]["key"] == "pay-124"
    assert second["request"]["value"]["$binary"]["size"] == 8
    assert second["response"] == {"partition": 0, "offset": 1}
    assert trail["complete"] is True
    _no_secrets([trail])


def test_produce_error(harness: TrailHarness, instrumented: str, kafka_service: Any) -> None:
    producer = _producer(kafka_service, **{"message.max.bytes": 1000})
    with _root(harness), pytest.raises(confluent_kafka.KafkaException):
        producer.produce("too-big", value=b"x" * 4096)
    trail = harness.one()
    (item,) = trail["integrations"]
    assert item["error"]["type"] == "KafkaException"
    assert "too large" in item["error"]["message"].lower()
    assert trail["errors"][0]["source"] == "too-big"
    assert trail["complete"] is True  # the hold was released although produce raised


def test_consumer_poll_loop_processing_belongs_to_the_record_trail(
    harness: TrailHarness, instrumented: str, kafka_service: Any
) -> None:
    topic = f"orders.{uuid.uuid4().hex[:8]}"
    producer = _producer(kafka_service)
    producer.produce(topic, key=b"o-1", value=b'{"order": 1}', partition=0, headers=[("x-trace-id", b"flow-77")])
    producer.produce(topic, key=b"o-2", value=b'{"order": 2, "password": "hunter2"}', partition=0)
    assert producer.flush(10) == 0
    harness.settle(0.05)
    harness.exporter.clear()  # the producer made no trail outside a request; nothing from it is kept

    consumer = _consumer(kafka_service, topic)
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        record = consumer.poll(0.5)
        if record is None or record.error():
            continue
        with gt.step("HandleOrder"):
            gt.set_metadata(order=json.loads(record.value())["order"])
        seen.append(record.offset())
    consumer.close()
    assert seen == [0, 1]
    trails = sorted(harness.trails(2), key=lambda t: t["request"]["offset"])
    for offset, trail in enumerate(trails):
        assert trail["entry"] == {"kind": "kafka", "name": f"{topic} process"}
        assert trail["request"]["action"] == "consume"
        assert trail["request"]["topic"] == topic and trail["request"]["partition"] == 0
        assert trail["request"]["offset"] == offset
        assert trail["request"]["key"] == f"o-{offset + 1}"
        assert trail["request"]["value"]["order"] == offset + 1
        assert [s["name"] for s in trail["internal_steps"]] == ["HandleOrder"]
        assert trail["metadata"] == {"order": offset + 1}
        assert trail["complete"] is True
    assert trails[0]["trace_id"] == "flow-77"  # the X-Trace-ID header travels with the record
    assert trails[1]["request"]["value"]["password"] == "***"
    _no_secrets(trails)


def test_consume_batches_are_trails(harness: TrailHarness, instrumented: str, kafka_service: Any) -> None:
    topic = f"refunds.{uuid.uuid4().hex[:8]}"
    producer = _producer(kafka_service)
    for n in range(3):
        producer.produce(topic, key=f"r-{n}".encode(), value=json.dumps({"refund": n}).encode(), partition=0)
    assert producer.flush(10) == 0
    consumer = _consumer(kafka_service, topic)
    batches: list[list[Any]] = []
    deadline = time.monotonic() + 30
    while sum(len(b) for b in batches) < 3 and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=3, timeout=1)
        if batch:
            with gt.step("Refund"):  # processing of this batch: part of its trail
                batches.append(batch)
    consumer.close()
    trails = sorted(harness.trails(len(batches)), key=lambda t: t["request"]["records"][0]["offset"])
    records = [record for trail in trails for record in trail["request"]["records"]]
    assert [r["value"] for r in records] == [{"refund": 0}, {"refund": 1}, {"refund": 2}]
    for trail in trails:
        assert trail["request"]["action"] == "consume" and trail["request"]["topic"] == topic
        assert [s["name"] for s in trail["internal_steps"]] == ["Refund"]


def test_instrumenting_again_leaves_one_consume_wrapper(instrumented: str) -> None:
    # The contrib uninstrument() leaves consume()/close() wrapped; install() cuts out the stale copies.
    for name in ("consume", "close"):
        wrapper = vars(confluent_kafka.Consumer)[name]
        depth = 0
        while hasattr(wrapper, "__wrapped__"):
            depth, wrapper = depth + 1, wrapper.__wrapped__
        assert depth == 1, name


def test_worker_under_opentelemetry_instrument(apps: Callable[..., AppProcess], kafka_service: Any) -> None:
    topic = f"payment.created.{uuid.uuid4().hex[:8]}"
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_service.url})
    producer.produce(
        topic,
        key=b"pay-123",
        value=b'{"payment_id": "pay-123", "card_number": "4111111111111111"}',
        partition=0,
        headers=[("x-trace-id", b"flow-ck-1")],
    )
    assert producer.flush(10) == 0
    port = free_port()
    env = {"KAFKA": kafka_service.url, "TOPIC": topic, "HEALTH_PORT": str(port)}
    worker = apps([sys.executable, str(APPS / "confluent_worker.py")], env, name="worker", port=port)
    (trail,) = worker.trails(1, timeout=30)
    assert trail["entry"] == {"kind": "kafka", "name": f"{topic} process"}
    assert trail["trace_id"] == "flow-ck-1"
    assert trail["request"]["offset"] == 0 and trail["request"]["key"] == "pay-123"
    assert trail["request"]["value"] == {"payment_id": "pay-123", "card_number": "***"}
    assert [s["name"] for s in trail["internal_steps"]] == ["HandlePaymentCreated"]
    assert trail["metadata"] == {"key": "pay-123"}
    (ack,) = trail["integrations"]  # produced while handling the record: part of its trail
    assert ack["type"] == "kafka" and ack["name"] == f"{topic}.ack"
    assert ack["request"]["key"] == "pay-123" and ack["request"]["value"] == {"ack": True}
    assert ack["response"] == {"partition": 0, "offset": 0}
    _no_secrets([trail])
