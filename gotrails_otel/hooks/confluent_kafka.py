"""Kafka with confluent-kafka: produced messages as integrations, consumed records as trails of their own — the
same trail shapes as kafka-python (topic, partition, offset, key, value, headers).

The contrib instrumentation replaces ``confluent_kafka.Producer``/``Consumer`` by subclasses whose ``produce``,
``poll`` and ``consume`` go through ``ConfluentKafkaInstrumentor.wrap_produce``/``wrap_poll``/``wrap_consume``. It
has no hooks, so :func:`install` wraps those three static methods:

* ``wrap_produce``: the driver call it makes inside its PRODUCER span is replaced by one that records topic, key,
  value (JSON decoded when it is JSON), headers (without trace context) and chains a delivery callback that records
  the partition and **offset** (or the error) when the application's ``poll()``/``flush()`` serves the broker's
  acknowledgement; the trail waits for it (within the grace period).
* ``wrap_poll``/``wrap_consume``: for each record (or batch) the instrumentation starts a ``recv`` CONSUMER span —
  the trail's root — and keeps a ``<topic> process`` span current until the next ``poll()``/``consume()`` or
  ``close()``, so the processing of the record belongs to its trail. gotrails records the record(s) as the trail's
  request. The instrumentation links (rather than parents) the producer's trace; an ``X-Trace-ID`` header still
  gives the trail the flow's trace id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..capture import Target, current_target, guard, target_for, then_release
from . import _wrap
from .kafka import decode, headers_of

__all__ = ["MAX_RECORDS", "install", "instrumentor_kwargs", "uninstall"]

MAX_RECORDS = 100
"""Records of one ``consume()`` batch kept in the trail; the rest are counted."""

_MODULE = "opentelemetry.instrumentation.confluent_kafka"
_PRODUCE = "ConfluentKafkaInstrumentor.wrap_produce"
_POLL = "ConfluentKafkaInstrumentor.wrap_poll"
_CONSUME = "ConfluentKafkaInstrumentor.wrap_consume"


def instrumentor_kwargs() -> dict[str, Any]:
    """Arguments for ``ConfluentKafkaInstrumentor().instrument(...)``: none are needed."""
    return {}


def install() -> bool:
    """Wrap the instrumentation's produce, poll and consume; ``False`` when it is not installed."""
    _drop_stale_wrappers()
    ok = _wrap.wrap(_MODULE, _PRODUCE, _wrap_produce)
    _wrap.wrap(_MODULE, _POLL, _wrap_receive)
    _wrap.wrap(_MODULE, _CONSUME, _wrap_receive)
    return ok


def uninstall() -> None:
    """Remove the wrappers."""
    for name in (_PRODUCE, _POLL, _CONSUME):
        _wrap.unwrap(_MODULE, name)


@guard
def _drop_stale_wrappers() -> None:
    """The instrumentation's ``uninstrument()`` leaves its ``consume``/``close`` wrappers on the consumer class, so
    instrumenting again stacks a second pair: each ``consume()`` would then open two spans and leak one context.
    Keep the outermost wrapper of each and cut out the stale copies below it."""
    import importlib

    consumer = getattr(importlib.import_module(_MODULE), "AutoInstrumentedConsumer", None)
    for name in ("consume", "close"):
        outer: Any = vars(consumer).get(name) if consumer is not None else None
        kind = getattr(getattr(outer, "_self_wrapper", None), "__name__", None)
        if kind is None:
            continue
        parent: Any = outer
        current: Any = outer.__wrapped__
        while hasattr(current, "_self_wrapper") and hasattr(current, "__wrapped__"):
            if getattr(current._self_wrapper, "__name__", None) == kind:
                parent.__wrapped__ = current.__wrapped__
            else:
                parent = current
            current = parent.__wrapped__


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], name: str, position: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def _headers(headers: Any) -> dict[str, list[Any]]:
    if isinstance(headers, dict):
        headers = list(headers.items())
    return headers_of(headers)


