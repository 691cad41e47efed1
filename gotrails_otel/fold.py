"""The fold: a pure function from one request's spans and captured payloads to one trail document.

Spans are classified by instrumentation scope, span kind and attributes (never by name alone: ``GET`` is both an
httpx and a Redis span), reading both the old and the new semantic-convention keys (:mod:`gotrails_otel.semconv`).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from . import semconv as sc
from ._json import PLAIN, json_safe
from .ids import span_id_hex, trace_id_hex, valid_request_id
from .records import SpanRecord

__all__ = ["TRAIL_VERSION", "FoldInput", "fold"]

TRAIL_VERSION = 1
SCOPE = "gotrails_otel"
"""Instrumentation scope of the spans made by gotrails' own API (steps and custom integrations)."""
ATTR_ROLE = "gotrails.role"
"""``step`` or ``integration`` on spans made by gotrails' API."""
ATTR_INTEGRATION_TYPE = "gotrails.integration.type"

INTEGRATION_TYPES = ("http", "kafka", "database", "cache", "grpc", "custom")
# Scopes whose INTERNAL spans are plumbing (ASGI send/receive, background-task wrappers, framework internals).
_NOISE_SCOPE_PREFIXES = ("opentelemetry.instrumentation.", "fastapi", "starlette")
_SQL_TABLE = re.compile(
    r"""\b(?:into|from|update|table|join)\s+(?:only\s+|if\s+(?:not\s+)?exists\s+)?
        ((?:[`"\[]?[\w$]+[`"\]]?\.)?[`"\[]?[\w$]+[`"\]]?)""",
    re.IGNORECASE | re.VERBOSE,
)
_T = TypeVar("_T")
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Leading /* comments */ skipped; each comment matched one way only (no nested quantifier to backtrack through).
_SQL_FIRST_WORD = re.compile(r"\A\s*(?:/\*[^*]*\*+(?:[^/*][^*]*\*+)*/\s*)*([A-Za-z]+)")


@dataclass(frozen=True)
class FoldInput:
    """Everything the fold needs about one trail. Built by the processor; tests may build it directly.

    ``captures`` maps a span id to the payloads hooks captured for that span (keys ``request``, ``response``,
    ``metadata``, ``error``, ``name``, and on the root ``trace_id``/``request_id``). ``errors`` holds
    ``record_error`` entries (``source``, ``message``, ``type``, ``time_ns``).
    """

    root: ReadableSpan
    spans: Sequence[ReadableSpan] = ()
    captures: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    errors: Sequence[Mapping[str, Any]] = ()
    flush_reason: str = "complete"
    open_spans: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    now_ns: int = 0
    service_name: str | None = None
    environment: str | None = None
    http_names: tuple[tuple[str, str], ...] = ()
    raw: bool = False
    """Put captured payloads into the trail as the capture store keeps them (plain containers, atomic values,
    captured bodies not decoded yet) instead of converting them to JSON types in the fold: the masking policy's
    walk (:meth:`Policy.apply <gotrails_otel.redact.Policy.apply>`, which must follow) converts them as it masks
    and limits them, in one pass. Only what the policy reads before its walk (headers, task arguments, cache
    commands) is converted in the fold. The flush pipeline sets it unless a custom field rule is configured."""


