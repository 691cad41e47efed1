"""kafka-python against a real Kafka-protocol broker (Tansu): produced messages with offsets, consumed records
as trails whose processing belongs to them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import MessageSizeTooLargeError
from opentelemetry.instrumentation.kafka import KafkaInstrumentor
from opentelemetry.trace import SpanKind

import gotrails_otel as gt
from gotrails_otel.hooks import kafka as kafka_hooks

from .conftest import TrailHarness


@pytest.fixture
def instrumented(semconv: str) -> Iterator[str]:
    KafkaInstrumentor().instrument(**kafka_hooks.instrumentor_kwargs())
    kafka_hooks.install()  # after the instrumentor: its __next__ wrapper must be the outer one
    yield semconv
    kafka_hooks.uninstall()
    KafkaInstrumentor().uninstrument()


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER)


def _consumer(broker: Any, topic: str) -> KafkaConsumer:
    consumer = KafkaConsumer(bootstrap_servers=broker.url, consumer_timeout_ms=3000, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    return consumer


@pytest.mark.service
def test_produce_records_key_value_headers_partition_and_offset(
    harness: TrailHarness, instrumented: str, kafka_service: Any
) -> None:
    topic = f"payment.created.{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_service.url)
    with _root(harness):
        producer.send(
            topic,
            key=b"pay-123",
            value=json.dumps({"payment_id": "pay-123", "status": "PENDING"}).encode(),
            headers=[("x-request-id", b"req-5"), ("api-key", b"k-secret")],
            partition=0,
        )
        producer.send(topic, key=b"pay-124", value=b"\xff\x00binary", partition=0)
    # The root ended before the broker answered; the trail waits for the offsets.
    producer.flush()
    trail = harness.one()
    first, second = trail["integrations"]
    assert first["type"] == "kafka" and first["name"] == topic
    assert first["request"] == {
        "action": "produce",
        "topic": topic,
        "key": "pay-123",
        "value": {"payment_id": "pay-123", "status": "PENDING"},
        "headers": {"x-request-id": ["req-5"], "api-key": ["***"]},
    }
    assert first["response"] == {"partition": 0, "offset": 0}
    assert second["response"] == {"partition": 0, "offset": 1}
    assert second["request"]["value"]["$binary"]["size"] == 8
    assert trail["complete"] is True
    producer.close()


@pytest.mark.service
def test_produce_error(harness: TrailHarness, instrumented: str, kafka_service: Any) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_service.url, max_request_size=1024)
    with _root(harness), pytest.raises(MessageSizeTooLargeError):
        producer.send("too-big", value=b"x" * 4096)
    trail = harness.one()
    (item,) = trail["integrations"]
    assert item["error"]["type"].endswith("MessageSizeTooLargeError")
    assert trail["errors"][0]["source"] == "too-big"
    assert trail["complete"] is True  # the hold was released although send raised
    producer.close()


@pytest.mark.service
def test_consumer_loop_processing_belongs_to_the_record_trail(
    harness: TrailHarness, instrumented: str, kafka_service: Any
) -> None:
    topic = f"orders.{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_service.url)
    with _root(harness):
        producer.send(topic, key=b"o-1", value=b'{"order": 1}', partition=0, headers=[("x-trace-id", b"flow-77")])
        producer.send(topic, key=b"o-2", value=b'{"order": 2}', partition=0)
    producer.flush()
    producer_trail = harness.one()
    harness.exporter.clear()

    consumer = _consumer(kafka_service, topic)
    seen = []
    for record in consumer:
        with gt.step("HandleOrder"):
            gt.set_metadata(order=json.loads(record.value)["order"])
        seen.append(record.offset)
        if len(seen) == 2:
            break
    consumer.close()
    trails = sorted(harness.trails(2), key=lambda t: t["request"]["offset"])
    for offset, trail in enumerate(trails):
        assert trail["entry"]["kind"] == "kafka"
        assert trail["request"]["topic"] == topic and trail["request"]["offset"] == offset
        assert trail["request"]["value"] == {"order": offset + 1}
        assert [s["name"] for s in trail["internal_steps"]] == ["HandleOrder"]
        assert trail["metadata"] == {"order": offset + 1}
        assert trail["otel"]["trace_id"] == producer_trail["otel"]["trace_id"]
        assert trail["complete"] is True
    assert trails[0]["trace_id"] == "flow-77"  # the X-Trace-ID header travels with the record
    assert trails[0]["request"]["key"] == "o-1"


@pytest.mark.service
def test_poll_loop_with_kafka_record(harness: TrailHarness, instrumented: str, kafka_service: Any) -> None:
    topic = f"refunds.{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_service.url)
    producer.send(topic, key=b"r-1", value=b'{"refund": 1}', partition=0)
    producer.flush()
    producer.close()
    consumer = _consumer(kafka_service, topic)
    handled = 0
    for _ in range(20):
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                with gt.kafka_record(record), gt.step("Refund"):
                    handled += 1
        if handled:
            break
    consumer.close()
    trail = harness.one()
    assert trail["entry"] == {"kind": "kafka", "name": f"{topic} process"}
    assert trail["request"]["value"] == {"refund": 1}
    assert [s["name"] for s in trail["internal_steps"]] == ["Refund"]


@pytest.mark.service
def test_record_processing_longer_than_the_grace_stays_in_its_trail(
    make_harness: Any, instrumented: str, kafka_service: Any
) -> None:
    import time

    h = make_harness(grace_ms=200)
    topic = f"slow.{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_service.url)
    for n in range(2):
        producer.send(topic, key=f"k-{n}".encode(), value=b'{"slow": true}', partition=0)
    producer.flush()
    producer.close()
    consumer = _consumer(kafka_service, topic)
    for handled, record in enumerate(consumer, start=1):
        time.sleep(0.6)  # three times the grace period
        with gt.step("SlowHandler"):
            gt.set_metadata(key=record.key.decode())
        if handled == 2:
            break  # the first record's processing ended when the loop fetched the second
    time.sleep(0.6)  # the second record's processing is over only at close()
    consumer.close()
    trails = sorted(h.trails(2), key=lambda t: t["request"]["offset"])
    for n, trail in enumerate(trails):
        assert trail["flush_reason"] == "complete" and trail["complete"] is True
        assert [s["name"] for s in trail["internal_steps"]] == ["SlowHandler"]
        assert trail["metadata"] == {"key": f"k-{n}"}
    assert "spans.late" not in h.processor.stats()
