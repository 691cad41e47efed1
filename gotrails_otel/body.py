"""Decoding of captured bodies into trail values. Never raises: every input gives a well-defined value."""

from __future__ import annotations

import zlib
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ._json import binary_summary

__all__ = ["decode_body"]

_MAX_INFLATED = 1 << 20


def decode_body(raw: bytes, content_type: str | None, content_encoding: str | None, total: int) -> Any:
    """The trail value of a body: JSON, form fields or text by content type; binary as size and hash.

    ``total`` is the body's full size; when only ``len(raw)`` bytes were kept the value is marked
    ``{"$truncated": {...}}`` with the part that could be decoded as text.
    """
    if not raw and total == 0:
        return None
    truncated = total > len(raw)
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "deflate", "x-gzip") and not truncated:
        inflated = _inflate(raw, encoding)
        if inflated is None:
            return {"$undecodable": {"encoding": encoding, **binary_summary(raw)["$binary"]}}
        raw = inflated
    mime, charset = _content_type(content_type)
    if truncated:
        return {"$truncated": {"size": total, "kept": len(raw), "text": _text(raw, charset, partial=True)}}
    if mime.endswith("json") or mime.endswith("+json") or (not mime and raw[:1] in (b"{", b"[")):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # announced as JSON but is not: fall through to text
    if mime == "application/x-www-form-urlencoded":
        text = _text(raw, charset)
        if isinstance(text, str):
            return dict(_form(text))
    return _text(raw, charset)


def _form(text: str) -> list[tuple[str, Any]]:
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in fields:
            existing = fields[key]
            fields[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            fields[key] = value
    return list(fields.items())


def _content_type(value: str | None) -> tuple[str, str]:
    if not value:
        return "", "utf-8"
    mime, _, params = value.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip('"').lower()
    return mime.strip().lower(), charset


def _text(raw: bytes, charset: str, partial: bool = False) -> Any:
    try:
        return raw.decode(charset)
    except (LookupError, UnicodeDecodeError):
        if partial:
            # A cut may split a multi-byte character: keep the valid text before it.
            text = raw.decode("utf-8", "ignore")
            if text.isprintable() or all(ch.isprintable() or ch in "\r\n\t" for ch in text):
                return text
        return binary_summary(raw)


def _inflate(raw: bytes, encoding: str) -> bytes | None:
    wbits = 47 if encoding != "deflate" else 15
    for bits in (wbits, -15):
        try:
            inflater = zlib.decompressobj(bits)
            out = inflater.decompress(raw, _MAX_INFLATED)
            if inflater.unconsumed_tail:
                return None  # a decompression bomb or a body past the cap: not inflated
            return out
        except zlib.error:
            continue
    return None
