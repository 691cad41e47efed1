"""Masking and size limits, applied to every trail before it leaves the process.

The policy is on by default. Its tables live in :mod:`gotrails_otel.maskrules`; it masks, as ``***``:

* values under sensitive keys (matched case-insensitively, ignoring ``-``, ``_``, ``.`` and spaces; a key contains a
  sensitive name, has a sensitive word, or is one) at any depth: headers, query strings, JSON, form and multipart
  bodies, SQL arguments, Kafka keys/values, gRPC messages and metadata, Redis arguments and metadata fields;
* ``key=value`` and ``"key": value`` pairs with a sensitive key inside any text, also when the value is an object or
  a list (the whole bracketed value) or the text is a cut JSON document;
* values that look like secrets whatever their key: the detectors of :data:`~gotrails_otel.maskrules.DETECTORS`
  (bearer/basic credentials, JWTs, payment card numbers — also as JSON numbers —, provider tokens, private keys, …)
  and user-configured regular expressions;
* URLs wherever they appear (:mod:`gotrails_otel.urls`): userinfo, OpenTelemetry's signature query keys and sensitive
  query parameters;
* SQL: arguments and inline literals bound to a sensitive column (:mod:`gotrails_otel.sqlmask`), and the values
  that drivers echo in error messages;
* Redis credential commands and hash fields by name;
* a string that is itself JSON or form-encoded, as structure (to a bounded depth).

Each masked value is counted by kind in the trail's ``redacted`` object (never the matched text). The policy also
drops HTTP headers outside an allow-list (``authorization`` stays, masked), masks client-IP headers on request,
cuts nesting, long lists and long strings with markers, and trims the largest payloads first when a trail exceeds
its total size.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import orjson

from . import maskrules
from ._json import PLAIN, dumps, json_safe, key_text, to_plain
from .maskrules import CLIENT_IP_HEADERS, CUT_MARK, CUT_URL, DETECTORS, DRIVER_DUMPS, EXEMPT_KEYS, luhn_valid
from .sqlmask import SqlMask, analyse, mask_literals
from .urls import ENCODED, mask_encoded, mask_query, mask_url, mask_urls_in_text

__all__ = [
    "DEFAULT_ALLOWED_HEADERS",
    "DEFAULT_SENSITIVE_KEYS",
    "DEFAULT_VALUE_PATTERNS",
    "MASK",
    "Policy",
    "luhn_valid",
    "normalise_key",
]

_log = logging.getLogger("gotrails_otel")
MASK = "***"

DEFAULT_SENSITIVE_KEYS: frozenset[str] = frozenset(
    maskrules.SUBSTRING_KEYS + maskrules.WORD_KEYS + maskrules.EXACT_KEYS
)
"""The normalised sensitive keys masked by default (see :mod:`gotrails_otel.maskrules` for how each matches)."""

DEFAULT_VALUE_PATTERNS: dict[str, str] = {d.name: d.pattern for d in DETECTORS}
"""The value detectors by name (:data:`~gotrails_otel.maskrules.DETECTORS`); ``card`` matches are masked only when
Luhn-valid, ``basic`` only when they decode to ``user:password``."""

DEFAULT_ALLOWED_HEADERS: frozenset[str] = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "authorization",
        "cache-control",
        "content-encoding",
        "content-language",
        "content-length",
        "content-type",
        "cookie",
        "date",
        "etag",
        "expires",
        "host",
        "idempotency-key",
        "if-match",
        "if-none-match",
        "last-modified",
        "location",
        "origin",
        "proxy-authorization",
        "referer",
        "retry-after",
        "server",
        "set-cookie",
        "traceparent",
        "user-agent",
        "vary",
        "x-api-key",
        "x-correlation-id",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-request-id",
        "x-trace-id",
    }
)
"""HTTP headers kept in trails by default (credentials among them are masked); others are dropped and counted
(``dropped.headers``)."""

_NORMALISE = re.compile(r"[\s\-_.]+")
# key=value / "key": value / key: value / key => value inside text; the key is tested with Policy.is_sensitive. A key
# starts where a word starts (after an escape such as \n or after "--" too), so that a long word is scanned once, not
# from every character; it may be quoted, also with escaped quotes (JSON inside a JSON string: \"key\": \"value\").
# A value may be a quoted string (JSON, escaped JSON, 'SQL''s', b'bytes'), an opening bracket (the whole bracketed
# value is masked) or a bare word.
_KEY_EXTRA = "\u00ad\u200b-\u200f\u2010-\u2015\u2060\ufeff"  # format characters and dashes inside a key
_KEY = rf"(?:\d*[^\W\d]|\\u[0-9A-Fa-f]{{4}})(?:[\w.\-\[\]%{_KEY_EXTRA}]|\\u[0-9A-Fa-f]{{4}}){{0,127}}"
_PAIR = re.compile(
    r"""(?P<lead>(?:(?<=\\[nrt])|(?<=--)|(?<![\w.\-\[\]%\\])|(?<![\w\\])(?=[bu]?['"]))(?:[bu](?='))?"""
    rf"""(?P<q>\\{{1,3}}"|["']|)(?P<key>{_KEY})(?P=q)\s*(?:=>|[:=](?!>))\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"?|\\{1,3}"[^"]*"?|[bBuUrR]?'(?:[^'\\]|\\.|'')*'?|[{\[]"""
    r"""|(?:[^\s&,;"'}\]\\]|\\(?![nrt"\\]))+)"""
)
_ENTRY_PAYLOAD = ("request", "response", "metadata", "error")
_RESERVE = 256
_CLEAN_TEXT_MAX = 512
_CLEAN_CACHE_SIZE = 4096
_KEY_CACHE_SIZE = 8192
_CUT_WINDOW = 4096  # characters before the end of a cut text in which a cut secret is looked for
_SQL_CACHE_SIZE = 2048
# What a SQL statement or a GraphQL document starts with: a comment, a keyword followed by a space, a bracket, ``*``,
# ``;`` or the end (a keyword followed by ``=``, ``&``, ``:`` … is a query string's first parameter or a label), a
# parenthesised statement, a GraphQL selection set. A ``query`` beside ``args`` that starts otherwise (a query
# string, free text) is no statement: it is masked as text, password phrases included.
_STATEMENT_START = re.compile(
    r"\s*(?:/\*|--|\((?=\s*(?:\(|select\b|with\b|values\b|table\b))|\{(?=\s*[A-Za-z_.}])"
    r"|(?:select|insert|update|delete|with|create|alter|drop|truncate|pragma|begin|start|commit|rollback|savepoint"
    r"|release|set|reset|show|explain|describe|desc|call|exec|execute|merge|replace|upsert|values|grant|revoke|copy"
    r"|lock|unlock|vacuum|analyze|analyse|declare|fetch|move|close|prepare|deallocate|listen|notify|unlisten|discard"
    r"|use|refresh|cluster|reindex|comment|load|do|table|attach|detach|query|mutation|subscription|fragment)"
    r"(?=[\s(){*;]|\Z))",
    re.IGNORECASE,
)
_NESTED_MAX = 4  # levels of text inside text (JSON, base64 of JSON, percent-encoding) that are looked into
_PAYLOAD_KEYS = ("body", "message", "value", "args", "key", "messages", "commands", "replies")
_SQL_PLACEHOLDER = re.compile(r"\?|%s|\$\d+|:\w+|%\(\w+\)s")
_NAMED_GROUP = re.compile(r"\(\?P<([A-Za-z_]\w*)>")
# A route parameter: {name} / {name:converter} (Starlette, FastAPI), <name> / <converter:name> (Flask, Werkzeug).
_ROUTE_PARAMETER = re.compile(
    r"\{(?P<name>[A-Za-z_]\w*)(?::(?P<converter>[^}]*))?\}"
    r"|<(?:(?P<flask_converter>[A-Za-z_]\w*)(?:\([^)>]*\))?:)?(?P<flask_name>[A-Za-z_]\w*)>"
)
_QUOTES = frozenset({'"', "'", "\\"})
_GRAPHQL_BINDING = re.compile(r"(?<!\w)(?P<argument>[A-Za-z_]\w*)\s*:\s*\$(?P<variable>[A-Za-z_]\w*)")
_CARD_INT_MIN = 10**12  # the smallest 13-digit number
_CARD_INT_MAX = 10**19
_INT_MIN = -(2**63)
_INT_MAX = 2**64
_REDACTED = "\x00"  # prefix of the redaction counts inside the walk's one counter dict
_KEY_MASKED = _REDACTED + "key"
_SECRET_COMMANDS = frozenset({"AUTH"})
_CONFIG_SECRETS = frozenset({"requirepass", "masterauth", "tls-key-file-pass", "tls-client-key-file-pass"})
_HASH_SETS = frozenset({"HSET", "HMSET", "HSETNX"})
_HASH_GETS = frozenset({"HGET", "HMGET", "HGETDEL"})
_CONFIG_SETS = frozenset({("CONFIG", "SET"), ("SENTINEL", "SET"), ("SENTINEL", "CONFIG")})
_SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
# Commands whose recorded "key" is no key (a subcommand, a host, a script, a protocol version).
_NOT_A_KEY = frozenset(
    {"AUTH", "HELLO", "MIGRATE", "ACL", "CONFIG", "SENTINEL", "CLIENT", "SCRIPT", "FUNCTION", "CLUSTER", "COMMAND"}
    | _SCRIPT_COMMANDS
)
# Replies that are field/value pairs.
_PAIR_REPLIES = frozenset(
    {"HGETALL", "HRANDFIELD", "XRANGE", "XREVRANGE", "XREAD", "XREADGROUP", "XCLAIM", "XAUTOCLAIM", "XINFO"}
)
_ACL_RULE = re.compile(r"(?<!\S)[#>!<]\S+")
# Characters read as their ASCII twins in text (one for one, so that positions hold): full-width forms, digits of
# other scripts, Unicode spaces, zero-width characters (as "-", a separator inside keys and card numbers) and dashes.
_FOLDABLE = re.compile(
    r"[\uff01-\uff5e\u00a0\u2000-\u200d\u2010-\u2015\u202f\u205f\u2060\u2212\u3000\ufeff]|(?![0-9])\d"
)
_TEXT_FOLD: dict[int, str | int] = {
    **{code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)},
    **dict.fromkeys((0x00A0, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000), " "),
    **dict.fromkeys((*range(0x200B, 0x200E), 0x2060, 0xFEFF, *range(0x2010, 0x2016), 0x2212), "-"),
}
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")
# base64 of '{"', '[{', '["', '{ "', '{\n', '[\n' (standard and URL-safe alphabets)
_BASE64_JSON = frozenset({"eyJ", "W3s", "WyJ", "eyA", "ewo", "Wwo"})
_BASE64 = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}|[A-Za-z0-9_\-]{8,}={0,2}")
_RAW_STRUCTURE = re.compile(r"""[\s=&{}\[\]"':/@]""")
_T = TypeVar("_T")
# An XML or HTML tag: opening (with attributes, maybe empty "/>") or closing.
_TAG = re.compile(r"<(?P<close>/?)(?P<name>[A-Za-z_][\w.:\-]{0,127})(?P<attrs>(?:\s[^<>]*?)?)(?P<empty>/?)>")
_ATTR = re.compile(r"""(?<![\w:.\-])(?P<attr>[\w:.\-]+)\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s"'>]+)""")


def normalise_key(key: str) -> str:
    """A key as the policy compares it: lower case, without ``-``, ``_``, ``.`` and spaces."""
    return _NORMALISE.sub("", key).lower()


FieldRule = Callable[[tuple[str, ...], Any], Any]
"""A per-field rule: ``rule(path, value)`` returns the value to keep (return ``value`` to keep it as it is)."""


class _Nesting(threading.local):
    """How deep the current thread's masking is in text inside text (JSON, base64, percent-encoding); a class
    attribute gives every thread its 0 without a failed lookup."""

    level = 0


class _Detector:
    """One compiled value detector."""

    __slots__ = ("check", "group", "hints", "kind", "regex")

    def __init__(self, kind: str, expr: str, hints: tuple[str, ...], check: Callable[[str], bool] | None) -> None:
        self.kind = kind
        self.regex = re.compile(expr)
        self.hints = hints
        self.check = check
        self.group = "secret" in self.regex.groupindex


@dataclass(frozen=True)
class Policy:
    """The masking and size policy. Build it from a :class:`~gotrails_otel.TrailConfig` with its ``policy()``.

    Attributes:
        keys: normalised sensitive keys; the defaults match as :mod:`~gotrails_otel.maskrules` says (inside keys,
            as a word of a key, or as the whole key); added keys of four characters or more match inside longer
            keys, shorter ones as a word or the whole key.
        patterns: named regular expressions whose matches are masked in every string (the default detectors by
            name, plus custom expressions).
        allowed_headers / denied_headers: HTTP header filtering (``None`` allows all).
        field_rule: an optional per-field callable for custom rules; when it raises, the field is masked.
        mask_client_ip: mask the values of client-IP headers (``x-forwarded-for``, ``x-real-ip``, …).
        max_depth, max_items, max_string: structure limits; max_trail_bytes: total serialised size of a trail.
    """

    keys: frozenset[str] = DEFAULT_SENSITIVE_KEYS
    patterns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_VALUE_PATTERNS))
    allowed_headers: frozenset[str] | None = DEFAULT_ALLOWED_HEADERS
    denied_headers: frozenset[str] = frozenset()
    field_rule: FieldRule | None = None
    mask_client_ip: bool = False
    max_depth: int = 32
    max_items: int = 1000
    max_string: int = 16_384
    max_trail_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        substring = frozenset(maskrules.SUBSTRING_KEYS)
        words = frozenset(maskrules.WORD_KEYS) | {k for k in self.keys if len(k) < 4 and k not in substring}
        exact = frozenset(maskrules.EXACT_KEYS)
        object.__setattr__(self, "_substring", tuple(sorted(k for k in self.keys if k not in words | exact)))
        # Every substring key at once, as one expression (a trie): one search instead of one per key.
        object.__setattr__(self, "_substring_search", _substring_search(self._substring))  # type: ignore[attr-defined]
        object.__setattr__(self, "_words", frozenset(k for k in self.keys if k in words))
        object.__setattr__(self, "_exact", frozenset(k for k in self.keys if k in exact or k in words))
        object.__setattr__(self, "_exempt", frozenset(EXEMPT_KEYS) - self.keys)
        object.__setattr__(self, "_sensitive_cache", {})
        object.__setattr__(self, "_keys", {})  # object keys with nothing to mask in their text -> sensitive
        object.__setattr__(self, "_clean", set())
        object.__setattr__(self, "_clean_statements", set())  # statements with nothing to mask
        object.__setattr__(self, "_routes", {})  # route template -> its pattern and parameter names
        object.__setattr__(self, "_sql_cache", {})
        object.__setattr__(self, "_nesting", _Nesting())
        detectors, custom = _compile(self.patterns)
        object.__setattr__(self, "_gated", tuple(d for d in detectors if d.hints))
        object.__setattr__(self, "_ungated", (*[d for d in detectors if not d.hints], *custom))
        cuts = [d.cut for d in DETECTORS if d.cut and self.patterns.get(d.name) == d.pattern]
        object.__setattr__(self, "_cut_tail", re.compile(f"(?:{'|'.join([*cuts, CUT_URL])})(?={CUT_MARK}\\Z)"))
        gate = _gate({h for d in detectors for h in d.hints})
        object.__setattr__(self, "_gate", gate)
        object.__setattr__(self, "_gate_min", min((len(h) for d in detectors for h in d.hints), default=0))

    # ------------------------------------------------------------------------------------------ keys

    def is_sensitive(self, key: str) -> bool:
        """Whether values under ``key`` are masked."""
        cache: dict[str, bool] = self._sensitive_cache  # type: ignore[attr-defined]
        found = cache.get(key)
        if found is None:
            found = self._classify(key)
            if len(cache) >= _KEY_CACHE_SIZE:  # bounded; keys that repeat come back at once
                cache.clear()
            cache[key] = found
        return found

    def _classify(self, key: str) -> bool:
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if not key.isascii():
            key = maskrules.fold_key(key)
        norm = normalise_key(key)
        if norm in self._exempt:  # type: ignore[attr-defined]
            return False
        if norm in self._exact or self._substring_search(norm):  # type: ignore[attr-defined]
            return True
        words: frozenset[str] = self._words  # type: ignore[attr-defined]
        return any(word in words for word in maskrules.key_words(key))

    # ---------------------------------------------------------------------------------------- strings

    def mask_text(self, text: str) -> str:
        """``text`` with secret-looking values, URLs and sensitive ``key=value`` pairs masked."""
        return self._text(text, {})

    def _counted(self, text: str, error: bool = False) -> tuple[str, dict[str, int]]:
        """``text`` masked (as an error message when ``error``), with what was masked counted by kind."""
        counts: dict[str, int] = {}
        masked = self._text(self._driver(text, counts) if error else text, counts)
        return masked, {k[1:]: v for k, v in counts.items() if k.startswith(_REDACTED)}

    def _text(self, text: str, counts: dict[str, int]) -> str:
        if len(text) < 6:
            return text
        clean: set[str] = self._clean  # type: ignore[attr-defined]
        if text in clean:
            return text
        masked = self._mask_text(text, counts)
        if masked is text and len(text) <= _CLEAN_TEXT_MAX and self._top_level():
            # Statements, URLs and names repeat from request to request. Only text with nothing to mask is
            # remembered, so no secret is kept around by this.
            if len(clean) >= _CLEAN_CACHE_SIZE:
                clean.clear()
            clean.add(text)
        return masked

    def _mask_text(self, text: str, counts: dict[str, int], statement: bool = False) -> str:
        """``text`` masked; a ``statement`` (SQL, a GraphQL document) has its placeholders and variables kept and is
        not read for password phrases (``SET password = CASE WHEN …`` is no phrase)."""
        if not text.isascii() and _FOLDABLE.search(text):
            # Full-width forms, other scripts' digits, Unicode spaces and dashes are read as their ASCII twins
            # (a card number typed with a Japanese input method); when anything is masked, the folded text is kept.
            folded = _fold_text(text)  # nothing foldable is left in it: masked once more, as ASCII text
            masked = self._mask_text(folded, counts, statement)
            return text if masked is folded else masked
        original = text
        if text[-1] == CUT_MARK:
            text = self._cut(text, counts)
        first = text[0]
        if (first == "{" or first == "[") and text[-1] in "}]":
            nested = self._nested(text, counts)
            if nested is not None:
                return nested
        elif first in "eWw" and text[:3] in _BASE64_JSON and _BASE64.fullmatch(text):
            decoded = self._base64(text, counts)
            if decoded is not None:
                return decoded
        if "%" in text and not _RAW_STRUCTURE.search(text):
            # A value percent-encoded whole (%7B%22password%22…, https%3A%2F%2Fu%3Apw%40h): masked decoded.
            encoded = self._deeper(lambda: mask_encoded(text, lambda inner: self._text(inner, counts)))
            if encoded is not None:
                return encoded
            if self._nesting.level >= _NESTED_MAX and ENCODED.search(text):  # type: ignore[attr-defined]
                _redacted(counts, "nested")
                return MASK  # encoded deeper than it is looked into: not kept
        if "//" in text:
            text = mask_urls_in_text(
                text, self.is_sensitive, lambda kind: _redacted(counts, kind), self._masker(counts)
            )
        size = len(text)
        gate = self._gate  # type: ignore[attr-defined]
        if gate is not None and size >= self._gate_min:  # type: ignore[attr-defined]
            hits = gate.findall(text.lower())
            if hits:
                for detector in self._gated:  # type: ignore[attr-defined]
                    if statement and detector.kind == "password_phrase":
                        continue
                    if any(h in hits for h in detector.hints) and detector.regex.search(text):
                        text = self._detect(detector, text, counts)
        for detector in self._ungated:  # type: ignore[attr-defined]
            if detector.regex.search(text):
                text = self._detect(detector, text, counts)
        if "<" in text and not statement:
            text = self._markup(text, counts)
        if "=" in text or ":" in text:
            if "&" in text and " " not in text and "://" not in text and not statement:
                text = mask_query(text, self.is_sensitive, lambda kind: _redacted(counts, kind), self._masker(counts))
            text = self._pairs(text, counts, statement)
        return original if text == original else text

    def _cut(self, text: str, counts: dict[str, int]) -> str:
        """A cut text (ending with ``…``) with what the cut left of a secret at its end masked: the start of a card
        number or of a token, a URL cut inside its authority (each detector's ``cut`` expression)."""
        tail = self._cut_tail.search(text, max(0, len(text) - _CUT_WINDOW))  # type: ignore[attr-defined]
        if tail is None:
            return text
        _redacted(counts, "cut")
        return f"{text[: tail.start()]}{MASK}{CUT_MARK}"

    def _detect(self, detector: _Detector, text: str, counts: dict[str, int]) -> str:
        check = detector.check
        group = detector.group

        def replace(match: re.Match[str]) -> str:
            whole = match.group(0)
            if check is not None and not check(whole):
                return whole
            if group:
                start, end = match.span("secret")
                offset = match.start()
                masked = f"{whole[: start - offset]}{MASK}{whole[end - offset :]}"
            else:
                masked = MASK
            if masked != whole:  # a value masked already (password=***) is not counted again
                _redacted(counts, detector.kind)
            return masked

        return detector.regex.sub(replace, text)

    def _pairs(self, text: str, counts: dict[str, int], statement: bool = False) -> str:
        """Sensitive ``key=value`` / ``"key": value`` pairs masked; a bracketed value is masked whole (to the end of
        the text when it is cut). In a ``statement`` only quoted values are masked (``password = md5(%s)``,
        ``login(password: $p)`` name a function or a variable, and SQL literals are masked by binding)."""
        pieces: list[str] = []
        last = 0
        position = 0
        search = _PAIR.search
        while True:
            match = search(text, position)
            if match is None:
                break
            value = match.group("value")
            position = match.end()
            key = match.group("key")
            if "\\u" in key:  # a non-ASCII key as JSON escapes it (Python's json.dumps does by default)
                key = _unescape(key)
            if (
                not self.is_sensitive(key)
                or _SQL_PLACEHOLDER.fullmatch(value)
                or value == MASK
                or (statement and value[:1] not in _QUOTES)
            ):
                if value[:1] in _OPENERS or value[1:2] == "'":
                    position = match.start("value") + 1  # look for pairs inside the brackets or the quotes
                continue
            start = match.start("value")
            if value in ("{", "["):
                end = _closing(text, start)
                masked = MASK
            else:
                end = match.end()
                masked = _masked_value(value)
                if masked == value:
                    continue
            pieces.append(text[last:start])
            pieces.append(masked)
            last = position = end
            _redacted(counts, "pair")
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def _markup(self, text: str, counts: dict[str, int]) -> str:
        """XML and HTML: the content of an element whose name is sensitive (``<wsse:Password>…</wsse:Password>``,
        ``<credentials><key>…</key></credentials>``) masked whole, to its closing tag or to the end of the text
        when it is cut; and the ``value``/``content`` of an ``<input>`` or ``<meta>`` whose ``name``, ``id`` or
        ``property`` is sensitive (``<input name="csrf_token" value="…">``, ``<meta name="csrf-token" …>``)."""
        pieces: list[str] = []
        last = 0
        position = 0
        size = len(text)
        search = _TAG.search
        while position < size:
            tag = search(text, position)
            if tag is None:
                break
            position = tag.end()
            name = tag.group("name")
            if tag.group("close"):
                continue
            attrs = tag.group("attrs")
            if attrs and "=" in attrs and name.lower() in ("input", "meta"):
                masked_attrs = self._form_control(attrs, counts)
                if masked_attrs is not attrs:
                    pieces.append(text[last : tag.start("attrs")])
                    pieces.append(masked_attrs)
                    last = tag.end("attrs")
                continue
            if tag.group("empty") or not self.is_sensitive(name.rpartition(":")[2]):
                continue
            closing = text.find(f"</{name}", position)
            if closing != -1:
                end = closing
            elif text[-1] == CUT_MARK:
                end = size  # cut before the element closed: masked to the end
            else:  # never closed (not XML after all, or HTML): its text up to the next tag
                following = text.find("<", position)
                end = size if following == -1 else following
            content = text[position:end]
            if content and content != MASK and content != CUT_MARK:
                pieces.append(text[last:position])
                pieces.append(MASK if closing != -1 or text[-1] != CUT_MARK else MASK + CUT_MARK)
                last = end
                _redacted(counts, "markup")
            position = end
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def _form_control(self, attrs: str, counts: dict[str, int]) -> str:
        found = {m.group("attr").lower(): m for m in _ATTR.finditer(attrs)}
        named = any(
            key in found and self.is_sensitive(found[key].group("value").strip("\"'"))
            for key in ("name", "id", "property")
        )
        value = found.get("value") or found.get("content")
        if not named or value is None or value.group("value").strip("\"'") in ("", MASK):
            return attrs
        _redacted(counts, "markup")
        quote = value.group("value")[0] if value.group("value")[0] in "\"'" else ""
        return f"{attrs[: value.start('value')]}{quote}{MASK}{quote}{attrs[value.end('value') :]}"

    def _deeper(self, mask: Callable[[], _T]) -> _T | None:
        """``mask()`` one level deeper into text inside text (JSON, base64, percent-encoding), or ``None`` past
        :data:`_NESTED_MAX` levels."""
        local = self._nesting  # type: ignore[attr-defined]
        level = local.level
        if level >= _NESTED_MAX:
            return None
        local.level = level + 1
        try:
            return mask()
        finally:
            local.level = level

    def _top_level(self) -> bool:
        """Whether masking is outside any text inside text: only there is a text with nothing to mask remembered as
        such (deeper, a text is not looked into as far, so it may hold what the top level would mask)."""
        return not self._nesting.level  # type: ignore[attr-defined]

    def _masker(self, counts: dict[str, int]) -> Callable[[str], str]:
        """The text masker for decoded values (percent-encoded query parameters), one level deeper."""

        def mask(inner: str) -> str:
            masked = self._deeper(lambda: self._text(inner, counts))
            return inner if masked is None else masked

        return mask

    def _nested(self, text: str, counts: dict[str, int]) -> str | None:
        """A string that is itself JSON, masked as structure (whole past :data:`_NESTED_MAX` levels); ``None`` when
        it is not JSON."""
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, (dict, list)):
            return None
        walked = self._deeper(lambda: self._walk(parsed, (), self.max_depth - 1, counts))
        if walked is None:
            _redacted(counts, "nested")
            return MASK  # JSON nested deeper than it is looked into: not kept
        if walked == parsed:
            return text
        return dumps(walked).decode()

    def _base64(self, text: str, counts: dict[str, int]) -> str | None:
        """A string that is base64 of a JSON object or array (a Pub/Sub message's data, a state parameter), masked
        as structure and encoded again; ``None`` when it is not (or nothing in it is masked)."""
        urlsafe = "-" in text or "_" in text
        try:
            raw = (base64.urlsafe_b64decode if urlsafe else base64.b64decode)(text + "=" * (-len(text) % 4))
            parsed = orjson.loads(raw)
        except (binascii.Error, ValueError):
            return None
        if not isinstance(parsed, (dict, list)):
            return None
        walked = self._deeper(lambda: self._walk(parsed, (), self.max_depth - 1, counts))
        if walked is None:
            _redacted(counts, "nested")
            return MASK  # JSON encoded deeper than it is looked into: not kept
        if walked == parsed:
            return None
        encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(dumps(walked)).decode()
        return encoded.rstrip("=") if not text.endswith("=") else encoded

    def _driver(self, text: str, counts: dict[str, int]) -> str:
        low = text.lower()
        for dump, regex in _DRIVER_REGEXES:
            if dump.hint not in low:
                continue
            replacement = dump.replacement

            def replace(match: re.Match[str], replacement: str | None = replacement, name: str = dump.name) -> str:
                start, end = match.span("secret")
                secret = match.group("secret")
                if replacement is None:
                    masked = self._sql(secret).statement if name == "sqlalchemy_sql" else mask_literals(secret)[0]
                    if masked == secret:
                        return match.group(0)
                else:
                    masked = replacement
                _redacted(counts, "driver_message")
                offset = match.start()
                whole = match.group(0)
                return f"{whole[: start - offset]}{masked}{whole[end - offset :]}"

            text = regex.sub(replace, text)
            if dump.name == "sqlalchemy_parameters" and "[parameters: ***]" not in text:
                # An unusual shape: drop everything from the dump on rather than keep a value.
                cut = text.find("[parameters: ")
                if cut != -1:
                    text = text[:cut] + "[parameters: ***]"
                    _redacted(counts, "driver_message")
            low = text.lower()
        return text

    # -------------------------------------------------------------------------------------- documents

    def apply(self, trail: dict[str, Any], *, total: bool = True) -> dict[str, Any]:
        """Mask and limit ``trail`` in place (and return it).

        With ``total=False`` the trail's total size is left to the caller, who serialises the trail anyway and then
        calls :meth:`fit` with its size (the flush pipeline does, at the seal), so that no trail is serialised twice.

        Only what can hold payload is walked: the request, response, metadata and errors, and for each step and
        integration its name, request, response, metadata and error. Ids, timings and the trail's own structure
        are left as they are (and the trail's lists are bounded by the span and error limits, never cut here).
        What was masked is counted by kind in ``trail["redacted"]``.
        """
        counts: dict[str, int] = {}
        depth = self.max_depth
        entry = trail.get("entry")
        is_http = isinstance(entry, dict) and entry.get("kind") == "http"
        request = trail.get("request")
        route = None
        if is_http and type(request) is dict:
            if type(request.get("query")) is str:
                request["query"] = self._query(request["query"], counts)
            route = request.get("route")
            if type(route) is str:
                path = request.get("path")
                if type(path) is str and ("{" in route or "<" in route):
                    request["path"] = self._path(path, route, counts)
                request["route"] = None  # masked below, as a template
            else:
                route = None
        if type(request) is dict and "arg_names" in request:  # a task run's positional arguments
            trail["request"] = self._mask_named_args(request, counts)
        for key in ("request", "response", "metadata"):
            if key in trail:
                trail[key] = self._walk(trail[key], (key,), depth, counts)
        if route is not None:
            # A route is a template from the application's code (/reset/<string:token>), not text to read for pairs
            # or markup: only secrets that a detector recognises are masked in it.
            trail["request"]["route"] = route if route in self._clean_statements else self._statement(route, counts)  # type: ignore[attr-defined]
        if trail.get("errors"):
            trail["errors"] = [self._error(error, ("errors",), depth, counts) for error in trail["errors"]]
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            entry["name"] = self._string(entry["name"], counts)
        for group in ("internal_steps", "integrations"):
            for item in trail.get(group) or ():
                if isinstance(item.get("name"), str):
                    item["name"] = self._string(item["name"], counts)
                kind = item.get("type")
                if kind == "cache":
                    self._mask_cache(item, counts)
                elif type(item.get("request")) is dict and "arg_names" in item["request"]:  # a task published
                    item["request"] = self._mask_named_args(item["request"], counts)
                elif kind == "http" and isinstance(item.get("request"), dict):
                    url = item["request"].get("url")
                    if isinstance(url, str):
                        item["request"]["url"] = mask_url(
                            url, self.is_sensitive, lambda k: _redacted(counts, k), self._masker(counts)
                        )
                for key in _ENTRY_PAYLOAD:
                    if item.get(key) is not None:
                        if key == "error":
                            item[key] = self._error(item[key], (group, key), depth - 1, counts)
                        else:
                            item[key] = self._walk(item[key], (group, key), depth - 1, counts)
        if is_http:
            self._filter_headers(trail.get("request"), counts)
            self._filter_headers(trail.get("response"), counts)
        for item in trail.get("integrations") or ():
            if item.get("type") == "http":
                self._filter_headers(item.get("request"), counts)
                self._filter_headers(item.get("response"), counts)
        self._incoming_ids(trail, counts)
        if total:
            self._limit_total(trail, counts)
        redacted = trail.setdefault("redacted", {})
        if counts:
            dropped = trail.setdefault("dropped", {})
            for key, value in counts.items():
                if key[0] == _REDACTED:
                    redacted[key[1:]] = redacted.get(key[1:], 0) + value
                else:
                    dropped[key] = dropped.get(key, 0) + value
        return trail

    def _incoming_ids(self, trail: dict[str, Any], counts: dict[str, int]) -> None:
        """``trace_id`` and ``request_id`` taken from the caller's X-Trace-ID / X-Request-ID: one that a detector
        recognises as a secret (a card number, an access key id) is replaced by OpenTelemetry's trace id, as the
        same value is masked in the headers."""
        otel = trail.get("otel")
        fallback = otel.get("trace_id") if isinstance(otel, dict) else None
        for name in ("trace_id", "request_id"):
            value = trail.get(name)
            if (
                type(value) is str
                and isinstance(fallback, str)
                and value != fallback
                and len(value) >= 6
                and value not in self._clean  # type: ignore[attr-defined]
                and self._mask_text(value, {}) != value
            ):
                trail[name] = fallback
                _redacted(counts, "request_id")

    def _walk(self, value: Any, path: tuple[str, ...], depth: int, counts: dict[str, int], entry: bool = False) -> Any:
        """Mask and limit one value. ``path`` is extended only when a field rule needs it; ``entry`` marks a step
        or integration, whose ids are left as they are.

        Values of other types than JSON's own (captured bodies not decoded yet, tuples, bytes, mappings, subclasses
        of ``str`` …) are converted here, node by node as the walk meets them, as :func:`~._json.json_safe` converts
        them: so a raw fold's payloads are converted, masked and limited in one pass."""
        kind = type(value)
        if kind not in PLAIN:
            value, depth = to_plain(value, depth)
            kind = type(value)
        rule = self.field_rule
        if rule is not None and path:
            try:
                value = rule(path, value)
            except Exception:  # a failing custom rule masks the field: fail closed, never leak
                _log.debug("gotrails: field rule failed on %s; masked", ".".join(path), exc_info=True)
                return MASK
            kind = type(value)
            if kind not in PLAIN:
                value, depth = to_plain(value, depth)
                kind = type(value)
        if kind is str:
            return self._string(value, counts)
        if kind is dict:
            if depth <= 0:
                _count(counts, "depth")
                return "[gotrails: nested too deep]"
            result: dict[str, Any] = {}
            query = value.get("query")
            if query is not None and ("args" in value or "variables" in value):
                value = _statement_plain(value)  # read before it is walked: as JSON types
                query = value.get("query")
            if type(query) is str and ("args" in value or isinstance(value.get("variables"), dict)):
                # A SQL statement and its arguments, or a GraphQL document and its variables: masked by binding.
                value = dict(self._mask_sql(value, counts) if "args" in value else self._mask_graphql(value, counts))
                statement = value.pop("query")
                clean_statements: set[str] = self._clean_statements  # type: ignore[attr-defined]
                if statement in clean_statements:
                    result["query"] = statement
                elif _STATEMENT_START.match(statement):
                    result["query"] = self._statement(statement, counts)
                else:  # no statement (a query string in a body): text like any other, password phrases included
                    result["query"] = self._string(statement, counts)
            items = value.items()
            if len(value) > self.max_items:
                items = list(items)[: self.max_items]
                _count(counts, "items", len(value) - self.max_items)
            known = self._keys.get  # type: ignore[attr-defined]
            clean: set[str] = self._clean  # type: ignore[attr-defined]
            max_string = self.max_string
            max_items = self.max_items
            card_min = _CARD_INT_MIN
            masked = 0
            for key, item in items:
                sensitive = known(key)
                if sensitive is None:
                    if type(key) is not str:
                        key = key_text(key)
                    sensitive, shown = self._key(key, counts)
                    if shown is not key:  # the key itself holds a secret (a card number, a token, a URL …)
                        key = _unique_key(result, shown)
                item_kind = type(item)
                if sensitive:
                    if item_kind not in PLAIN:  # masked as what it converts to (a list keeps its length)
                        item = to_plain(item, depth - 1)[0]
                        item_kind = type(item)
                    if item is None or item_kind is bool:
                        result[key] = item  # null and true/false say nothing
                    else:
                        result[key] = [MASK] * min(len(item), self.max_items) if item_kind is list else MASK
                        masked += 1
                elif rule is not None:
                    result[key] = (
                        item if item is None or item_kind is bool else self._walk(item, (*path, key), depth - 1, counts)
                    )
                elif item_kind is str:
                    # Strings are most of a payload: the common cases are settled here, without a call.
                    if len(item) < 6 or (len(item) <= max_string and item in clean):
                        result[key] = item
                    else:
                        result[key] = self._string(item, counts)
                elif item is None or item_kind is bool:
                    result[key] = item
                elif (item_kind is int or item_kind is float) and -card_min < item < card_min:
                    result[key] = item  # nothing to mask in a number too small to be a card number
                elif (
                    item_kind is list
                    and len(item) == 1
                    and depth > 1
                    and max_items
                    and type(only := item[0]) is str
                    and (len(only) < 6 or (len(only) <= max_string and only in clean))
                ):
                    result[key] = [only]  # one string with nothing to mask (a header's value): as the walk keeps it
                else:
                    result[key] = self._walk(item, path, depth - 1, counts)
            if masked:
                counts[_KEY_MASKED] = counts.get(_KEY_MASKED, 0) + masked
            if len(value) > self.max_items:
                result["$more_keys"] = len(value) - self.max_items
            return result
        if kind is list:
            if depth <= 0:
                _count(counts, "depth")
                return "[gotrails: nested too deep]"
            items = value if len(value) <= self.max_items else value[: self.max_items]
            if rule is not None:
                walked = [self._walk(item, path, depth - 1, counts) for item in items]
            else:
                # As in a dict: strings, small numbers, null and booleans are settled here, without a call.
                walked = []
                append = walked.append
                clean = self._clean  # type: ignore[attr-defined]
                max_string = self.max_string
                for item in items:
                    item_kind = type(item)
                    if item_kind is str:
                        if len(item) < 6 or (len(item) <= max_string and item in clean):
                            append(item)
                        else:
                            append(self._string(item, counts))
                    elif (
                        item is None
                        or item_kind is bool
                        or ((item_kind is int or item_kind is float) and -_CARD_INT_MIN < item < _CARD_INT_MIN)
                    ):
                        append(item)
                    else:
                        append(self._walk(item, path, depth - 1, counts))
            if len(value) > self.max_items:
                walked.append({"$more_items": len(value) - self.max_items})
                _count(counts, "items", len(value) - self.max_items)
            return walked
        if kind is int and not _INT_MIN <= value < _INT_MAX:
            return self._string(str(value), counts)  # outside 64 bits (OTLP and orjson limits): as text
        if kind is float and not math.isfinite(value):
            return str(value)
        if (kind is int or kind is float) and _CARD_INT_MIN <= abs(value) < _CARD_INT_MAX and "card" in self.patterns:
            if kind is float and not value.is_integer():
                return value
            digits = str(int(abs(value)))
            if digits[0] in "23456" and luhn_valid(digits):
                _redacted(counts, "card")
                return MASK
        return value

    def _key(self, key: str, counts: dict[str, int]) -> tuple[bool, str]:
        """Whether values under ``key`` are masked, and the key as the trail shows it: masked like any text, as a
        key can hold a secret too (a map keyed by card numbers, tokens or connection URLs). Keys with nothing to
        mask are remembered (so no secret is kept around by this)."""
        shown = key if len(key) < 6 else self._mask_text(key, counts)
        if shown is not key:
            return self._classify(shown), shown
        sensitive = self.is_sensitive(key)
        if self._top_level():
            cache: dict[str, bool] = self._keys  # type: ignore[attr-defined]
            if len(cache) >= _KEY_CACHE_SIZE:
                cache.clear()
            cache[key] = sensitive
        return sensitive, key

    def _string(self, text: str, counts: dict[str, int]) -> str:
        """One string value: cut at ``max_string``, then masked (text with nothing to mask is remembered)."""
        size = len(text)
        if size > self.max_string:
            _count(counts, "string_chars", size - self.max_string)
            head = self._mask_text(f"{text[: self.max_string]}{CUT_MARK}", counts)
            return f"{head}[+{size - self.max_string} chars]"
        if size < 6:
            return text
        clean: set[str] = self._clean  # type: ignore[attr-defined]
        if text in clean:
            return text
        masked = self._mask_text(text, counts)
        if masked is text and size <= _CLEAN_TEXT_MAX and self._top_level():
            if len(clean) >= _CLEAN_CACHE_SIZE:
                clean.clear()
            clean.add(text)
        return masked

    def _statement(self, text: str, counts: dict[str, int]) -> str:
        """A SQL statement or GraphQL document: cut at ``max_string``, masked as a statement (placeholders kept)."""
        size = len(text)
        if size > self.max_string:
            _count(counts, "string_chars", size - self.max_string)
            head = self._mask_text(f"{text[: self.max_string]}{CUT_MARK}", counts, statement=True)
            return f"{head}[+{size - self.max_string} chars]"
        clean: set[str] = self._clean_statements  # type: ignore[attr-defined]
        if size < 6 or text in clean:
            return text
        masked = self._mask_text(text, counts, statement=True)
        if masked is text and self._top_level():
            if len(clean) >= _SQL_CACHE_SIZE:
                clean.clear()
            clean.add(text)
        return masked

    def _mask_named_args(self, request: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
        """Positional arguments named by ``arg_names`` (a Celery task's parameters): masked by name."""
        args, names = request.get("args"), request.get("arg_names")
        if not isinstance(args, list) or not isinstance(names, list):
            return request
        masked = [
            MASK
            if i < len(names) and isinstance(names[i], str) and self.is_sensitive(names[i]) and v is not None
            else v
            for i, v in enumerate(args)
        ]
        if masked == args:
            return request
        _redacted(counts, "argument", sum(1 for a, b in zip(args, masked, strict=True) if a is not b))
        return {**request, "args": masked}

    def _mask_graphql(self, request: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
        """A GraphQL request whose variables bound to a sensitive argument (``login(password: $p)``) are masked
        (the other variables are masked by key as any object is)."""
        variables = request["variables"]
        masked = {
            match.group("variable")
            for match in _GRAPHQL_BINDING.finditer(request["query"])
            if match.group("variable") in variables and self.is_sensitive(match.group("argument"))
        }
        if not masked:
            return request
        _redacted(counts, "graphql_variable", len(masked))
        return {**request, "variables": {k: MASK if k in masked else v for k, v in variables.items()}}

    def _error(self, error: Any, path: tuple[str, ...], depth: int, counts: dict[str, int]) -> Any:
        """An ``errors[]`` entry or a step's/integration's ``error``: its message and type are untrusted text."""
        if isinstance(error, dict):
            error = dict(error)
            for key in ("message", "type"):
                if isinstance(error.get(key), str):
                    error[key] = self._driver(error[key], counts)
        return self._walk(error, path, depth, counts)

    def _path(self, path: str, route: str, counts: dict[str, int]) -> str:
        """The request path with the segments bound to a sensitive route parameter masked: ``/reset/{token}``
        (FastAPI, Starlette), ``/reset/<token>`` (Flask) — magic links, invitations, password resets."""
        cache: dict[str, tuple[re.Pattern[str], list[str]]] = self._routes  # type: ignore[attr-defined]
        compiled = cache.get(route)
        if compiled is None:
            compiled = _route_pattern(route)
            if len(cache) >= _SQL_CACHE_SIZE:
                cache.clear()
            cache[route] = compiled
        pattern, names = compiled
        if not any(self.is_sensitive(name) for name in names):
            return path
        match = pattern.fullmatch(path) or pattern.search(path)  # a mounted app's route may lack the mount prefix
        if match is None:
            return path
        pieces = []
        last = 0
        for index, name in enumerate(names):
            start, end = match.span(f"p{index}")
            if start < 0 or not self.is_sensitive(name) or path[start:end] == MASK:
                continue
            pieces.append(path[last:start])
            pieces.append(MASK)
            last = end
            _redacted(counts, "path_parameter")
        return "".join(pieces) + path[last:] if pieces else path

    def _query(self, query: str, counts: dict[str, int]) -> str:
        return mask_query(query, self.is_sensitive, lambda kind: _redacted(counts, kind), self._masker(counts))

    # ------------------------------------------------------------------------------------------- SQL

    def _sql(self, statement: str) -> SqlMask:
        cache: dict[str, SqlMask] = self._sql_cache  # type: ignore[attr-defined]
        found = cache.get(statement)
        if found is None:
            found = analyse(statement, self.is_sensitive)
            if len(cache) >= _SQL_CACHE_SIZE:
                cache.clear()
            cache[statement] = found
        return found

    def _mask_sql(self, request: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
        """A copy of ``request`` whose inline literals and arguments bound to a sensitive column are masked, where
        the statement shows the binding (``INSERT INTO t (a, password) VALUES (?, md5(?))``, ``SET pin = :p`` …);
        every argument when the statement could not be analysed."""
        sql = self._sql(request["query"])
        args = request.get("args")
        changed: dict[str, Any] = {}
        if sql.masked_literals:
            changed["query"] = sql.statement
            _redacted(counts, "sql_literal", sql.masked_literals)
        if isinstance(args, (list, dict)) and (sql.names or sql.positions or sql.everything):
            masked = _mask_args(args, sql, request.get("executemany"))
            if masked is not args:
                changed["args"] = masked
                _redacted(counts, "sql_argument")
        return {**request, **changed} if changed else request

    # ----------------------------------------------------------------------------------------- Redis

    def _mask_cache(self, item: dict[str, Any], counts: dict[str, int]) -> None:
        """Redis credential commands and sensitive hash fields (see ``maskrules.REDIS_CREDENTIALS``)."""
        request = item.get("request")
        response = item.get("response")
        if not isinstance(request, dict):
            return
        commands = request.get("commands")
        if isinstance(commands, list):
            replies = response.get("replies") if isinstance(response, dict) else None
            for index, command in enumerate(commands):
                reply = replies[index] if isinstance(replies, list) and index < len(replies) else None
                if isinstance(command, dict):
                    self._mask_command(command, reply if isinstance(reply, dict) else None, counts)
        self._mask_command(request, response if isinstance(response, dict) else None, counts)

    def _mask_command(self, request: dict[str, Any], reply: dict[str, Any] | None, counts: dict[str, int]) -> None:
        name = request.get("command")
        if not isinstance(name, str) or "commands" in request:  # a pipeline: its commands are masked one by one
            return
        if " " in name and name.strip().count(" ") >= 1:
            # redis-py sends some commands as one two-word name ("CONFIG SET", "ACL SETUSER"): the recorded key is
            # then the first argument. Masked as CONFIG / SET / [key, *args], and written back.
            command, subcommand = name.split(None, 1)
            rest = request.get("args")
            flat = {
                "command": command,
                "key": subcommand.strip(),
                "args": [request.get("key"), *(rest if isinstance(rest, list) else ())],
            }
            self._mask_command(flat, reply, counts)
            request["key"] = flat["args"][0]
            if isinstance(rest, list):
                request["args"] = flat["args"][1:]
            return
        name = name.upper()
        args = request.get("args")
        args = list(args) if isinstance(args, list) else None
        key = request.get("key")
        sub = key.upper() if isinstance(key, str) else ""
        secret: set[int] = set()
        if name in _SECRET_COMMANDS:
            if key is not None:
                request["key"] = MASK
                _redacted(counts, "redis_credential")
            secret = set(range(len(args or ())))
        elif args is not None and name in ("HELLO", "MIGRATE"):
            if name == "HELLO" and sub == "AUTH":  # HELLO AUTH user pw (no protocol version)
                secret = {0, 1}
            words = [str(a).upper() for a in args]
            for index, word in enumerate(words):
                if word == "AUTH":
                    secret |= {index + 1, index + 2} if name == "HELLO" else {index + 1}
                elif word == "AUTH2":
                    secret |= {index + 1, index + 2}
        elif args is not None and name == "ACL" and sub == "SETUSER":
            secret = {i for i, a in enumerate(args) if isinstance(a, str) and a[:1] in (">", "<", "#", "!")}
        elif args is not None and (name, sub) in _CONFIG_SETS:
            # CONFIG SET requirepass …, SENTINEL SET <master> auth-pass …, SENTINEL CONFIG SET sentinel-pass …
            secret = {i + 1 for i, a in enumerate(args) if isinstance(a, str) and self._config_secret(a)}
        elif args is not None and name in _HASH_SETS:
            secret = {i + 1 for i in range(0, len(args) - 1, 2) if self.is_sensitive(str(args[i]))}
        elif name in _HASH_GETS and args:
            sensitive = [self.is_sensitive(str(a)) for a in args]
            if reply is not None and any(sensitive) and "value" in reply:
                reply["value"] = _mask_positions(reply["value"], sensitive)
                _redacted(counts, "redis_credential")
        elif args is not None and name in ("MSET", "MSETNX"):  # key v1 k2 v2 …: values by their key
            secret = {0} if isinstance(key, str) and self._redis_key(key) else set()
            secret |= {i + 1 for i in range(1, len(args) - 1, 2) if self._redis_key(str(args[i]))}
        elif args is not None and name == "XADD":  # key [options] id field value …: values by field name
            fields = _xadd_fields(args)
            secret = {i + 1 for i in range(fields, len(args) - 1, 2) if self.is_sensitive(str(args[i]))}
        elif args and name in _SCRIPT_COMMANDS:  # script numkeys key … arg …: the args when a key is sensitive
            count = int(args[0]) if str(args[0]).isdigit() else 0
            if any(self._redis_key(str(k)) for k in args[1 : 1 + count]):
                secret = set(range(1 + count, len(args)))
        if isinstance(key, str) and name not in _NOT_A_KEY and self._redis_key(key):
            # Any command on a key naming a secret (user:1:token, session:…, otp:…): its values and its reply.
            secret |= set(range(len(args or ()))) if name not in _HASH_SETS else set()
            if reply is not None and reply.get("value") is not None:
                reply["value"] = MASK
                _redacted(counts, "redis_credential")
        keys = request.get("keys")
        if isinstance(keys, list) and reply is not None and "value" in reply:  # MGET user:1:token …
            sensitive = [isinstance(k, str) and self._redis_key(k) for k in keys]
            if any(sensitive):
                reply["value"] = _mask_positions(reply["value"], sensitive)
                _redacted(counts, "redis_credential")
        if reply is not None and reply.get("value") is not None:
            if name in _PAIR_REPLIES or (name, sub) in (("CONFIG", "GET"), ("ACL", "GETUSER")):
                reply["value"] = self._reply_pairs(reply["value"], counts)  # CONFIG GET *, HGETALL, XRANGE …
            if name == "ACL" and sub in ("LIST", "GETUSER"):
                reply["value"] = _acl_rules(reply["value"], counts)  # user bob on #<sha256> ~* +@all
        if args is not None and secret:
            masked = [MASK if i in secret and a is not None else a for i, a in enumerate(args)]
            if masked != args:
                request["args"] = masked
                _redacted(counts, "redis_credential")

    def _redis_key(self, key: str) -> bool:
        """Whether a Redis key names a secret: one of its ``:``/``.``/``/`` segments is a sensitive key."""
        known = self._sensitive_cache.get  # type: ignore[attr-defined]
        for segment in key.replace(".", ":").replace("/", ":").split(":"):
            if segment:
                sensitive = known(segment)
                if sensitive is None:
                    sensitive = self.is_sensitive(segment)
                if sensitive:
                    return True
        return False

    def _config_secret(self, name: str) -> bool:
        return name.lower() in _CONFIG_SECRETS or self.is_sensitive(name)

    def _reply_pairs(self, value: Any, counts: dict[str, int]) -> Any:
        """A reply of field/value pairs (a flat list: CONFIG GET, HGETALL, ACL GETUSER, stream entries) with the
        values of sensitive fields masked, at any depth."""
        if not isinstance(value, list):
            return value
        if len(value) >= 2 and len(value) % 2 == 0 and all(isinstance(value[i], str) for i in range(0, len(value), 2)):
            masked = list(value)
            for i in range(0, len(value), 2):
                if self._config_secret(value[i]):
                    if value[i + 1] is not None and value[i + 1] != MASK:
                        masked[i + 1] = MASK
                        _redacted(counts, "redis_credential")
                else:
                    masked[i + 1] = self._reply_pairs(value[i + 1], counts)
            return masked
        return [self._reply_pairs(item, counts) for item in value]

    # --------------------------------------------------------------------------------------- headers

    def _filter_headers(self, section: Any, counts: dict[str, int]) -> None:
        if not isinstance(section, dict):
            return
        headers = section.get("headers")
        if not isinstance(headers, dict):
            return
        kept = {}
        for name, values in headers.items():
            low = name.lower()
            if low in self.denied_headers or (self.allowed_headers is not None and low not in self.allowed_headers):
                _count(counts, "headers")
                continue
            if self.mask_client_ip and low in CLIENT_IP_HEADERS:
                values = [MASK] * len(values) if isinstance(values, list) else MASK
                _redacted(counts, "client_ip")
            kept[name] = values
        section["headers"] = kept

    # ----------------------------------------------------------------------------------- total size

    def fit(self, trail: dict[str, Any], size: int) -> bool:
        """Trim the largest payloads of a masked ``trail`` whose serialised ``size`` exceeds ``max_trail_bytes``, as
        :meth:`apply` does, counting what it trims in ``trail["dropped"]``; ``True`` when it changed the trail."""
        if size <= self.max_trail_bytes:
            return False
        counts: dict[str, int] = {}
        self._limit_total(trail, counts, size)
        if not counts:
            return False
        dropped = trail.setdefault("dropped", {})
        for key, value in counts.items():
            dropped[key] = dropped.get(key, 0) + value
        return True

    def _limit_total(self, trail: dict[str, Any], counts: dict[str, int], size: int | None = None) -> None:
        if size is None:
            size = len(dumps(trail))
        if size <= self.max_trail_bytes:
            return
        limit = self.max_trail_bytes - _RESERVE  # room for the counts added to "dropped" afterwards
        candidates = [
            (len(dumps(owner[key])), owner, key)
            for owner in _payload_owners(trail)
            for key in _PAYLOAD_KEYS
            if owner.get(key) is not None
        ]
        candidates.sort(key=lambda c: c[0], reverse=True)
        for payload_size, owner, key in candidates:
            if size <= limit:
                break
            owner[key] = {"$trimmed": {"size": payload_size}}
            size -= payload_size - len(dumps(owner[key]))
            _count(counts, "trimmed_payloads")
            _count(counts, "trimmed_bytes", payload_size)


_DRIVER_REGEXES = tuple((dump, re.compile(dump.pattern)) for dump in DRIVER_DUMPS)


def _statement_plain(value: dict[str, Any]) -> dict[str, Any]:
    """A statement's or GraphQL document's ``query``, ``args`` and ``variables`` as JSON types (a raw fold leaves
    captured values as they were captured; the statement and its arguments are read together before the walk)."""
    converted: dict[str, Any] = {}
    for key in ("query", "args", "variables"):
        if key in value:
            item = value[key]
            kind = type(item)
            if kind is str or item is None or (kind is list and _plain_atoms(item)):
                continue  # JSON types already (json_safe would give the same)
            safe = json_safe(item)
            if safe is not item:
                converted[key] = safe
    return {**value, **converted} if converted else value


def _plain_atoms(items: list[Any]) -> bool:
    """Whether every item of ``items`` is a JSON atom that :func:`~._json.json_safe` keeps as it is (a statement's
    arguments, most of the time)."""
    for item in items:
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if not _INT_MIN <= item < _INT_MAX:
                return False
        elif kind is not float or not math.isfinite(item):
            return False
    return True


def _payload_owners(trail: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for section in ("request", "response"):
        if isinstance(trail.get(section), dict):
            yield trail[section]
    for group in ("integrations", "internal_steps"):
        for item in trail.get(group) or ():
            for section in ("request", "response"):
                if isinstance(item.get(section), dict):
                    yield item[section]
            if isinstance(item.get("metadata"), dict):
                yield item["metadata"]
    if isinstance(trail.get("metadata"), dict):
        yield trail["metadata"]


def _mask_args(args: Any, sql: SqlMask, executemany: bool | None = None) -> Any:
    """SQL arguments with the sensitive ones masked: by name (dicts), by position (lists), row by row for
    ``executemany``; every argument when the statement could not be analysed. A list of lists not marked
    ``executemany`` (by the capture hook) may be rows or one row of array arguments: both readings are masked."""
    if isinstance(args, dict):
        return _mask_row(args, sql)
    if not isinstance(args, (list, tuple)):
        return args
    masked: Any = list(args)
    rows = args and all(isinstance(row, (list, tuple, dict)) for row in args)
    if rows and executemany is not False:
        masked = [_mask_row(row, sql) for row in args]  # executemany rows
    if not rows or executemany is not True:
        masked = _mask_row(masked, sql, original=args)  # one row (whose arguments may be arrays or objects)
    return args if masked == list(args) else masked


def _mask_row(row: Any, sql: SqlMask, original: Any = None) -> Any:
    if isinstance(row, dict):
        masked = {
            k: (MASK if (sql.everything or k in sql.names) and v is not None and not k.startswith("$") else v)
            for k, v in row.items()
        }
        return row if masked == row else masked
    if isinstance(row, (list, tuple)):
        source = original if original is not None else row
        return [
            MASK if (sql.everything or i in sql.positions) and source[i] is not None else v for i, v in enumerate(row)
        ]
    return row


def _xadd_fields(args: list[Any]) -> int:
    """Where the field/value pairs start in XADD's arguments after the key: past NOMKSTREAM, MAXLEN/MINID with their
    threshold (and LIMIT), and the entry id."""
    index = 0
    size = len(args)
    while index < size:
        word = str(args[index]).upper()
        if word == "NOMKSTREAM":
            index += 1
        elif word in ("MAXLEN", "MINID"):
            index += 2
            if index < size and str(args[index - 1]) in ("=", "~"):
                index += 1
            if index + 1 < size and str(args[index]).upper() == "LIMIT":
                index += 2
        else:
            return index + 1  # the id (* or ms-seq)
    return size


def _acl_rules(value: Any, counts: dict[str, int]) -> Any:
    """ACL rule strings with their password rules masked (``>pw``, ``<pw``, ``#sha256``, ``!sha256``)."""
    if isinstance(value, str):
        masked, n = _ACL_RULE.subn(MASK, value)
        if n:
            _redacted(counts, "redis_credential", n)
        return masked
    if isinstance(value, list):
        return [_acl_rules(item, counts) for item in value]
    return value


def _mask_positions(value: Any, sensitive: list[bool]) -> Any:
    if isinstance(value, list):
        return [MASK if i < len(sensitive) and sensitive[i] and v is not None else v for i, v in enumerate(value)]
    return MASK if value is not None else None


_OPENERS = frozenset("{[\"'\\")


def _fold_text(text: str) -> str:
    folded = text.translate(_TEXT_FOLD)
    if _OTHER_DIGIT.search(folded):
        folded = _OTHER_DIGIT.sub(lambda m: str(unicodedata.digit(m.group(), 0)), folded)
    return folded


def _route_pattern(route: str) -> tuple[re.Pattern[str], list[str]]:
    """A route template as a pattern with one group per parameter (``p0``, ``p1``, …), and the parameters' names.
    A regular-expression route (Django's ``re_path``: ``^reset/(?P<token>[0-9a-f]+)/$``) is its own pattern."""
    pieces: list[str] = []
    names: list[str] = []
    if "(?P<" in route:

        def rename(match: re.Match[str]) -> str:
            names.append(match.group(1))
            return f"(?P<p{len(names) - 1}>"

        renamed = _NAMED_GROUP.sub(rename, route)
        try:
            return re.compile(renamed.lstrip("^").removesuffix("$").removesuffix("\\Z") + r"\Z"), names
        except re.error:
            names = []
    last = 0
    for match in _ROUTE_PARAMETER.finditer(route):
        pieces.append(re.escape(route[last : match.start()]))
        converter = match.group("converter") or match.group("flask_converter") or ""
        pieces.append(f"(?P<p{len(names)}>{'.+' if converter == 'path' else '[^/]+'})")
        names.append(match.group("name") or match.group("flask_name"))
        last = match.end()
    pieces.append(re.escape(route[last:]))
    try:
        return re.compile("".join(pieces) + r"\Z"), names
    except re.error:  # too many parameters for one expression: masked as a path of unknown shape
        return re.compile(r"(?P<p0>.+)\Z"), ["path"] if not names else [names[0]]


def _unescape(key: str) -> str:
    try:
        decoded = orjson.loads(f'"{key}"')
    except orjson.JSONDecodeError:
        return key
    return decoded if isinstance(decoded, str) else key


def _unique_key(result: dict[str, Any], key: str) -> str:
    """``key``, or ``key (n)`` when masking made it equal to a key already kept."""
    if key not in result:
        return key
    n = 2
    while f"{key} ({n})" in result:
        n += 1
    return f"{key} ({n})"


def _masked_value(value: str) -> str:
    """The mask for one value of a text pair, keeping its quotes: ``"***"``, ``\\"***\\"``, ``b'***'``, ``***``."""
    head = value[0]
    if head == '"' or head == "'":
        return f"{head}{MASK}{head}"
    if head == "\\" and 0 < (quote := value.find('"')) <= 3:
        opener = value[: quote + 1]
        return f"{opener}{MASK}{opener}"
    if value[1:2] == "'":
        return f"{head}'{MASK}'"
    return MASK


def _closing(text: str, start: int) -> int:
    """The index after the bracket that closes the one at ``start`` (strings skipped), or the end of the text."""
    depth = 0
    index = start
    size = len(text)
    quote = ""
    while index < size:
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char == '"' or char == "'":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return size


def _gate(hints: set[str]) -> re.Pattern[str] | None:
    """One expression finding every hint in lower-cased text, as a trie (common prefixes factored at every level,
    so that the regular expression engine skips other characters quickly and never tries a prefix twice)."""
    if not hints:
        return None
    root: dict[str, Any] = {}
    for hint in hints:
        node = root
        for char in hint:
            node = node.setdefault(char, {})
        node[""] = {}
    return re.compile(_trie(root))


def _substring_search(keys: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a normalised key contains any of ``keys``."""
    expression = _gate(set(keys))
    if expression is None:
        return lambda norm: False
    search = expression.search
    return lambda norm: search(norm) is not None


def _trie(node: dict[str, Any]) -> str:
    branches = [re.escape(char) + _trie(child) for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
    return f"(?:{body})?" if "" in node else body


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def _redacted(counts: dict[str, int], kind: str, n: int = 1) -> None:
    key = _REDACTED + kind
    counts[key] = counts.get(key, 0) + n


_BY_NAME = {d.name: d for d in DETECTORS}


def _compile(patterns: Mapping[str, str]) -> tuple[list[_Detector], list[_Detector]]:
    """The built-in detectors named in ``patterns`` (with their hints and checks), in table order, and the custom
    expressions (run on every string)."""
    builtin = [_Detector(d.name, d.pattern, d.hints, d.check) for d in DETECTORS if patterns.get(d.name) == d.pattern]
    custom = [
        _Detector("pattern", expr, (), None)
        for name, expr in patterns.items()
        if not (name in _BY_NAME and _BY_NAME[name].pattern == expr)
    ]
    return builtin, custom
