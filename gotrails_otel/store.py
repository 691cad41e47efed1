"""The capture store: the one way into a trail for payloads, metadata and errors (hooks and the public API).

Writes go to the trail that owns the span, under the buffer's lock, so they are bounded by the trail's limits, charged
to the byte budget (``GOTRAILS_MAX_BUFFER_BYTES``) and freed when the trail is sealed. A write that arrives after its
trail was flushed is refused and counted as a late payload; a write for a span in no trail is refused and counted
(``captures.no_trail``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ._json import DEPTH_MARKER, MAX_DEPTH, json_safe, key_text
from .body import decode_body
from .bridge import set_span_metadata
from .buffer import MAX_METADATA_KEYS, Trail, TrailBuffer, TrailState

if TYPE_CHECKING:
    from .config import TrailConfig
    from .metrics import Counters
    from .redact import Policy

__all__ = ["BodyCapture", "CaptureStore", "Target", "estimate", "snapshot"]

_ATOMIC = frozenset({str, int, float, bool, type(None), bytes})
_CLOSED = (TrailState.FLUSHED, TrailState.SEALED)


def snapshot(value: Any, depth: int = MAX_DEPTH) -> Any:
    """``value`` as it is now: containers are copied (and anything that is not plain data is converted to JSON
    types now), immutable values are kept as they are. So a later change to the caller's object does not reach the
    trail, and nothing the caller does can break the fold. Never raises."""
    kind = type(value)
    if kind in _ATOMIC:
        return value
    if depth <= 0:
        return DEPTH_MARKER
    try:
        if kind is dict:
            return {k if type(k) is str else key_text(k): snapshot(v, depth - 1) for k, v in value.items()}
        if kind is list or kind is tuple:
            return [snapshot(v, depth - 1) for v in value]
        if getattr(kind, "__gotrails_json__", None) is not None:
            return value  # a captured body: it belongs to gotrails and is decoded at fold
        return json_safe(value, depth)
    except RuntimeError as exc:  # changed by another thread while it was copied
        return {"$error": f"changed while recorded: {exc}"[:256]}


def estimate(value: Any) -> int:
    """Rough bytes a captured value holds (for the byte budget): twice the size of its compact JSON, measured at C
    speed. A captured body counts nothing here: its bytes are charged as they are kept."""
    kind = type(value)
    if kind is str or kind is bytes:
        return 50 + len(value)
    try:
        return 64 + 2 * len(orjson.dumps(value, default=_opaque, option=orjson.OPT_NON_STR_KEYS))
    except (TypeError, orjson.JSONEncodeError):  # deeper than orjson goes, or a key it cannot write
        return 4096


def _opaque(value: Any) -> None:
    return None


class BodyCapture:
    """A body seen chunk by chunk, keeping at most ``limit`` bytes and counting the rest.

    It is stored in the capture store as it is and decoded at fold time, on gotrails' flush thread, so the request
    path only copies (at most ``limit``) bytes. Once stored, the bytes it keeps are charged to the byte budget as they
    come, and chunks that come after its trail was flushed are counted as late. ``streamed`` marks a body that was not
    read by gotrails (a streamed upload or download): it is reported as such, never consumed.
    """

    __slots__ = (
        "_buffer",
        "_chunks",
        "_data",
        "_kept",
        "_trail",
        "content_encoding",
        "content_type",
        "limit",
        "streamed",
        "total",
    )

    def __init__(self, limit: int, content_type: str | None = None, content_encoding: str | None = None) -> None:
        self.limit = limit
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.total = 0
        self.streamed = False
        self._data = b""  # the bytes kept, when they came in one chunk (the common case: no list)
        self._chunks: list[bytes] | None = None  # or in several
        self._kept = 0
        self._trail: Trail | None = None
        self._buffer: TrailBuffer | None = None

    def _attach(self, buffer: TrailBuffer, trail: Trail) -> None:
        """With the buffer's lock held: the body now belongs to ``trail``; charge what it keeps already."""
        if self._trail is None:
            self._trail, self._buffer = trail, buffer
            if self._kept:
                buffer.charge(trail, self._kept)

    def add(self, chunk: bytes | bytearray | memoryview | str | None) -> None:
        """Account for ``chunk``; keep it (or its head) while under the limit."""
        if not chunk:
            return
        trail, buffer = self._trail, self._buffer
        if trail is not None and buffer is not None and trail.state in _CLOSED:
            with buffer.lock:
                buffer.count_late(trail, "payloads")
            return
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8", "surrogateescape")
        size = len(chunk)
        self.total += size
        room = self.limit - self._kept
        if room > 0:
            part = bytes(chunk[:room]) if size > room else bytes(chunk)
            if not self._kept:
                self._data = part
            elif self._chunks is None:
                self._chunks = [self._data, part]
            else:
                self._chunks.append(part)
            self._kept += len(part)
            if trail is not None and buffer is not None:
                with buffer.lock:
                    buffer.charge(trail, len(part))

    def data(self) -> bytes:
        """The bytes kept so far."""
        if self._chunks is not None:
            self._data = b"".join(self._chunks)
            self._chunks = None
        return self._data

    def __gotrails_json__(self) -> Any:
        if self.streamed:
            return {"$streamed": True, "size": self.total or None}
        return decode_body(self.data(), self.content_type, self.content_encoding, self.total)


