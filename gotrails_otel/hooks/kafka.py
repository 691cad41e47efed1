"""Kafka with kafka-python: produced messages as integrations, consumed records as trails of their own.

Producer: the produce hook records topic, key, value (decoded JSON when it is JSON) and headers (without trace
context). The partition and offset arrive from the broker after the PRODUCER span ended: :func:`install` wraps
``KafkaProducer.send`` to add a callback to the returned future, holding the trail open (within the grace period)
until the broker acknowledges, then records ``partition`` and ``offset`` (or the error).

Consumer: the instrumentation ends its CONSUMER span before ``__next__`` returns the record, so the application's
processing would fall outside it. With :func:`install`, ``for record in consumer:`` makes the record's CONSUMER span
current while the loop body runs — until the next record is fetched, or the consumer polls, commits or is closed —
so the DB writes, HTTP calls and steps of that iteration belong to that record's trail, which stays open for them
however long the processing takes (within ``GOTRAILS_MAX_AGE_MS``). For ``poll()`` loops (not instrumented by
OpenTelemetry) use :func:`kafka_record`::

    for records in consumer.poll(timeout_ms=500).values():
        for record in records:
            with gotrails_otel.kafka_record(record):
                handle(record)

:func:`install` must run after ``KafkaInstrumentor().instrument(...)`` so that its ``__next__`` wrapper is the outer
one (``gotrails_otel.instrument()`` and the auto-instrumentation do this in the right order).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from ..capture import MASK, PROPAGATION_HEADERS, SENSITIVE_HEADERS, Target, guard, target_for, then_release
from . import _wrap

__all__ = ["install", "instrumentor_kwargs", "kafka_record", "uninstall"]

_log = logging.getLogger("gotrails_otel")
_local = threading.local()
_STATE = "_gotrails_current"


def instrumentor_kwargs() -> dict[str, Any]:
    """Hook arguments for ``KafkaInstrumentor().instrument(...)``."""
    return {"produce_hook": produce_hook, "consume_hook": consume_hook}


# Calls that end the processing of the record fetched last by ``for record in consumer``.
_ENDS_PROCESSING = ("KafkaConsumer.close", "KafkaConsumer.poll", "KafkaConsumer.commit", "KafkaConsumer.commit_async")


def install() -> bool:
    """Offsets for produced messages and record-scoped processing for consumers (see the module doc)."""
    ok = _wrap.wrap("kafka", "KafkaProducer.send", _send)
    _wrap.wrap("kafka", "KafkaConsumer.__next__", _next)
    for name in _ENDS_PROCESSING:
        _wrap.wrap("kafka", name, _ends_processing)
    return ok


def uninstall() -> None:
    """Remove the wrappers."""
    for name in ("KafkaProducer.send", "KafkaConsumer.__next__", *_ENDS_PROCESSING):
        _wrap.unwrap("kafka", name)


def decode(value: Any) -> Any:
    """A key or value as the trail shows it: JSON when it parses, else text, else bytes (summarised at fold)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if raw[:1] in (b"{", b"[", b'"') or raw.strip().isdigit():
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass  # not JSON after all: text or binary below
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return value


def headers_of(headers: Any) -> dict[str, list[Any]]:
    """Record headers without trace context, secrets masked, values decoded."""
    result: dict[str, list[Any]] = {}
    for item in headers or ():
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        name = str(key)
        if name.lower() in PROPAGATION_HEADERS:
            continue
        result.setdefault(name, []).append(MASK if name.lower() in SENSITIVE_HEADERS else decode(value))
    return result


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], name: str, position: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


# --------------------------------------------------------------------------------------------- producer


