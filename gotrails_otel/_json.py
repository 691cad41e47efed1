"""Conversion of arbitrary captured values into JSON-safe types, and fast serialisation (orjson)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import orjson

from .maskrules import CUT_MARK

MAX_DEPTH = 32
DEPTH_MARKER = "[gotrails: nested too deep]"


def json_safe(value: Any, depth: int = MAX_DEPTH) -> Any:
    """Return ``value`` as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    Never raises: objects with a ``__gotrails_json__`` method (captured bodies) are converted by it; bytes become
    text when they are UTF-8, else a marked ``{"$binary": {size, sha256}}``; non-finite floats become strings;
    unknown objects become their ``repr`` marked as such; nesting deeper than ``depth`` is cut with a marker.
    Integers outside 64 bits become strings (OTLP and orjson limits). Subclasses of ``str``, ``int`` and ``float``
    become the exact type.
    """
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if isinstance(value, str):
        return "".join((value,))  # an exact str: a subclass may change what str methods return
    if isinstance(value, int):
        value = int(value)
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if depth <= 0:
        return DEPTH_MARKER
    to_json = getattr(type(value), "__gotrails_json__", None)
    if to_json is not None:
        try:
            converted = to_json(value)
        except Exception as exc:  # a payload that cannot be decoded is marked, never fatal for the trail
            return {"$error": _cut(f"{type(exc).__name__}: {exc}")}
        return json_safe(converted, depth - 1)
    if kind is dict or isinstance(value, Mapping):
        return {key_text(k): json_safe(v, depth - 1) for k, v in value.items()}
    named = _named_fields(value)
    if named is not None:
        return {key_text(k): json_safe(v, depth - 1) for k, v in named.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth - 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return binary_summary(raw)
    return {"$repr": _safe_repr(value)}


def _named_fields(value: Any) -> dict[Any, Any] | None:
    """A named tuple's (or a database row's: SQLAlchemy's ``Row``) fields by name, so masking sees the names
    (``Creds(password=...)``); ``None`` for anything else, or when ``_asdict`` fails."""
    if not hasattr(type(value), "_fields"):
        return None
    asdict = getattr(value, "_asdict", None)
    if not callable(asdict):
        return None
    try:
        fields = asdict()
    except Exception:  # a hostile or broken _asdict: the value goes on as a sequence (or its repr)
        return None
    return dict(fields) if isinstance(fields, Mapping) else None


PLAIN = frozenset({str, dict, list, int, float, bool, type(None)})
"""The exact types of JSON values as ``orjson.loads`` makes them (ints and floats may still be out of range)."""


def to_plain(value: Any, depth: int) -> tuple[Any, int]:
    """``value``, of a type outside :data:`PLAIN`, as :func:`json_safe` makes it, but one level only: a container
    becomes a plain ``dict`` (keys as text) or ``list`` whose items are left as they are, for the caller's walk to
    convert. Returns the value and the depth left for it (a captured body's decoding takes one level, as in
    :func:`json_safe`). Subclasses of ``str``, ``int`` and ``float`` become the exact type. Never raises."""
    while type(value) not in PLAIN:
        if isinstance(value, str):
            return "".join((value,)), depth  # an exact str (a subclass may override what str() returns)
        if isinstance(value, int):
            return int(value), depth
        if isinstance(value, float):
            return float(value), depth
        if depth <= 0:
            return DEPTH_MARKER, depth
        to_json = getattr(type(value), "__gotrails_json__", None)
        if to_json is not None:
            try:
                value = to_json(value)
            except Exception as exc:  # a payload that cannot be decoded is marked, never fatal for the trail
                return {"$error": _cut(f"{type(exc).__name__}: {exc}")}, depth
            depth -= 1
            continue
        if isinstance(value, Mapping):
            return {key_text(k): v for k, v in value.items()}, depth
        named = _named_fields(value)
        if named is not None:
            return {key_text(k): v for k, v in named.items()}, depth
        if isinstance(value, (list, tuple, set, frozenset)):
            return list(value), depth
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            try:
                return raw.decode("utf-8"), depth
            except UnicodeDecodeError:
                return binary_summary(raw), depth
        return {"$repr": _safe_repr(value)}, depth
    return value, depth


def valid_unicode(value: Any) -> Any:
    """``value`` (JSON types) with every lone surrogate in its strings and keys replaced by U+FFFD, in place where it
    is a container: UTF-8, and so JSON output, cannot hold one (Python's ``json`` module decodes ``"\\ud800"`` to
    one). Surrogate pairs become the character they encode."""
    if type(value) is str:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        items = [(valid_unicode(k) if type(k) is str else k, valid_unicode(v)) for k, v in value.items()]
        value.clear()
        value.update(items)
    elif isinstance(value, list):
        value[:] = [valid_unicode(v) for v in value]
    return value


def binary_summary(raw: bytes) -> dict[str, Any]:
    """How binary data appears in a trail: its size and hash, never its bytes."""
    return {"$binary": {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}}


def key_text(key: Any) -> str:
    """A mapping key as text (an exact ``str``)."""
    if isinstance(key, str):
        return key if type(key) is str else "".join((key,))
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    return str(key)


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a user object whose __repr__ fails must not break the trail
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return _cut(text)


def _cut(text: str, limit: int = 256) -> str:
    """``text`` cut at ``limit`` characters, marked ``…`` when cut (the policy masks what the cut left of a secret)."""
    return text if len(text) <= limit else text[:limit] + CUT_MARK


def dumps(document: Any) -> bytes:
    """Serialise a JSON-safe document compactly (one line, UTF-8)."""
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)