class CaptureStore:
    """Payloads captured by hooks and the public API, keyed by span id and merged into the trail at fold.

    A payload may arrive after its span ended (an HTTP response body, a Kafka offset): it still reaches the trail as
    long as the trail has not been flushed; use :meth:`hold` to make the trail wait for it. Writes for spans outside
    any trail are ignored and return ``False``.

    Keys the fold understands: ``request``, ``response``, ``metadata`` (dicts merged into the entry), ``error``
    (an exception, a mapping with ``message``/``type``, or a string), ``name`` (overrides the default name),
    and on the root span ``trace_id``/``request_id``.
    """

    def __init__(self, buffer: TrailBuffer, config: TrailConfig, counters: Counters, policy: Policy) -> None:
        self._buffer = buffer
        self._config = config
        self._counters = counters
        self._policy = policy
        self._on_span = config.metadata_on_span

    @property
    def config(self) -> TrailConfig:
        """The owning processor's configuration (limits that hooks apply at capture time)."""
        return self._config

    def _open_trail(self, span_id: int) -> Trail | None:
        """With the lock held: the trail of ``span_id`` when it still takes writes; else count why not."""
        buffer = self._buffer
        trail = buffer.owner.get(span_id)
        if trail is None:
            late = buffer.late.get(span_id)
            if late is not None:
                buffer.count_late(late, "payloads")
            else:
                self._counters.dropped("captures", "no_trail")
            return None
        if trail.state in _CLOSED:
            buffer.count_late(trail, "payloads")
            return None
        if trail.dropped_ids is not None and span_id in trail.dropped_ids:
            trail.count("payloads")
            self._counters.dropped("payloads", "span_dropped")
            return None
        return trail

    def _adopt(self, trail: Trail, value: Any) -> None:
        if type(value) is BodyCapture:
            value._attach(self._buffer, trail)
        elif type(value) is dict:
            for item in value.values():
                if type(item) is BodyCapture:
                    item._attach(self._buffer, trail)

    def put(self, span_id: int, key: str, value: Any) -> bool:
        """Set ``key`` of the span's payload to ``value`` (replacing any earlier value)."""
        size = estimate(value)
        buffer = self._buffer
        with buffer.lock:
            trail = self._open_trail(span_id)
            if trail is None:
                return False
            trail.captures.setdefault(span_id, {})[key] = value
            self._adopt(trail, value)
            buffer.charge(trail, size)
            return True

    def update(self, span_id: int, key: str, values: Mapping[str, Any]) -> bool:
        """Merge ``values`` into the dict under ``key`` (``request``, ``response``, ``metadata``)."""
        return self._write(span_id, ((key, values),), values)

    def update_many(self, span_id: int, parts: Mapping[str, Mapping[str, Any]]) -> bool:
        """:meth:`update` for several keys at once (``{"request": {...}, "response": {...}}``): one write."""
        return self._write(span_id, parts.items(), parts)

    def _write(self, span_id: int, parts: Iterable[tuple[str, Mapping[str, Any]]], measured: Any) -> bool:
        """Merge each ``(key, values)`` of ``parts`` into the span's payload, in one hold of the lock (the hooks'
        path, on the request threads). ``measured`` is what the byte budget is charged for."""
        size = estimate(measured)
        with self._buffer.lock:
            return self._write_locked(span_id, parts, size)

    def _write_locked(self, span_id: int, parts: Iterable[tuple[str, Mapping[str, Any]]], size: int) -> bool:
        """With the lock held: the write of :meth:`_write`."""
        trail = self._open_trail(span_id)
        if trail is None:
            return False
        captures = trail.captures
        payload = captures.get(span_id)
        if payload is None:
            payload = captures[span_id] = {}
        for key, values in parts:
            current = payload.get(key)
            if isinstance(current, dict):
                current.update(values)
            else:
                payload[key] = dict(values)
            self._adopt(trail, values)
        self._buffer.charge(trail, size)
        return True

    def add_metadata(self, span_id: int, fields: Mapping[str, Any]) -> bool:
        """Merge ``fields`` into the ``metadata{}`` of the trail that owns ``span_id`` (at most 1,000 keys).

        With ``metadata_on_span`` the fields also go, masked, onto the request's root span while it runs (the
        OpenTelemetry bridge)."""
        size = estimate(fields)
        buffer = self._buffer
        accepted: dict[str, Any] = {}
        with buffer.lock:
            trail = self._open_trail(span_id)
            if trail is None:
                return False
            metadata = trail.metadata
            for key, value in fields.items():
                if key in metadata or len(metadata) < MAX_METADATA_KEYS:
                    metadata[key] = accepted[key] = value
                else:
                    trail.count("metadata")
                    self._counters.dropped("metadata", "max_keys")
            buffer.charge(trail, size)
            root = trail.root if self._on_span and trail.root_ended is None else None
        if root is not None and accepted:  # masked, outside the lock
            set_span_metadata(root, self._policy, accepted)  # type: ignore[arg-type]
        return True

    def add_error(self, span_id: int, error: dict[str, Any]) -> bool:
        """Append an entry to ``errors[]`` of the trail that owns ``span_id`` (at most ``max_errors_per_trail``)."""
        size = estimate(error)
        buffer = self._buffer
        with buffer.lock:
            trail = self._open_trail(span_id)
            if trail is None:
                return False
            if len(trail.errors) >= buffer.max_errors:
                trail.count("errors")
                self._counters.dropped("errors", "max_errors_per_trail")
            else:
                trail.errors.append(error)
                buffer.charge(trail, size)
            return True

    def get(self, span_id: int) -> dict[str, Any] | None:
        """A copy of what is captured for ``span_id`` so far, or ``None``."""
        with self._buffer.lock:
            trail = self._buffer.owner.get(span_id)
            if trail is None or span_id not in trail.captures:
                return None
            return dict(trail.captures[span_id])

    def tracks(self, span_id: int) -> bool:
        """Whether ``span_id`` belongs to a trail that has not been flushed yet."""
        trail = self._buffer.owner.get(span_id)
        return trail is not None and trail.state not in _CLOSED

    def knows(self, span_id: int) -> bool:
        """Whether ``span_id`` belongs to a trail, flushed or not (a write to a flushed one is counted as late)."""
        buffer = self._buffer
        return span_id in buffer.owner or span_id in buffer.late

    def hold(self, span_id: int, *, processing: bool = False) -> Callable[[], None] | None:
        """Keep the span's trail open until the returned release function is called.

        A payload hold (the default) is for a payload that arrives after its span ended — an HTTP response body, a
        broker acknowledgement: the trail waits for it at most the grace period after the request is over.
        ``processing=True`` says the request itself is still being handled (an ASGI app that has not returned, a
        Kafka record being processed): the grace period starts only after the release, within the age limit.

        Returns ``None`` when the span is in no open trail. Calling the release function more than once is harmless.
        """
        buffer = self._buffer
        with buffer.lock:
            trail = buffer.owner.get(span_id)
            if trail is None or not buffer.hold(trail, processing):
                return None
        return _Release(buffer, trail, processing)

    def update_and_hold(
        self, span_id: int, key: str, values: Mapping[str, Any], *, processing: bool = False
    ) -> Callable[[], None] | None:
        """:meth:`update`, then :meth:`hold`, in one write; ``None`` (and no hold) when the write is refused."""
        size = estimate(values)
        buffer = self._buffer
        with buffer.lock:
            if not self._write_locked(span_id, ((key, values),), size):
                return None
            trail = buffer.owner[span_id]
            if not buffer.hold(trail, processing):
                return None
        return _Release(buffer, trail, processing)


