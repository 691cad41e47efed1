"""Masking and size limits, applied to every trail before it leaves the process.

The policy is on by default. It masks, as ``***``:

* values under sensitive keys, matched case-insensitively and ignoring ``-``, ``_``, ``.`` and spaces, at any depth:
  headers, query strings, JSON and form bodies, SQL arguments (also positional ones bound to a sensitive column
  when the statement shows it), Kafka keys/values, gRPC messages and metadata, and metadata fields;
* ``key=value`` and ``"key": "value"`` pairs with a sensitive key inside any text (a truncated JSON body, a query
  string, a log-like message);
* values that look like secrets whatever their key: bearer and basic credentials, JWTs, payment card numbers
  (Luhn-checked), URL passwords, and user-configured regular expressions.

It also drops HTTP headers outside an allow-list (``authorization`` stays, masked), cuts nesting, long lists and long
strings with markers, and trims the largest payloads first when a trail exceeds its total size.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._json import dumps

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

# Keys matched anywhere inside a normalised key ("user_password", "X-Api-Key", "stripeSecretKey").
_SUBSTRING_KEYS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "authorization",
    "cookie",
    "privatekey",
    "cardnumber",
    "creditcard",
    "ccnumber",
    "cardno",
    "cvv",
    "cvc",
    "sessionid",
    "sessionkey",
    "credential",
    "signature",
)
# Keys matched only as the whole normalised key (they are too short to search inside other words).
_EXACT_KEYS = ("pwd", "pass", "pan", "pin", "ssn", "otp", "session", "auth", "jwt", "sid", "csrf", "xsrf")
DEFAULT_SENSITIVE_KEYS: frozenset[str] = frozenset(_SUBSTRING_KEYS + _EXACT_KEYS)
"""The normalised sensitive keys masked by default."""

DEFAULT_VALUE_PATTERNS: dict[str, str] = {
    "bearer": r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*",
    "basic": r"(?i)\bbasic\s+[A-Za-z0-9+/]{8,}=*",
    "jwt": r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    "url_password": r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
    "card": r"(?<![\d.])[2-6](?:[ -]?\d){12,18}(?![\d.])",
}
"""Secret-looking values masked whatever their key; ``card`` matches are masked only when Luhn-valid."""

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
# key=value / "key": value / key: value inside text; the key is tested with Policy.is_sensitive.
_PAIR = re.compile(
    r"""(?P<lead>(?P<q>["']?)(?P<key>[A-Za-z_][\w.\-]{0,63})(?P=q)\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s&,;"'}\]]+)"""
)
_ENTRY_PAYLOAD = ("request", "response", "metadata", "error")
_RESERVE = 256
_CLEAN_TEXT_MAX = 512
_CLEAN_CACHE_SIZE = 4096
_PAYLOAD_KEYS = ("body", "message", "value", "args", "key", "messages", "commands", "replies")
_SQL_INSERT = re.compile(r"(?is)\binsert\s+into\s+\S+\s*\(([^)]*)\)\s*values\s*\(([^)]*)\)")
_SQL_ASSIGN = re.compile(r"""(?i)[`"\[]?(\w+)[`"\]]?\s*(?:=|<>|!=)\s*(\?|%s|\$\d+|:\w+|%\(\w+\)s)""")
_SQL_PLACEHOLDER = re.compile(r"\?|%s|\$\d+|:\w+|%\(\w+\)s")


def normalise_key(key: str) -> str:
    """A key as the policy compares it: lower case, without ``-``, ``_``, ``.`` and spaces."""
    return _NORMALISE.sub("", key).lower()


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check used by payment card numbers."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


FieldRule = Callable[[tuple[str, ...], Any], Any]
"""A per-field rule: ``rule(path, value)`` returns the value to keep (return ``value`` to keep it as it is)."""


@dataclass(frozen=True)
class Policy:
    """The masking and size policy. Build it from a :class:`~gotrails_otel.TrailConfig` with :meth:`from_config`.

    Attributes:
        keys: normalised sensitive keys; those in ``DEFAULT_SENSITIVE_KEYS`` match inside longer keys when they
            are long enough, the rest match whole keys only.
        patterns: named regular expressions whose matches are masked in every string.
        allowed_headers / denied_headers: HTTP header filtering (``None`` allows all).
        field_rule: an optional per-field callable for custom rules; when it raises, the field is masked.
        max_depth, max_items, max_string: structure limits; max_trail_bytes: total serialised size of a trail.
    """

    keys: frozenset[str] = DEFAULT_SENSITIVE_KEYS
    patterns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_VALUE_PATTERNS))
    allowed_headers: frozenset[str] | None = DEFAULT_ALLOWED_HEADERS
    denied_headers: frozenset[str] = frozenset()
    field_rule: FieldRule | None = None
    max_depth: int = 32
    max_items: int = 1000
    max_string: int = 16_384
    max_trail_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        substring = tuple(sorted(k for k in self.keys if len(k) >= 4 and k not in _EXACT_KEYS))
        object.__setattr__(self, "_substring", substring)
        object.__setattr__(self, "_exact", frozenset(k for k in self.keys if k not in substring))
        object.__setattr__(self, "_sensitive_cache", {})
        object.__setattr__(self, "_clean", set())
        object.__setattr__(self, "_values", _compile(self.patterns))

    # ------------------------------------------------------------------------------------------ keys

    def is_sensitive(self, key: str) -> bool:
        """Whether values under ``key`` are masked."""
        cache: dict[str, bool] = self._sensitive_cache  # type: ignore[attr-defined]
        found = cache.get(key)
        if found is None:
            norm = normalise_key(key)
            found = norm in self._exact or any(k in norm for k in self._substring)  # type: ignore[attr-defined]
            if len(cache) < 8192:
                cache[key] = found
        return found

    # ---------------------------------------------------------------------------------------- strings

    def mask_text(self, text: str) -> str:
        """``text`` with secret-looking values and sensitive ``key=value`` pairs masked."""
        if len(text) < 6:
            return text
        clean: set[str] = self._clean  # type: ignore[attr-defined]
        if text in clean:
            return text
        masked = self._mask_text(text)
        if masked is text and len(text) <= _CLEAN_TEXT_MAX:
            # Statements, URLs and names repeat from request to request. Only text with nothing to mask is
            # remembered, so no secret is kept around by this.
            if len(clean) >= _CLEAN_CACHE_SIZE:
                clean.clear()
            clean.add(text)
        return masked

    def _mask_text(self, text: str) -> str:
        original = text
        low = text.lower()
        size = len(text)
        for pattern, shortest, hint, is_card in self._values:  # type: ignore[attr-defined]
            if size >= shortest and hint(text, low):
                text = pattern.sub(_mask_card if is_card else MASK, text)
        if "=" in text or ":" in text:
            text = _PAIR.sub(self._mask_pair, text)
        return original if text == original else text

    def _mask_pair(self, match: re.Match[str]) -> str:
        value = match.group("value")
        if not self.is_sensitive(match.group("key")) or _SQL_PLACEHOLDER.fullmatch(value):
            return match.group(0)
        quote = value[0] if value[:1] in ('"', "'") else ""
        return f"{match.group('lead')}{quote}{MASK}{quote}"

    # -------------------------------------------------------------------------------------- documents

    def apply(self, trail: dict[str, Any]) -> dict[str, Any]:
        """Mask and limit ``trail`` in place (and return it).

        Only what can hold payload is walked: the request, response, metadata and errors, and for each step and
        integration its name, request, response, metadata and error. Ids, timings and the trail's own structure
        are left as they are (and the trail's lists are bounded by the span and error limits, never cut here).
        """
        counts: dict[str, int] = {}
        depth = self.max_depth
        for key in ("request", "response", "metadata"):
            if key in trail:
                trail[key] = self._walk(trail[key], (key,), depth, counts)
        if trail.get("errors"):
            trail["errors"] = [self._walk(error, ("errors",), depth, counts) for error in trail["errors"]]
        entry = trail.get("entry")
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            entry["name"] = self._string(entry["name"], counts)
        for group in ("internal_steps", "integrations"):
            for item in trail.get(group) or ():
                if isinstance(item.get("name"), str):
                    item["name"] = self._string(item["name"], counts)
                for key in _ENTRY_PAYLOAD:
                    if item.get(key) is not None:
                        item[key] = self._walk(item[key], (group, key), depth - 1, counts)
        if isinstance(entry, dict) and entry.get("kind") == "http":
            self._filter_headers(trail.get("request"), counts)
            self._filter_headers(trail.get("response"), counts)
        for item in trail.get("integrations") or ():
            if item.get("type") == "http":
                self._filter_headers(item.get("request"), counts)
                self._filter_headers(item.get("response"), counts)
        self._limit_total(trail, counts)
        if counts:
            dropped = trail.setdefault("dropped", {})
            for key, value in counts.items():
                dropped[key] = dropped.get(key, 0) + value
        return trail

    def _walk(self, value: Any, path: tuple[str, ...], depth: int, counts: dict[str, int], entry: bool = False) -> Any:
        """Mask and limit one value. ``path`` is extended only when a field rule needs it; ``entry`` marks a step
        or integration, whose ids are left as they are."""
        rule = self.field_rule
        if rule is not None and path:
            try:
                value = rule(path, value)
            except Exception:  # a failing custom rule masks the field: fail closed, never leak
                _log.debug("gotrails: field rule failed on %s; masked", ".".join(path), exc_info=True)
                return MASK
        kind = type(value)
        if kind is str:
            return self._string(value, counts)
        if kind is dict:
            if depth <= 0:
                _count(counts, "depth")
                return "[gotrails: nested too deep]"
            if isinstance(value.get("query"), str) and isinstance(value.get("args"), (list, dict)):
                value = self._mask_sql_args(value)
            items = value.items()
            if len(value) > self.max_items:
                items = list(items)[: self.max_items]
                _count(counts, "items", len(value) - self.max_items)
            known = self._sensitive_cache.get  # type: ignore[attr-defined]
            result: dict[str, Any] = {}
            for key, item in items:
                item_kind = type(item)
                if item is None or item_kind is bool:
                    result[key] = item
                    continue
                sensitive = known(key)
                if sensitive is None:
                    sensitive = self.is_sensitive(key)
                if sensitive:
                    result[key] = [MASK] * min(len(item), self.max_items) if item_kind is list else MASK
                elif rule is None and (item_kind is int or item_kind is float or (item_kind is str and len(item) < 6)):
                    result[key] = item  # nothing to mask or cut in a number or a very short string
                else:
                    result[key] = self._walk(item, (*path, key) if rule is not None else path, depth - 1, counts)
            if len(value) > self.max_items:
                result["$more_keys"] = len(value) - self.max_items
            return result
        if kind is list:
            if depth <= 0:
                _count(counts, "depth")
                return "[gotrails: nested too deep]"
            walked = [self._walk(item, path, depth - 1, counts) for item in value[: self.max_items]]
            if len(value) > self.max_items:
                walked.append({"$more_items": len(value) - self.max_items})
                _count(counts, "items", len(value) - self.max_items)
            return walked
        return value

    def _string(self, text: str, counts: dict[str, int]) -> str:
        if len(text) > self.max_string:
            _count(counts, "string_chars", len(text) - self.max_string)
            text = f"{text[: self.max_string]}…[+{len(text) - self.max_string} chars]"
        return self.mask_text(text)

    def _mask_sql_args(self, request: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``request`` whose SQL arguments bound to a sensitive column are masked, where the statement
        shows the binding (``INSERT INTO t (a, password) VALUES (?, ?)``, ``SET password = :pw``, ``$1`` …)."""
        bindings = _sql_bindings(request["query"])
        sensitive = [(column, placeholder) for column, placeholder in bindings if self.is_sensitive(column)]
        if not sensitive:
            return request
        args = request["args"]
        if isinstance(args, dict):
            names = {_placeholder_name(p) for _, p in sensitive}
            masked: Any = {k: (MASK if k in names and v is not None else v) for k, v in args.items()}
        else:
            positions = _positions(bindings, sensitive)
            rows = args if args and all(isinstance(r, (list, dict)) for r in args) else [args]
            masked_rows: list[Any] = []
            for row in rows:
                if isinstance(row, dict):
                    names = {_placeholder_name(p) for _, p in sensitive}
                    masked_rows.append({k: (MASK if k in names and v is not None else v) for k, v in row.items()})
                else:
                    masked_rows.append([MASK if i in positions and v is not None else v for i, v in enumerate(row)])
            masked = masked_rows if rows is args else masked_rows[0]
        return {**request, "args": masked}

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
            kept[name] = values
        section["headers"] = kept

    # ----------------------------------------------------------------------------------- total size

    def _limit_total(self, trail: dict[str, Any], counts: dict[str, int]) -> None:
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


def _sql_bindings(query: str) -> list[tuple[str, str]]:
    """``(column, placeholder)`` pairs that the statement shows, in placeholder order."""
    insert = _SQL_INSERT.search(query)
    if insert:
        names = [c.strip().strip('`"[]') for c in insert.group(1).split(",")]
        values = [v.strip() for v in insert.group(2).split(",")]
        if len(names) == len(values):
            return [(n, v) for n, v in zip(names, values, strict=True) if _SQL_PLACEHOLDER.fullmatch(v)]
        return []
    return [(m.group(1), m.group(2)) for m in _SQL_ASSIGN.finditer(query)]


def _placeholder_name(placeholder: str) -> str:
    if placeholder.startswith(":"):
        return placeholder[1:]
    if placeholder.startswith("%("):
        return placeholder[2:-2]
    return placeholder


def _positions(bindings: list[tuple[str, str]], sensitive: list[tuple[str, str]]) -> set[int]:
    """Argument indexes of the sensitive bindings: ``$n`` gives n-1, ``?``/``%s`` count in order."""
    positions = set()
    order = 0
    chosen = set(sensitive)
    for binding in bindings:
        placeholder = binding[1]
        if placeholder.startswith("$"):
            index = int(placeholder[1:]) - 1
        elif placeholder in ("?", "%s"):
            index = order
            order += 1
        else:
            continue
        if binding in chosen:
            positions.add(index)
    return positions


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


# The shortest text each default pattern can match, and cheap tests that rule it out before its regex runs.
_MIN_LENGTH = {"bearer": 8, "basic": 14, "jwt": 15, "url_password": 8, "card": 13}
_HINTS: dict[str, Callable[[str, str], bool]] = {
    "bearer": lambda text, low: "bearer" in low,
    "basic": lambda text, low: "basic" in low,
    "jwt": lambda text, low: "eyJ" in text,
    "url_password": lambda text, low: "://" in text and "@" in text,
}


def _always(text: str, low: str) -> bool:
    return True


def _compile(
    patterns: Mapping[str, str],
) -> list[tuple[re.Pattern[str], int, Callable[[str, str], bool], bool]]:
    """Each value pattern with the shortest text it can match, its cheap pre-test, and whether it is the
    Luhn-checked card pattern."""
    compiled = []
    for name, expr in patterns.items():
        default = DEFAULT_VALUE_PATTERNS.get(name) == expr
        hint = _HINTS.get(name, _always) if default else _always
        shortest = _MIN_LENGTH.get(name, 0) if default else 0
        compiled.append((re.compile(expr), shortest, hint, name == "card"))
    return compiled


def _mask_card(match: re.Match[str]) -> str:
    digits = "".join(ch for ch in match.group(0) if ch.isdigit())
    return MASK if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)
