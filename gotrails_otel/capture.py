"""What capture hooks share: finding the trail of a span, bounded body buffers, header and message conversion.

Hooks run inside the host application. Everything here is built so that a hook cannot raise into the application
(:func:`guard`), never consumes a stream the application still needs, and keeps at most ``max_body_bytes`` of any
payload (the rest is counted, not kept).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ._safelog import log_failure
from .registry import current_target, target_for
from .store import BodyCapture, Target

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

_failures_logged: set[str] = set()  # no lock: a lock held by another thread at fork() would stay held


def guard(fn: _F) -> _F:
    """Run a hook so that no exception ever reaches the application; the first failure per hook is logged."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # a capture hook must never break the request it observes
            name = getattr(fn, "__qualname__", repr(fn))
            first = name not in _failures_logged
            _failures_logged.add(name)
            log_failure(
                _log,
                f"gotrails: capture hook {name} failed (logged once; the request goes on)",
                exc,
                level=logging.ERROR if first else logging.DEBUG,
            )
            return None

    return wrapper  # type: ignore[return-value]


def headers_dict(
    pairs: Iterable[tuple[Any, Any]], *, drop: frozenset[str] = PROPAGATION_HEADERS
) -> dict[str, list[str]]:
    """Headers as ``{lower-case name: [values]}``, sensitive values masked, propagation headers left out."""
    if type(pairs) is not list and type(pairs) is not tuple:
        pairs = list(pairs)
    fast = _bytes_headers(pairs)
    if fast is None:
        fast = [(_text(raw_name).strip().lower(), raw_value) for raw_name, raw_value in pairs]
        fast = [(name, value if type(value) is str else _text(value)) for name, value in fast]
    headers: dict[str, list[str]] = {}
    for name, value in fast:
        if not name or name in drop:
            continue
        if name in SENSITIVE_HEADERS:
            value = MASK
        elif not value.isprintable():
            value = _clean(value)
        values = headers.get(name)
        if values is None:
            headers[name] = [value]
        else:
            values.append(value)
    return headers


def _bytes_headers(pairs: Iterable[tuple[Any, Any]]) -> Iterable[tuple[str, str]] | None:
    """``(name, value)`` pairs of bytes (ASGI, httpx) decoded at C speed, all at once: names lower case and
    stripped; ``None`` when they are not all bytes (or a name or value holds the separator)."""
    try:
        names, values = zip(*pairs, strict=True)
        text_names = b"\x00".join(names).decode("latin-1").lower().split("\x00")
        text_values = b"\x00".join(values).decode("latin-1").split("\x00")
    except (TypeError, ValueError):  # not all bytes, no pairs at all, or not pairs
        return None
    if len(text_names) != len(names) or len(text_values) != len(names):
        return None
    return zip(map(str.strip, text_names), text_values, strict=True)


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