def fold(data: FoldInput) -> dict[str, Any]:
    """Fold one request into its trail document (JSON-safe types only; see ``FoldInput.raw`` for the exception)."""
    raw = data.raw
    root = data.root
    root_ctx = root.context
    attrs = _attrs(root)
    root_start = root.start_time or 0
    root_end = root.end_time or max(data.now_ns, root_start)
    root_capture = data.captures.get(root_ctx.span_id, _EMPTY) if root_ctx else _EMPTY
    resource = root.resource.attributes if root.resource else {}

    entry_kind = _entry_kind(root, attrs)
    merge = _merge_raw if raw else _merge
    request, response = _entry(entry_kind, root, attrs, root_capture, merge)
    entry_name = str(root_capture.get("name") or root.name)

    steps: list[dict[str, Any]] = []
    integrations: list[dict[str, Any]] = []
    errors: list[tuple[int, dict[str, Any]]] = []
    statements: dict[tuple[int, Any], tuple[int, int]] = {}
    orm_connects: set[int] = set()
    for span in sorted(data.spans, key=_start_key):
        span_attrs = _attrs(span)
        role = _classify(span, span_attrs)
        if span.context is None:
            continue
        if role is None:
            if span.name == "connect" and _scope(span) == _SQLALCHEMY_SCOPE:
                orm_connects.add(span.context.span_id)
            continue
        if role == "database" and _same_statement(span, span_attrs, statements, orm_connects):
            continue
        capture = data.captures.get(span.context.span_id, _EMPTY)
        common = _common(span, span_attrs, role, root_start, capture, data.http_names)
        error = _span_error(span, span_attrs, capture, role)
        if role == "step":
            steps.append(_step(span_attrs, common, capture, error, raw))
        else:
            integrations.append(_integration(role, span, span_attrs, common, capture, error, merge))
        if error is not None:
            errors.append((_error_time(span), {"source": common["name"], **error}))

    root_error = _span_error(root, attrs, root_capture, entry_kind)
    if root_error is not None:
        errors.append((_error_time(root), {"source": entry_name, **root_error}))
    for recorded in data.errors:
        item = {k: json_safe(v) for k, v in recorded.items() if k != "time_ns" and v is not None}
        errors.append((int(recorded.get("time_ns") or root_end), item))
    errors.sort(key=lambda pair: pair[0])

    otel_trace_id = trace_id_hex(root_ctx.trace_id) if root_ctx else "0" * 32
    trace_id = valid_request_id(root_capture.get("trace_id")) or _header_id(request, "x-trace-id") or otel_trace_id
    request_id = valid_request_id(root_capture.get("request_id")) or _header_id(request, "x-request-id") or trace_id
    metadata = dict(data.metadata) if raw and type(data.metadata) is dict else json_safe(dict(data.metadata))
    dropped = {k: v for k, v in data.dropped.items() if v}
    if data.open_spans:
        dropped["open_spans"] = data.open_spans

    return {
        "timestamp": _rfc3339(root_start),
        "trace_id": trace_id,
        "request_id": request_id,
        "service": data.service_name or _str(resource.get("service.name")) or "unknown_service",
        "environment": data.environment
        or _str(resource.get("deployment.environment.name"))
        or _str(resource.get("deployment.environment")),
        "request": request,
        "response": response,
        "latency_ms": _ms(root_end - root_start),
        "internal_steps": steps,
        "integrations": integrations,
        "errors": [item for _, item in errors],
        "metadata": metadata,
        "version": TRAIL_VERSION,
        "entry": {"kind": entry_kind, "name": entry_name},
        "status": "error" if root_error is not None else "ok",
        "complete": data.flush_reason == "complete" and not data.open_spans,
        "flush_reason": data.flush_reason,
        "dropped": dropped,
        "otel": {
            "trace_id": otel_trace_id,
            "span_id": span_id_hex(root_ctx.span_id) if root_ctx else None,
            "parent_span_id": span_id_hex(root.parent.span_id) if root.parent else None,
        },
    }