@guard
def produce_hook(span: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Record the message being produced and hold the trail for the broker's acknowledgement."""
    target = target_for(span)
    if target is None:
        return
    topic = _arg(args, kwargs, "topic", 0)
    target.update(
        "request",
        {
            "action": "produce",
            "topic": topic,
            "key": decode(_arg(args, kwargs, "key", 2)),
            "value": decode(_arg(args, kwargs, "value", 1)),
            "headers": headers_of(_arg(args, kwargs, "headers", 3)),
        },
    )
    if _wrap.installed("kafka", "KafkaProducer.send"):
        _local.pending = (target, target.hold())


def _send(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _local.pending = None
    try:
        future = wrapped(*args, **kwargs)
    except BaseException:
        _settle_pending(None)
        raise
    _settle_pending(future)
    return future


@guard
def _settle_pending(future: Any) -> None:
    pending = getattr(_local, "pending", None)
    _local.pending = None
    if pending is None:
        return
    target, release = pending
    if future is None:
        if release is not None:
            release()
        return

    future.add_callback(then_release(release, lambda metadata: _acknowledged(target, metadata)))
    future.add_errback(then_release(release, lambda error: _failed(target, error)))


@guard
def _acknowledged(target: Target, metadata: Any) -> None:
    target.update("response", {"partition": metadata.partition, "offset": metadata.offset})


@guard
def _failed(target: Target, error: Any) -> None:
    target.put("error", {"message": str(error) or type(error).__name__, "type": type(error).__qualname__})


# --------------------------------------------------------------------------------------------- consumer


def _record_request(record: Any) -> dict[str, Any]:
    return {
        "action": "consume",
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": decode(record.key),
        "value": decode(record.value),
        "headers": headers_of(record.headers),
    }


@guard
def consume_hook(span: Any, record: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Record the consumed record as the trail's request; keep the trail open for its processing."""
    target = target_for(span)
    if target is None:
        return
    target.update("request", _record_request(record))
    if _wrap.installed("kafka", "KafkaConsumer.__next__"):
        # The record is being processed until the loop fetches the next one (or polls, commits, closes): its trail
        # stays open meanwhile, within the age limit, however long the processing takes.
        _local.consumed = (span.get_span_context(), target.hold(processing=True))


class _Current:
    """The record being processed by a consumer loop: its context token and the trail's hold."""

    __slots__ = ("release", "token")

    def __init__(self, token: object, release: Callable[[], None] | None) -> None:
        self.token = token
        self.release = release

    def finish(self) -> None:
        try:
            otel_context.detach(self.token)  # type: ignore[arg-type]
        except Exception:  # fetched from another context: the hold is released all the same
            _log.debug("gotrails: consumer context detached elsewhere", exc_info=True)
        if self.release is not None:
            self.release()
            self.release = None


def _finish_current(instance: Any) -> None:
    current: _Current | None = getattr(instance, _STATE, None)
    if current is not None:
        setattr(instance, _STATE, None)
        current.finish()


def _next(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _finish_current(instance)  # the previous record's processing is over
    _local.consumed = None
    record = wrapped(*args, **kwargs)
    _begin(instance)
    return record


@guard
def _begin(instance: Any) -> None:
    consumed = getattr(_local, "consumed", None)
    _local.consumed = None
    if consumed is None:
        return
    span_context, release = consumed
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
    setattr(instance, _STATE, _Current(token, release))


def _ends_processing(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _finish_current(instance)
    return wrapped(*args, **kwargs)


@contextlib.contextmanager
def kafka_record(record: Any) -> Iterator[None]:
    """Process one consumed record as its own trail (for ``poll()`` loops).

    Starts a CONSUMER span that continues the producer's trace from the record's headers, records the record as
    the trail's request, and makes everything inside the block part of that trail. An exception leaving the block
    marks the trail failed and propagates.
    """
    carrier = {}
    for item in getattr(record, "headers", None) or ():
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            key, value = item
            carrier[str(key)] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    parent = propagate.extract(carrier)
    tracer = trace.get_tracer("gotrails_otel")
    with tracer.start_as_current_span(
        f"{record.topic} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination": record.topic,
            "messaging.kafka.partition": record.partition,
            "messaging.kafka.offset": record.offset,
        },
    ) as span:
        target = target_for(span)
        if target is not None:
            _guarded_update(target, _record_request(record))
        yield


@guard
def _guarded_update(target: Target, request: dict[str, Any]) -> None:
    target.update("request", request)
