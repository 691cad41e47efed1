"""``X-Trace-ID`` / ``X-Request-ID`` propagation, so that the trails of every service in one flow share a trace id.

:class:`GotrailsPropagator` is an OpenTelemetry ``TextMapPropagator`` (entry point ``gotrails``, usable as
``OTEL_PROPAGATORS=tracecontext,baggage,gotrails``; :func:`gotrails_otel.instrument` adds it to the global
propagator). On the way in it reads and validates ``X-Trace-ID`` and ``X-Request-ID`` from HTTP headers, gRPC
metadata and Kafka record headers and keeps them in the context; when ``X-Trace-ID`` is a 32-hex id and no
``traceparent`` came in, it also becomes the OpenTelemetry trace id. On the way out it sends the flow's ids with
every outgoing httpx request, gRPC call and Kafka message: the incoming ones, or the trail's own (its trace id).
"""

from __future__ import annotations

import re

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from .ids import trace_id_hex, valid_request_id

__all__ = ["REQUEST_ID_HEADER", "TRACE_ID_HEADER", "GotrailsPropagator", "current_ids"]

TRACE_ID_HEADER = "x-trace-id"
REQUEST_ID_HEADER = "x-request-id"
_TRACE_KEY = otel_context.create_key("gotrails-trace-id")
_REQUEST_KEY = otel_context.create_key("gotrails-request-id")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_ids = RandomIdGenerator()


def _get(getter: Getter[CarrierT], carrier: CarrierT, name: str) -> str | None:
    values = getter.get(carrier, name)
    if values is None and name != name.title():
        values = getter.get(carrier, name.title().replace("Id", "ID"))  # X-Trace-ID in case-sensitive carriers
    if not values:
        return None
    value = values[0] if isinstance(values, (list, tuple)) else values
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return valid_request_id(value)


def _carries(carrier: object, name: str) -> bool:
    """Whether an outgoing carrier (headers mapping, metadata, Kafka header list) already holds ``name``."""
    try:
        if isinstance(carrier, list):
            return any(isinstance(item, tuple) and str(item[0]).lower() == name for item in carrier)
        keys = carrier.keys() if hasattr(carrier, "keys") else ()
        return any(str(key).lower() == name for key in keys)
    except (TypeError, ValueError, IndexError):
        return False


def current_ids(context: otel_context.Context | None = None) -> tuple[str | None, str | None]:
    """The flow's ``(trace id, request id)`` in ``context``: the incoming ones, else the current trace's id."""
    trace_id = otel_context.get_value(_TRACE_KEY, context)
    request_id = otel_context.get_value(_REQUEST_KEY, context)
    if trace_id is None:
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            trace_id = trace_id_hex(span_context.trace_id)
    return (
        trace_id if isinstance(trace_id, str) else None,
        request_id if isinstance(request_id, str) else None,
    )


class GotrailsPropagator(TextMapPropagator):
    """Extracts and injects ``X-Trace-ID`` and ``X-Request-ID`` (validated: anything else is ignored)."""

    def extract(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> otel_context.Context:
        ctx = context if context is not None else otel_context.get_current()
        trace_id = _get(getter, carrier, TRACE_ID_HEADER)
        request_id = _get(getter, carrier, REQUEST_ID_HEADER)
        if trace_id is not None:
            ctx = otel_context.set_value(_TRACE_KEY, trace_id, ctx)
            lowered = trace_id.lower()
            incoming = trace.get_current_span(ctx).get_span_context()
            if not incoming.is_valid and _HEX32.fullmatch(lowered) and int(lowered, 16) != 0:
                # No traceparent came in: continue the caller's X-Trace-ID as the OpenTelemetry trace.
                parent = trace.SpanContext(
                    trace_id=int(lowered, 16),
                    span_id=_ids.generate_span_id(),
                    is_remote=True,
                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                )
                ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent), ctx)
        if request_id is not None:
            ctx = otel_context.set_value(_REQUEST_KEY, request_id, ctx)
        return ctx

    def inject(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        trace_id, request_id = current_ids(context)
        if trace_id is None:
            return
        # Ids the application set on this very request win: they are its own flow's.
        if not _carries(carrier, TRACE_ID_HEADER):
            setter.set(carrier, TRACE_ID_HEADER, trace_id)
        if not _carries(carrier, REQUEST_ID_HEADER):
            setter.set(carrier, REQUEST_ID_HEADER, request_id or trace_id)

    @property
    def fields(self) -> set[str]:
        return {TRACE_ID_HEADER, REQUEST_ID_HEADER}