def _classify(span: ReadableSpan, attrs: Mapping[str, Any]) -> str | None:
    """``step``, an integration type, or ``None`` for instrumentation noise that is not part of the trail."""
    scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
    if scope == SCOPE:
        if attrs.get(ATTR_ROLE) == "integration":
            kind = attrs.get(ATTR_INTEGRATION_TYPE)
            return kind if kind in INTEGRATION_TYPES else "custom"
        return "step"
    if span.kind in (SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CONSUMER):
        if scope.startswith(_NOISE_SCOPE_PREFIXES):
            return None
        if span.kind == SpanKind.INTERNAL:
            return "step"
    if attrs.get("rpc.system") == "grpc":
        return "grpc"
    messaging = sc.first(attrs, sc.MESSAGING_SYSTEM)
    if messaging is not None or "kafka" in scope:
        return "kafka" if messaging in (None, "kafka") else "custom"
    db_system = sc.first(attrs, sc.DB_SYSTEM)
    if db_system is not None:
        if sc.first(attrs, sc.DB_STATEMENT) is None and span.name == "connect":
            return None  # SQLAlchemy's pool connect span
        return "cache" if db_system in sc.CACHE_SYSTEMS else "database"
    if sc.first(attrs, sc.HTTP_METHOD) is not None:
        return "http"
    if span.kind in (SpanKind.SERVER, SpanKind.CONSUMER):
        return "step"
    return "custom"


_SQLALCHEMY_SCOPE = "opentelemetry.instrumentation.sqlalchemy"
_CELERY_SCOPE = "opentelemetry.instrumentation.celery"


def _scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


def _same_statement(
    span: ReadableSpan,
    attrs: Mapping[str, Any],
    statements: dict[tuple[int, Any], tuple[int, int]],
    orm_connects: set[int],
) -> bool:
    """Whether this database span repeats one already in the trail: a driver's span (psycopg, sqlite3) for the
    statement SQLAlchemy is running (a sibling with the same statement that starts within SQLAlchemy's span), or a
    statement the driver runs while SQLAlchemy connects (dialect set-up). Records the span otherwise."""
    parent = span.parent.span_id if span.parent is not None else 0
    if parent in orm_connects:
        return True
    key = (parent, sc.first(attrs, sc.DB_STATEMENT))
    start = span.start_time or 0
    window = statements.get(key)
    if window is not None and window[0] <= start <= window[1]:
        return True
    statements[key] = (start, span.end_time or start)
    return False


# ----------------------------------------------------------------------------------------------- entry


def _entry_kind(root: ReadableSpan, attrs: Mapping[str, Any]) -> str:
    if _scope(root) == _CELERY_SCOPE:
        return "task"  # a Celery task run (its attributes name the broker queue as a messaging destination)
    if attrs.get("rpc.system") == "grpc":
        return "grpc"
    if sc.first(attrs, sc.HTTP_METHOD) is not None:
        return "http"
    if sc.first(attrs, sc.MESSAGING_SYSTEM) is not None or root.kind == SpanKind.CONSUMER:
        return "kafka"
    return "custom"


def _entry(
    kind: str, root: ReadableSpan, attrs: Mapping[str, Any], capture: Mapping[str, Any], merge: _Merge
) -> tuple[dict[str, Any], dict[str, Any]]:
    if kind == "http":
        target = sc.first(attrs, sc.HTTP_TARGET)
        path = sc.first(attrs, sc.URL_PATH)
        query = sc.first(attrs, sc.URL_QUERY)
        if target is not None and (path is None or query is None):
            split_path, _, split_query = str(target).partition("?")
            path = path if path is not None else split_path
            query = query if query is not None else (split_query or None)
        if path is None and (url := sc.first(attrs, sc.HTTP_URL)) is not None:
            parts = urlsplit(str(url))
            path, query = parts.path, query or parts.query or None
        request: dict[str, Any] = {
            "method": sc.first(attrs, sc.HTTP_METHOD),
            "path": path,
            "query": query,
            "route": sc.first(attrs, sc.HTTP_ROUTE),
            "headers": sc.header_attributes(attrs, "http.request.header."),
            "body": None,
        }
        response: dict[str, Any] = {
            "status": sc.as_int(sc.first(attrs, sc.HTTP_STATUS)),
            "headers": sc.header_attributes(attrs, "http.response.header."),
            "body": None,
        }
    elif kind == "grpc":
        request = {"method": _grpc_full_method(root, attrs), "metadata": {}, "message": None}
        response = {"status_code": _grpc_status(attrs), "message": None}
    elif kind == "kafka":
        request = _kafka_request(attrs, "consume")
        response = {}
    else:
        request, response = {}, {}
    return merge(request, capture.get("request")), merge(response, capture.get("response"))


