"""Decoding of captured bodies into trail values. Never raises: every input gives a well-defined value.

JSON, ``application/x-www-form-urlencoded`` and ``multipart/form-data`` bodies become structure, so that the masking
policy masks them by key. A body cut at ``GOTRAILS_MAX_BODY_BYTES`` keeps its structure too: the kept prefix of a
JSON body is parsed tolerantly (``jiter``'s partial mode), a cut form or multipart body is parsed up to the cut, and
the result is marked ``{"$truncated": {"size", "kept", "value"}}``; other cut bodies keep their text
(``{"$truncated": {"size", "kept", "text"}}``). The value the cut went through (a string or a number) and a kept text
end with ``…`` (:data:`~gotrails_otel.maskrules.CUT_MARK`), so that the policy masks what the cut left of a secret
(half a card number, a token without its end). File parts of a multipart body are recorded as
``{"filename", "content_type", "size"}``, never with their content.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from ._json import binary_summary
from .maskrules import CUT_MARK

__all__ = ["decode_body"]

_MAX_INFLATED = 1 << 20
_MULTIPART_FIELD_MAX = 65_536  # characters kept of one text field of a multipart body


def decode_body(raw: bytes, content_type: str | None, content_encoding: str | None, total: int) -> Any:
    """The trail value of a body: JSON, form fields or text by content type; binary as size and hash.

    ``total`` is the body's full size; when only ``len(raw)`` bytes were kept the value is marked
    ``{"$truncated": {...}}`` with what could be decoded of the kept part.
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
    kept = len(raw)
    mime, params = _content_type(content_type)
    charset = params.get("charset", "utf-8")
    if "charset" not in params and (raw[:1] in (b"\xff", b"\xfe", b"\x00") or raw[1:2] == b"\x00"):
        wide = _utf16_or_32(raw)
        if wide is not None:  # UTF-16/32 without a charset parameter (a BOM, or JSON's NUL pattern)
            raw = _transcoded(raw, wide, truncated)
    if raw[:3] == b"\xef\xbb\xbf" and charset in ("utf-8", "utf8"):
        raw = raw[3:]  # a UTF-8 byte-order mark (Windows clients) before JSON or a form
    json_like = mime.endswith("json") or (not mime and raw[:1] in (b"{", b"["))
    if truncated:
        value: Any = _NOTHING
        if encoding in ("", "identity"):
            if json_like or (mime.startswith("text/") and raw.lstrip()[:1] in (b"{", b"[")):
                value = _partial_json(raw)
            elif mime == "application/x-www-form-urlencoded":
                text = _text(raw, charset, partial=True)
                value = _mark_last(dict(_form(text))) if isinstance(text, str) else _NOTHING
            elif mime == "multipart/form-data":
                value = _multipart(raw, params.get("boundary"), charset, cut=True)
        if value is not _NOTHING:
            return {"$truncated": {"size": total, "kept": kept, "value": value}}
        text = _text(raw, charset, partial=True)
        return {"$truncated": {"size": total, "kept": kept, "text": text + CUT_MARK if isinstance(text, str) else text}}
    if json_like:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # announced as JSON but is not: fall through to text
    if mime == "application/x-www-form-urlencoded":
        text = _text(raw, charset)
        if isinstance(text, str):
            return dict(_form(text))
    if mime == "multipart/form-data":
        return _multipart(raw, params.get("boundary"), charset)
    return _text(raw, charset)


class _Nothing:
    pass


_NOTHING: Any = _Nothing()


def _partial_json(raw: bytes) -> Any:
    """The kept prefix of a cut JSON document as structure (incomplete trailing strings kept as far as they go), or
    ``_NOTHING`` when it is not the start of a JSON document."""
    import jiter

    try:
        value = jiter.from_json(raw, partial_mode="trailing-strings", cache_mode="none")
        closed = jiter.from_json(raw, partial_mode="on", cache_mode="none")
    except ValueError:
        return _NOTHING
    if value != closed:  # the cut went through a string: the last one is partial
        return _mark_last(value)
    end = raw.rstrip()[-1:]
    if end and end[0] in _NUMBER_END:  # the cut may have gone through a number
        return _mark_last(value, numbers=True)
    return value


