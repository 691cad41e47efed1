"""What capture hooks share: finding the trail of a span, bounded body buffers, header and message conversion.

Hooks run inside the host application. Everything here is built so that a hook cannot raise into the application
(:func:`guard`), never consumes a stream the application still needs, and keeps at most ``max_body_bytes`` of any
payload (the rest is counted, not kept).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from opentelemetry import trace

from .config import TrailConfig
from .processor import CaptureStore, processors

__all__ = [
    "BodyCapture",
    "Target",
    "current_target",
    "guard",
    "headers_dict",
    "target_for",
    "then_release",
    "to_json",
]

_log = logging.getLogger("gotrails_otel")
_F = TypeVar("_F", bound=Callable[..., Any])

# Headers whose values never enter a trail as they are (the masking policy extends this).
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"}
)
MASK = "***"
# Propagation headers: plumbing, not payload.
PROPAGATION_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})

_failures_lock = threading.Lock()
_failures_logged: set[str] = set()


def guard(fn: _F) -> _F:
    """Run a hook so that no exception ever reaches the application; the first failure per hook is logged."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:  # a capture hook must never break the request it observes
            name = getattr(fn, "__qualname__", repr(fn))
            with _failures_lock:
                first = name not in _failures_logged
                _failures_logged.add(name)
            if first:
                _log.exception("gotrails: capture hook %s failed (logged once; the request goes on)", name)
            else:
                _log.debug("gotrails: capture hook %s failed", name, exc_info=True)
            return None

    return wrapper  # type: ignore[return-value]


class Target:
    """A span inside a trail that payloads can be written to."""

    __slots__ = ("span_id", "store")

    def __init__(self, store: CaptureStore, span_id: int) -> None:
        self.store = store
        self.span_id = span_id

    @property
    def config(self) -> TrailConfig:
        return self.store.config

    def update(self, key: str, values: Mapping[str, Any]) -> None:
        self.store.update(self.span_id, key, values)

    def put(self, key: str, value: Any) -> None:
        self.store.put(self.span_id, key, value)

    def hold(self) -> Callable[[], None] | None:
        return self.store.hold(self.span_id)


def target_for(span: trace.Span | None) -> Target | None:
    """The capture target for ``span`` when it belongs to a trail that is still open, else ``None``."""
    if span is None:
        return None
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    for processor in processors():
        if processor.captures.tracks(ctx.span_id):
            return Target(processor.captures, ctx.span_id)
    return None


def current_target() -> Target | None:
    """The capture target of the current span."""
    return target_for(trace.get_current_span())


class BodyCapture:
    """A body seen chunk by chunk, keeping at most ``limit`` bytes and counting the rest.

    It is stored in the capture store as it is and decoded at fold time, on gotrails' flush thread, so the request
    path only copies (at most ``limit``) bytes. ``streamed`` marks a body that was not read by gotrails (a streamed
    upload or download): it is reported as such, never consumed.
    """

    __slots__ = ("_chunks", "_kept", "content_encoding", "content_type", "limit", "streamed", "total")

    def __init__(self, limit: int, content_type: str | None = None, content_encoding: str | None = None) -> None:
        self.limit = limit
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.total = 0
        self.streamed = False
        self._chunks: list[bytes] = []
        self._kept = 0

    def add(self, chunk: bytes | bytearray | memoryview | str | None) -> None:
        """Account for ``chunk``; keep it (or its head) while under the limit."""
        if not chunk:
            return
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8", "surrogateescape")
        size = len(chunk)
        self.total += size
        room = self.limit - self._kept
        if room > 0:
            part = bytes(chunk[:room]) if size > room else bytes(chunk)
            self._chunks.append(part)
            self._kept += len(part)

    def data(self) -> bytes:
        """The bytes kept so far."""
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def __gotrails_json__(self) -> Any:
        from .body import decode_body

        if self.streamed:
            return {"$streamed": True, "size": self.total or None}
        return decode_body(self.data(), self.content_type, self.content_encoding, self.total)


def headers_dict(
    pairs: Iterable[tuple[Any, Any]], *, drop: frozenset[str] = PROPAGATION_HEADERS
) -> dict[str, list[str]]:
    """Headers as ``{lower-case name: [values]}``, sensitive values masked, propagation headers left out."""
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in pairs:
        name = _text(raw_name).strip().lower()
        if not name or name in drop:
            continue
        value = MASK if name in SENSITIVE_HEADERS else _clean(_text(raw_value))
        headers.setdefault(name, []).append(value)
    return headers


def header_value(headers: Mapping[str, list[str]], name: str) -> str | None:
    """The first value of header ``name`` (lower case) in a :func:`headers_dict` result."""
    values = headers.get(name)
    return values[0] if values else None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _clean(value: str) -> str:
    # CR, LF and other control characters never reach the trail raw (log injection, broken viewers).
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in value)


def to_json(message: Any) -> Any:
    """A protobuf message as JSON types (``json_format``); anything else as it is (made JSON-safe at fold)."""
    if hasattr(message, "DESCRIPTOR") and hasattr(message, "ListFields"):
        from google.protobuf import json_format

        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    return message


def then_release(release: Callable[[], None] | None, record: Callable[[Any], None]) -> Callable[[Any], None]:
    """A callback that records its argument, then releases a :meth:`Target.hold` (even when recording fails)."""

    def callback(value: Any) -> None:
        try:
            record(value)
        finally:
            if release is not None:
                release()

    return callback