def _header_id(request: Mapping[str, Any], name: str) -> str | None:
    """An incoming id from HTTP headers, gRPC metadata or Kafka record headers (validated)."""
    for part in ("headers", "metadata"):
        headers = request.get(part)
        if headers is None or (type(headers) is not dict and not isinstance(headers, Mapping)):
            continue
        for key, value in headers.items():
            if isinstance(key, str) and key.lower() == name:
                return valid_request_id(value)
    return None


# ------------------------------------------------------------------------------ steps and integrations


def _common(
    span: ReadableSpan,
    attrs: Mapping[str, Any],
    role: str,
    root_start: int,
    capture: Mapping[str, Any],
    http_names: tuple[tuple[str, str], ...],
) -> dict[str, Any]:
    start = span.start_time or root_start
    end = span.end_time or start
    ctx = span.context
    parent = span.parent
    name = capture.get("name")
    return {
        "name": str(name) if name else _default_name(span, attrs, role, http_names),
        "start_offset_ms": _ms(start - root_start),
        "latency_ms": _ms(end - start),
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
    }


def _step(
    attrs: Mapping[str, Any],
    common: dict[str, Any],
    capture: Mapping[str, Any],
    error: dict[str, Any] | None,
    raw: bool = False,
) -> dict[str, Any]:
    step = {**common, "status": "error" if error else "ok"}
    for key in ("request", "response"):
        if key in capture:
            step[key] = _merge_raw({}, capture[key]) if raw else json_safe(capture[key])
    attributes = {k: v for k, v in attrs.items() if not k.startswith(("gotrails.", "code."))}
    if raw:  # attribute values are atomic or tuples of them: the policy's walk makes the tuples lists
        metadata = _merge_raw(attributes, capture.get("metadata"))
    else:
        metadata = _merge(json_safe(attributes) if attributes else {}, capture.get("metadata"))
    if metadata:
        step["metadata"] = metadata
    if error:
        step["error"] = error
    return step


def _integration(
    kind: str,
    span: ReadableSpan,
    attrs: Mapping[str, Any],
    common: dict[str, Any],
    capture: Mapping[str, Any],
    error: dict[str, Any] | None,
    merge: _Merge | None = None,
) -> dict[str, Any]:
    if merge is None or kind == "cache":  # the policy reads a cache call's commands and replies before its walk
        merge = _merge
    if span.instrumentation_scope is not None and span.instrumentation_scope.name == SCOPE:
        # Made with ``integration()``: the caller sets request and response; no attribute-derived defaults.
        request: dict[str, Any] = {}
        response: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
    else:
        request, response, metadata = _integration_payloads(kind, span, attrs)
    return {
        "type": kind,
        **common,
        "request": merge(request, capture.get("request")),
        "response": merge(response, capture.get("response")),
        "error": error,
        "metadata": merge(metadata, capture.get("metadata")),
    }


