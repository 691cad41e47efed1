"""``SpanRecord``: what the fold needs of an ended span, kept instead of the SDK's ``ReadableSpan``."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["SpanRecord"]

# Estimated bytes held per record, per attribute and per event (measured with tracemalloc on CPython 3.11; the
# strings themselves are shared with the instrumentation and mostly small). Used for GOTRAILS_MAX_BUFFER_BYTES.
_RECORD_BYTES = 560
_ATTRIBUTE_BYTES = 110
_EVENT_BYTES = 400


class SpanRecord:
    """What the fold needs of an ended span.

    A ReadableSpan carries locks and bounded containers for its attributes and events; holding thousands of them
    until their requests end keeps the garbage collector busy. This record holds plain values (its attribute dict
    holds atomic values only, which the collector does not track) and lets the ReadableSpan go at once.
    """

    __slots__ = (
        "attributes",
        "context",
        "end_time",
        "events",
        "instrumentation_scope",
        "kind",
        "name",
        "parent",
        "resource",
        "size",
        "start_time",
        "status",
    )

    def __init__(self, span: ReadableSpan) -> None:
        fields = getattr(span, "__dict__", None)
        if fields is None or "_instrumentation_scope" not in fields:
            # Not the SDK's ReadableSpan: its public fields, under the names the SDK keeps them by.
            fields = {
                "_attributes": getattr(span, "_attributes", None),
                "_context": span.context,
                "_parent": span.parent,
                "_name": span.name,
                "_kind": span.kind,
                "_start_time": span.start_time,
                "_end_time": span.end_time,
                "_status": span.status,
                "_events": getattr(span, "_events", None),
                "_instrumentation_scope": span.instrumentation_scope,
                "_resource": span.resource,
            }
        # The SDK's ReadableSpan (made for each ended span) has its fields read directly, not through a property
        # each: this runs on the request thread, once per span.
        inner = getattr(fields["_attributes"], "_dict", None)
        attributes: dict[str, Any] = dict(inner) if type(inner) is dict else dict(span.attributes or {})
        self.context = fields["_context"]
        self.parent = fields["_parent"]
        self.name = fields["_name"]
        self.kind = fields["_kind"]
        self.start_time = fields["_start_time"]
        self.end_time = fields["_end_time"]
        self.status = fields["_status"]
        events = fields["_events"]
        self.instrumentation_scope = fields["_instrumentation_scope"]
        self.resource = fields["_resource"]
        self.attributes = attributes
        self.events = tuple(events) if events else ()
        self.size = _RECORD_BYTES + _ATTRIBUTE_BYTES * len(attributes) + _EVENT_BYTES * len(self.events)
