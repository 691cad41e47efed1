"""Validation of incoming request identifiers (``X-Trace-ID``, ``X-Request-ID``) and OTel id formatting."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_ID_LENGTH", "span_id_hex", "trace_id_hex", "valid_request_id"]

MAX_ID_LENGTH = 128
# Letters, digits and a few separators; starts with a letter or digit. No spaces, quotes, CR/LF or
# control characters can pass, so an identifier from a header is safe to write into the trail as it is.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


def valid_request_id(value: Any) -> str | None:
    """``value`` when it is an acceptable incoming trace or request id, else ``None`` (never a raw copy)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        return None
    return value if _ID.fullmatch(value) else None


def trace_id_hex(trace_id: int) -> str:
    """The W3C form of a trace id: 32 lower-case hex digits."""
    return format(trace_id, "032x")


def span_id_hex(span_id: int) -> str:
    """The W3C form of a span id: 16 lower-case hex digits."""
    return format(span_id, "016x")