def _integration_payloads(
    kind: str, span: ReadableSpan, attrs: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    if kind == "http":
        return (
            {
                "method": sc.first(attrs, sc.HTTP_METHOD),
                "url": sc.first(attrs, sc.HTTP_URL),
                "headers": sc.header_attributes(attrs, "http.request.header."),
                "body": None,
            },
            {
                "status": sc.as_int(sc.first(attrs, sc.HTTP_STATUS)),
                "headers": sc.header_attributes(attrs, "http.response.header."),
                "body": None,
            },
            {},
        )
    if kind == "database":
        rows = sc.as_int(sc.first(attrs, sc.DB_ROWS))
        return (
            {"query": sc.first(attrs, sc.DB_STATEMENT), "args": None},
            {"rows_affected": rows},
            _drop_none({"system": sc.first(attrs, sc.DB_SYSTEM), "namespace": sc.first(attrs, sc.DB_NAMESPACE)}),
        )
    if kind == "cache":
        commands = _redis_commands(span, attrs)
        return (
            {"command": " ".join(commands) if commands else None, "key": None},
            {"status": None},
            _drop_none(
                {
                    "system": sc.first(attrs, sc.DB_SYSTEM),
                    "pipeline_length": len(commands) if len(commands) > 1 else None,
                }
            ),
        )
    if kind == "grpc":
        return (
            {"method": _grpc_full_method(span, attrs), "metadata": {}, "message": None},
            {"status_code": _grpc_status(attrs), "message": None},
            {},
        )
    if kind == "kafka":
        action = "consume" if span.kind == SpanKind.CONSUMER else "produce"
        request = _kafka_request(attrs, action)
        response = {"partition": request.pop("partition"), "offset": request.pop("offset")}
        return request, response, {}
    return {}, {}, {}


def _default_name(
    span: ReadableSpan, attrs: Mapping[str, Any], role: str, http_names: tuple[tuple[str, str], ...] = ()
) -> str:
    if role == "http":
        url = sc.first(attrs, sc.HTTP_URL)
        if http_names and url is not None and (logical := _cached(_http_logical_name, str(url), http_names)):
            return logical
        return _http_name(attrs) or span.name
    if role == "database":
        return _db_name(attrs)
    if role == "cache":
        commands = _redis_commands(span, attrs)
        system = str(sc.first(attrs, sc.DB_SYSTEM) or "cache")
        if len(commands) > 1:
            return f"{system}.pipeline"
        return f"{system}.{commands[0].lower()}" if commands else span.name
    if role == "grpc":
        service = str(sc.first(attrs, sc.RPC_SERVICE) or "")
        method = sc.first(attrs, sc.RPC_METHOD)
        if service and method:
            return f"{service.rsplit('.', 1)[-1]}.{method}"
        full = span.name.strip("/").split("/")
        return f"{full[0].rsplit('.', 1)[-1]}.{full[1]}" if len(full) == 2 else span.name
    if role == "kafka":
        destination = sc.first(attrs, sc.MESSAGING_DESTINATION)
        if destination is not None:
            return str(destination)
        # "<topic> send" when the send failed before the instrumentation set its attributes
        topic, _, operation = span.name.rpartition(" ")
        return topic if topic and operation in ("send", "receive", "process", "publish") else span.name
    return span.name


def _http_name(attrs: Mapping[str, Any]) -> str | None:
    url = sc.first(attrs, sc.HTTP_URL)
    return None if url is None else _cached(_http_name_of, sc.first(attrs, sc.HTTP_METHOD), url)


@functools.lru_cache(maxsize=2048)
def _http_name_of(method: Any, url: Any) -> str | None:
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
    except ValueError:
        return None
    return f"{method} {host}{parts.path or '/'}" if method else f"{host}{parts.path or '/'}"


@functools.lru_cache(maxsize=2048)
def _http_logical_name(url: str, http_names: tuple[tuple[str, str], ...]) -> str | None:
    """The configured name of the first pattern matching ``host/path`` or the host of ``url``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    target = f"{host}{parts.path or '/'}"
    for pattern, name in http_names:
        low = pattern.lower()
        if fnmatch.fnmatchcase(target, low) or fnmatch.fnmatchcase(host, low) or fnmatch.fnmatchcase(url, pattern):
            return name
    return None


def _db_name(attrs: Mapping[str, Any]) -> str:
    key = (
        str(sc.first(attrs, sc.DB_SYSTEM) or "db"),
        sc.first(attrs, sc.DB_STATEMENT),
        sc.first(attrs, sc.DB_OPERATION),
        sc.first(attrs, sc.DB_TABLE),
    )
    return _cached(_db_name_of, *key)


@functools.lru_cache(maxsize=2048)
def _db_name_of(system: str, statement: Any, operation: Any, table: Any) -> str:
    """``<system>.<table>.<operation>``; cached, as an application runs the same statements again and again."""
    system = sc.DB_SYSTEM_NAMES.get(system, system)
    # The SQLAlchemy instrumentation sets db.operation to its span name ("INSERT mydb"): keep the first word.
    words = str(operation).split() if operation is not None else []
    operation = words[0] if words else None
    if operation is None and statement is not None and (word := _SQL_FIRST_WORD.match(str(statement))):
        operation = word.group(1)
    if table is None and statement is not None and (found := _SQL_TABLE.search(str(statement))):
        table = found.group(1)
    parts = [system, _unquote(str(table)) if table else None, str(operation).lower() if operation else None]
    return ".".join(p for p in parts if p)


_MAX_CACHED_TEXT = 2048


def _cached(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` through its LRU cache, unless an argument is large or unhashable (then computed directly)."""
    for arg in args:
        if isinstance(arg, str) and len(arg) > _MAX_CACHED_TEXT:
            return fn.__wrapped__(*args)  # type: ignore[attr-defined,no-any-return]
    try:
        return fn(*args)
    except TypeError:  # an unhashable attribute value (API 1.45 allows dicts): not cacheable
        pass
    return fn.__wrapped__(*args)  # type: ignore[attr-defined,no-any-return]


def _unquote(identifier: str) -> str:
    return identifier.rsplit(".", 1)[-1].strip('`"[]').lower()


def _redis_commands(span: ReadableSpan, attrs: Mapping[str, Any]) -> tuple[str, ...]:
    statement = sc.first(attrs, sc.DB_STATEMENT)
    if statement:
        return _cached(_statement_commands, str(statement))
    return tuple(word.upper() for word in span.name.split())


@functools.lru_cache(maxsize=2048)
def _statement_commands(statement: str) -> tuple[str, ...]:
    """The commands of a Redis statement (one per line: ``SET ? ? ? ?``); cached, as statements repeat."""
    return tuple(line.split()[0].upper() for line in statement.splitlines() if line.split())


def _grpc_full_method(span: ReadableSpan, attrs: Mapping[str, Any]) -> str:
    service, method = sc.first(attrs, sc.RPC_SERVICE), sc.first(attrs, sc.RPC_METHOD)
    if service and method:
        return f"/{service}/{method}"
    return span.name


def _grpc_status(attrs: Mapping[str, Any]) -> str | None:
    code = sc.as_int(sc.first(attrs, sc.RPC_GRPC_STATUS))
    if code is None:
        return None
    return sc.GRPC_STATUS_NAMES[code] if 0 <= code < len(sc.GRPC_STATUS_NAMES) else str(code)


def _kafka_request(attrs: Mapping[str, Any], action: str) -> dict[str, Any]:
    return {
        "action": action,
        "topic": sc.first(attrs, sc.MESSAGING_DESTINATION),
        "partition": sc.as_int(sc.first(attrs, sc.MESSAGING_PARTITION)),
        "offset": sc.as_int(sc.first(attrs, sc.MESSAGING_OFFSET)),
        "key": sc.first(attrs, sc.MESSAGING_KEY),
        "value": None,
        "headers": {},
    }


# ---------------------------------------------------------------------------------------------- errors


def _span_error(
    span: ReadableSpan, attrs: Mapping[str, Any], capture: Mapping[str, Any], role: str
) -> dict[str, Any] | None:
    """The error of one span, or ``None``: a captured error, else its exception event, else its status."""
    captured = capture.get("error")
    if captured is not None:
        return _error_dict(captured)
    failed = span.status.status_code == StatusCode.ERROR
    if not failed and not _has_events(span):
        return None
    exc_type, exc_message = None, None
    for event in span.events:
        if event.name == "exception" and event.attributes:
            exc_type = event.attributes.get(sc.EXCEPTION_TYPE)
            exc_message = event.attributes.get(sc.EXCEPTION_MESSAGE)
    if exc_type is None and not failed:
        return None
    message = exc_message or span.status.description
    if not message:
        if role == "http" and (status := sc.as_int(sc.first(attrs, sc.HTTP_STATUS))) is not None:
            message = f"HTTP {status}"
        elif role == "grpc" and (code := _grpc_status(attrs)) is not None:
            message = f"gRPC {code}"
        else:
            message = str(sc.first(attrs, sc.ERROR_TYPE) or "error")
    error: dict[str, Any] = {"message": str(message)}
    error_type = exc_type or sc.first(attrs, sc.ERROR_TYPE)
    if error_type is not None:
        error["type"] = str(error_type)
    return error


_RECORD: type = SpanRecord


def _has_events(span: ReadableSpan) -> bool:
    if type(span) is _RECORD:  # the processor's records (no getattr that fails and raises inside)
        return bool(span.events)
    # ``ReadableSpan.events`` copies the SDK's list under a lock; its length alone is enough here.
    events = getattr(span, "_events", None)
    return bool(len(events)) if events is not None else bool(span.events)


def _error_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseException):
        return {"message": str(value) or type(value).__name__, "type": type(value).__qualname__}
    if isinstance(value, Mapping):
        safe = json_safe(value)
        safe.setdefault("message", "error")
        return dict(safe)
    return {"message": str(json_safe(value))}