_NUMBER_END = frozenset(b"0123456789.eE+-")


def _mark_last(value: Any, numbers: bool = False) -> Any:
    """``value`` with its last string (or number, when ``numbers``) marked as cut: it ends with ``…``."""
    if isinstance(value, dict) and value:
        last = next(reversed(value))
        value[last] = _mark_last(value[last], numbers)
    elif isinstance(value, list) and value:
        value[-1] = _mark_last(value[-1], numbers)
    elif isinstance(value, str):
        return value + CUT_MARK
    elif numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value}{CUT_MARK}"
    return value


def _form(text: str) -> list[tuple[str, Any]]:
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        _add(fields, key, value)
    return list(fields.items())


def _add(fields: dict[str, Any], key: str, value: Any) -> None:
    if key in fields:
        existing = fields[key]
        fields[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
    else:
        fields[key] = value


def _multipart(raw: bytes, boundary: str | None, charset: str, cut: bool = False) -> Any:
    """``multipart/form-data`` as ``{name: text}`` with file parts as ``{filename, content_type, size}``.

    Parsed with ``python-multipart``'s streaming parser up to the end of ``raw`` (a cut body yields the parts up to
    the cut). A body that is not multipart as announced is summarised, never kept as text.
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    if not boundary or not raw.lstrip(b"\r\n").startswith(b"--" + boundary.encode("latin-1", "replace")):
        return {"$undecodable": {"encoding": "multipart/form-data", **binary_summary(raw)["$binary"]}}
    fields: dict[str, Any] = {}
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state.update(headers={}, field=b"", value=b"", size=0, chunks=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(state["headers"].get("content-disposition", b""))
        state["options"] = options
        state["file"] = b"filename" in options

    def on_part_data(data: bytes, start: int, end: int) -> None:
        size = state["size"]
        state["size"] = size + end - start
        if not state.get("file") and size < _MULTIPART_FIELD_MAX * 4:  # a file's content is never kept
            state["chunks"].append(data[start:end])

    def on_part_end() -> None:
        _finish_part(fields, state, charset, parse_options_header)
        state.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(raw)
    except MultipartParseError:
        if not fields:
            return {"$undecodable": {"encoding": "multipart/form-data", **binary_summary(raw)["$binary"]}}
        fields["$unparsed"] = True
        return fields
    if state.get("headers"):
        _finish_part(fields, state, charset, parse_options_header)  # the part the cut went through
        if cut:
            _mark_last(fields)
    return fields


def _finish_part(fields: dict[str, Any], state: dict[str, Any], charset: str, parse_options: Any) -> None:
    headers = state.get("headers") or {}
    options = state.get("options")
    if options is None:
        _, options = parse_options(headers.get("content-disposition", b""))
    disposition = headers.get("content-disposition", b"")
    raw_name = options.get(b"name")
    name = raw_name.decode("utf-8", "replace") if raw_name is not None else _extended(disposition, b"name")
    filename = options.get(b"filename")
    if filename is None and b"filename*" in disposition.lower():
        extended = _extended(disposition, b"filename")
        filename = extended.encode() if extended is not None else None
    content_type = headers.get("content-type")
    if filename is not None:
        value: Any = {
            "filename": filename.decode("utf-8", "replace"),
            "content_type": content_type.decode("latin-1") if content_type else None,
            "size": state.get("size", 0),
        }
    elif name is None:  # a part without a name: its size only, its content is not kept
        value = {"size": state.get("size", 0)}
    else:
        part_charset = charset
        if content_type:
            _, part_options = parse_options(content_type)
            part_charset = part_options.get(b"charset", b"").decode("latin-1") or charset
        data = b"".join(state.get("chunks") or ())
        try:
            value = data.decode(part_charset, "replace")
        except LookupError:
            value = data.decode("utf-8", "replace")
        if len(value) > _MULTIPART_FIELD_MAX:
            value = value[:_MULTIPART_FIELD_MAX] + CUT_MARK
    _add(fields, name if name is not None else "", value)


_EXTENDED = re.compile(rb"""(?i)(?:^|;)\s*(?P<param>[\w-]+)\*\s*=\s*"?(?P<value>[^;"]*)""")


def _extended(header: bytes, param: bytes) -> str | None:
    """An RFC 2231 / 5987 extended parameter (``name*=UTF-8''pass%77ord``), which python-multipart leaves out."""
    for match in _EXTENDED.finditer(header):
        if match.group("param").lower() == param:
            charset, _, rest = match.group("value").partition(b"'")
            _, _, encoded = rest.partition(b"'")
            try:
                return unquote_to_bytes(encoded).decode(charset.decode("latin-1") or "utf-8", "replace")
            except LookupError:
                return unquote_to_bytes(encoded).decode("utf-8", "replace")
    return None


def _content_type(value: str | None) -> tuple[str, Mapping[str, str]]:
    """The media type (lower case) and the parameters of a ``Content-Type`` value; cached, as a service sends the
    same few values again and again (a multipart boundary is new every time: such values are parsed, not kept)."""
    if not value:
        return "", _NO_PARAMS
    if len(value) <= 64 and "boundary" not in value:
        return _content_type_cached(value)
    return _parse_content_type(value)


_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@functools.lru_cache(maxsize=256)
def _content_type_cached(value: str) -> tuple[str, Mapping[str, str]]:
    mime, params = _parse_content_type(value)
    return mime, MappingProxyType(params)


def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    mime, _, raw_params = value.partition(";")
    params: dict[str, str] = {}
    for param in raw_params.split(";"):
        key, _, val = param.partition("=")
        key = key.strip().lower()
        if key and val.strip():
            params[key] = val.strip().strip('"')
    if "charset" in params:
        params["charset"] = params["charset"].lower()
    return mime.strip().lower(), params


def _text(raw: bytes, charset: str, partial: bool = False) -> Any:
    try:
        text = raw.decode(charset)
    except (LookupError, UnicodeDecodeError):
        if partial:
            # A cut may split a multi-byte character: keep the valid text before it.
            text = raw.decode("utf-8", "ignore")
            if text.isprintable() or all(ch.isprintable() or ch in "\r\n\t" for ch in text):
                return text
        return binary_summary(raw)
    if "\x00" in text:  # no text holds NUL characters: binary, or UTF-16/32 read as something else
        return binary_summary(raw)
    return text


def _transcoded(raw: bytes, encoding: str, truncated: bool) -> bytes:
    """``raw`` as UTF-8 when it is text in ``encoding`` (a cut may split the last character), else as it is."""
    try:
        text = raw.decode(encoding, "ignore" if truncated else "strict")
    except UnicodeDecodeError:
        return raw
    if "\x00" in text or not all(ch.isprintable() or ch in "\r\n\t" for ch in text.lstrip("\ufeff")):
        return raw
    return text.lstrip("\ufeff").encode("utf-8")


def _utf16_or_32(raw: bytes) -> str | None:
    """The encoding of a body whose first bytes are a UTF-16/32 byte-order mark, or show NUL bytes where JSON's
    first characters are ASCII (RFC 4627's detection)."""
    head = raw[:4]
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if len(head) < 4:
        return None
    if head[:3] == b"\x00\x00\x00":
        return "utf-32-be"
    if head[1:] == b"\x00\x00\x00":
        return "utf-32-le"
    if head[0] == 0 and head[2] == 0:
        return "utf-16-be"
    if head[1] == 0 and head[3] == 0:
        return "utf-16-le"
    return None


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