class _Release:
    """Ends a hold taken with :meth:`CaptureStore.hold` (calling it again is harmless)."""

    __slots__ = ("_buffer", "_processing", "_trail")

    def __init__(self, buffer: TrailBuffer, trail: Trail, processing: bool) -> None:
        self._buffer = buffer
        self._trail: Trail | None = trail
        self._processing = processing

    def __call__(self) -> None:
        buffer = self._buffer
        with buffer.lock:
            trail, self._trail = self._trail, None
            if trail is not None:
                buffer.release(trail, self._processing)


class Target:
    """A span inside a trail that payloads, metadata and errors can be written to."""

    __slots__ = ("span_id", "store")

    def __init__(self, store: CaptureStore, span_id: int) -> None:
        self.store = store
        self.span_id = span_id

    @property
    def config(self) -> TrailConfig:
        return self.store.config

    def update(self, key: str, values: Mapping[str, Any]) -> bool:
        return self.store.update(self.span_id, key, values)

    def update_many(self, parts: Mapping[str, Mapping[str, Any]]) -> bool:
        return self.store.update_many(self.span_id, parts)

    def put(self, key: str, value: Any) -> bool:
        return self.store.put(self.span_id, key, value)

    def add_metadata(self, fields: Mapping[str, Any]) -> bool:
        return self.store.add_metadata(self.span_id, fields)

    def add_error(self, error: dict[str, Any]) -> bool:
        return self.store.add_error(self.span_id, error)

    def hold(self, *, processing: bool = False) -> Callable[[], None] | None:
        return self.store.hold(self.span_id, processing=processing)

    def update_and_hold(
        self, key: str, values: Mapping[str, Any], *, processing: bool = False
    ) -> Callable[[], None] | None:
        return self.store.update_and_hold(self.span_id, key, values, processing=processing)