def _error_time(span: ReadableSpan) -> int:
    for event in reversed(span.events):
        if event.name == "exception":
            return event.timestamp
    return span.end_time or span.start_time or 0


# --------------------------------------------------------------------------------------------- helpers


def _attrs(span: ReadableSpan) -> Mapping[str, Any]:
    """A plain-dict snapshot of the span's attributes.

    Lookups through ``ReadableSpan.attributes`` (a mapping proxy over the SDK's ``BoundedAttributes``) cost a
    Python call each; the SDK's underlying dict, when present, is copied at C speed instead. An ended span's
    attributes are immutable, so the copy is safe.
    """
    attributes = span.attributes
    if type(attributes) is dict:  # a processor's span record: already a private plain dict
        return attributes
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if isinstance(inner, dict):
        return dict(inner) if inner else _EMPTY
    return dict(attributes) if attributes else _EMPTY


def _start_key(span: ReadableSpan) -> tuple[int, int]:
    return (span.start_time or 0, span.context.span_id if span.context else 0)


def _merge(base: dict[str, Any], extra: Any) -> Any:
    """``base`` (already JSON-safe) updated with the captured ``extra``, which is made JSON-safe.

    Dicts merge key by key; any other captured value replaces ``base``.
    """
    if extra is None:
        return base
    if type(extra) is dict or isinstance(extra, Mapping):
        base.update(json_safe(extra))
        return base
    return json_safe(extra)


