"""Types of the trail document for type checkers: :class:`Trail` and its nested entries.

They mirror the published JSON Schema (``gotrails-otel schema``, :func:`gotrails_otel.trail_schema`) key for key; a
test compares them with the schema so the two cannot drift apart. Keys a trail always has are required; keys that
appear only in some entries (a step's ``request``, an error's ``type``) are optional. Payloads whose shape depends
on the integration (an integration's ``request`` and ``response``, a step's payloads) are ``Any``.

Usage::

    from gotrails_otel.types import Trail

    def slow_integrations(trail: Trail) -> list[str]:
        return [i["name"] for i in trail["integrations"] if i["latency_ms"] > 100]
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "Entry",
    "EntryKind",
    "EntryPayload",
    "ErrorDetail",
    "ErrorEntry",
    "FlushReason",
    "Integration",
    "IntegrationType",
    "Integrity",
    "OTelIds",
    "Status",
    "Step",
    "Trail",
]

EntryKind = Literal["http", "grpc", "kafka", "task", "custom"]
"""What the request was: ``entry.kind``."""
IntegrationType = Literal["http", "kafka", "database", "cache", "grpc", "custom"]
"""An integration's ``type``."""
Status = Literal["ok", "error"]
"""Whether the request (``status``) or a step failed."""
FlushReason = Literal["complete", "grace_expired", "max_age", "capacity", "memory", "shutdown"]
"""Why the trail was flushed when it was: ``flush_reason`` (the values of the enum :class:`gotrails_otel.FlushReason`,
as they appear in the JSON)."""


class EntryPayload(TypedDict, total=False):
    """The ``request`` or ``response`` of the request itself; which keys are present depends on ``entry.kind``.

    HTTP: ``method, path, query, route, headers, body`` / ``status, headers, body``. gRPC: ``method, metadata,
    message`` / ``status_code, message``. Kafka consumer: ``action, topic, partition, offset, key, value, headers``.
    Celery task: ``action, task, id, args, kwargs, retries, queue, eta, headers`` / ``state, result``.
    """

    method: str | None
    path: str | None
    query: str | None
    route: str | None
    headers: dict[str, list[str]]
    body: Any
    status: int | None
    metadata: dict[str, Any]
    message: Any
    status_code: str | None
    action: str
    topic: str | None
    partition: int | None
    offset: int | None
    key: Any
    value: Any


class _ErrorDetailRequired(TypedDict):
    message: str


class ErrorDetail(_ErrorDetailRequired, total=False):
    """The ``error`` of a failed step or integration."""

    type: str


class _ErrorEntryRequired(TypedDict):
    source: str
    message: str


class ErrorEntry(_ErrorEntryRequired, total=False):
    """One entry of ``errors[]``: ``source`` is the step, integration or entry name (or a ``record_error`` source)."""

    type: str


class _StepRequired(TypedDict):
    name: str
    start_offset_ms: float
    latency_ms: float
    span_id: str | None
    parent_span_id: str | None
    status: Status


class Step(_StepRequired, total=False):
    """One entry of ``internal_steps[]``."""

    request: Any
    response: Any
    metadata: dict[str, Any]
    error: ErrorDetail


class Integration(TypedDict):
    """One entry of ``integrations[]``; ``request``/``response`` shapes depend on ``type`` (see the README)."""

    type: IntegrationType
    name: str
    start_offset_ms: float
    latency_ms: float
    request: Any
    response: Any
    error: ErrorDetail | None
    metadata: dict[str, Any]
    span_id: str | None
    parent_span_id: str | None


class Entry(TypedDict):
    """What started the trail: ``kind`` and the root span's name."""

    kind: EntryKind
    name: str


class OTelIds(TypedDict):
    """The OpenTelemetry ids of the request: trace, root span and the remote caller's span."""

    trace_id: str
    span_id: str | None
    parent_span_id: str | None


class _IntegrityRequired(TypedDict):
    chain: str
    seq: int
    prev: str
    alg: Literal["sha256", "hmac-sha256"]
    hash: str


class Integrity(_IntegrityRequired, total=False):
    """The trail's link in its writer's hash chain (``key_id`` only with an HMAC; see the README)."""

    key_id: str


class _TrailRequired(TypedDict):
    timestamp: str
    trace_id: str
    request_id: str
    service: str
    environment: str | None
    request: EntryPayload
    response: EntryPayload
    latency_ms: float
    internal_steps: list[Step]
    integrations: list[Integration]
    errors: list[ErrorEntry]
    metadata: dict[str, Any]
    version: Literal[1]
    entry: Entry
    status: Status
    complete: bool
    flush_reason: FlushReason
    dropped: dict[str, int]
    otel: OTelIds


class Trail(_TrailRequired, total=False):
    """One request's audit trail, as exported (version 1 of the document); ``integrity`` when the chain is on."""

    redacted: dict[str, int]
    """Values the masking policy masked, counted by kind (never the masked text)."""
    integrity: Integrity
    """The trail's link in its process's hash chain."""