# --------------------------------------------------------------------------------------------- producer


def _wrap_produce(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 5:
        return wrapped(*args, **kwargs)
    func, producer, tracer, produce_args, produce_kwargs = args
    return wrapped(_producing(func), producer, tracer, produce_args, produce_kwargs)


def _producing(func: Callable[..., Any]) -> Callable[..., Any]:
    def produce(*args: Any, **kwargs: Any) -> Any:
        prepared = _prepare(args, kwargs)  # inside the instrumentation's PRODUCER span
        if prepared is None:
            return func(*args, **kwargs)
        target, release, args, kwargs = prepared
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            _failed(target, exc)
            if release is not None:
                release()
            raise

    return produce


@guard
def _prepare(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Target, Callable[[], None] | None, tuple[Any, ...], dict[str, Any]] | None:
    target = current_target()
    if target is None:
        return None
    topic = _arg(args, kwargs, "topic", 0)
    target.update(
        "request",
        {
            "action": "produce",
            "topic": topic,
            "key": decode(_arg(args, kwargs, "key", 2)),
            "value": decode(_arg(args, kwargs, "value", 1)),
            "headers": _headers(_arg(args, kwargs, "headers", 6)),
        },
    )
    release = target.hold()
    if len(args) > 4:  # produce(topic, value, key, partition, on_delivery, ...)
        args = (*args[:4], _delivered(target, release, args[4]), *args[5:])
    else:
        original = kwargs.get("on_delivery", kwargs.get("callback"))
        kwargs = {k: v for k, v in kwargs.items() if k != "callback"}
        kwargs["on_delivery"] = _delivered(target, release, original)
    return target, release, args, kwargs


def _delivered(
    target: Target, release: Callable[[], None] | None, original: Callable[..., Any] | None
) -> Callable[[Any, Any], None]:
    record = then_release(release, lambda report: _acknowledged(target, *report))

    def on_delivery(error: Any, message: Any) -> None:
        record((error, message))
        if original is not None:
            original(error, message)

    return on_delivery


@guard
def _acknowledged(target: Target, error: Any, message: Any) -> None:
    if error is not None:
        _failed(target, error)
        return
    target.update("response", {"partition": message.partition(), "offset": message.offset()})


@guard
def _failed(target: Target, error: Any) -> None:
    message = error.str() if hasattr(error, "str") else str(error)
    target.put("error", {"message": message or type(error).__name__, "type": type(error).__qualname__})


# --------------------------------------------------------------------------------------------- consumer


def _wrap_receive(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    if len(args) >= 2 and result:
        _received(args[1], result)
    return result


def _record(message: Any) -> dict[str, Any]:
    error = message.error()
    entry: dict[str, Any] = {
        "partition": message.partition(),
        "offset": message.offset(),
        "key": decode(message.key()),
        "value": decode(message.value()),
        "headers": _headers(message.headers()),
    }
    if error is not None:
        entry["error"] = error.str() if hasattr(error, "str") else str(error)
    return entry


@guard
def _received(consumer: Any, result: Any) -> None:
    span = getattr(consumer, "_current_consume_span", None)  # ``<topic> process``, current until the next poll
    parent = getattr(span, "parent", None)
    process = target_for(span)
    if process is None or parent is None:
        return
    root = Target(process.store, parent.span_id)  # the ``recv`` span: the trail's root
    messages = result if isinstance(result, list) else [result]
    first = messages[0]
    topic = first.topic()
    request: dict[str, Any] = {"action": "consume", "topic": topic}
    if isinstance(result, list):
        request["records"] = [_record(m) for m in messages[:MAX_RECORDS]]
        if len(messages) > MAX_RECORDS:
            request["records"].append({"$more_records": len(messages) - MAX_RECORDS})
        request["headers"] = request["records"][0]["headers"]
    else:
        request.update(_record(first))
    root.put("name", f"{topic} process")
    root.update("request", request)