def _merge_raw(base: dict[str, Any], extra: Any) -> Any:
    """:func:`_merge` for a raw fold: a captured dict's values go into ``base`` as they are when they are plain JSON
    values or captured bodies (the policy's walk converts and decodes them as it masks them); others (bytes, tuples,
    mappings, subclasses) are converted here, as the policy reads some of them before its walk (headers, a query,
    a URL). A task's arguments (masked by their names before the walk) and anything other than a plain dict are
    converted as by :func:`_merge`."""
    if extra is None:
        return base
    if type(extra) is not dict or "arg_names" in extra:
        return _merge(base, extra)
    for key, item in extra.items():
        kind = type(item)
        if kind not in PLAIN and getattr(kind, "__gotrails_json__", None) is None:
            item = json_safe(item)
        base[key] = item
    return base


_Merge = Callable[[dict[str, Any], Any], Any]


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _ms(nanos: int) -> float:
    """Nanoseconds as milliseconds with microsecond resolution (three decimals)."""
    return (nanos // 1000) / 1000 if nanos > 0 else 0.0


_SECOND: tuple[int, str] = (-1, "")  # the last second formatted, and its text (trails come in time order)


def _rfc3339(nanos: int) -> str:
    global _SECOND
    seconds = nanos // 1_000_000_000
    second = _SECOND
    if second[0] != seconds:
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
        second = _SECOND = (seconds, moment.strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{second[1]}{(nanos // 1_000_000) % 1000:03d}Z"
