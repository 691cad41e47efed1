"""Configuration of the trail processor: :class:`TrailConfig` and its ``GOTRAILS_*`` environment variables."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind

from .redact import DEFAULT_ALLOWED_HEADERS, DEFAULT_SENSITIVE_KEYS, DEFAULT_VALUE_PATTERNS, Policy, normalise_key

__all__ = ["ConfigError", "TrailConfig"]

EXPORTER_NAMES = frozenset({"otel", "stdout", "file"})
_KIND_NAMES = {
    "server": SpanKind.SERVER,
    "consumer": SpanKind.CONSUMER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "internal": SpanKind.INTERNAL,
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

_T = TypeVar("_T")


class ConfigError(ValueError):
    """An invalid gotrails setting; the message names the setting or environment variable.

    ``setting`` is the :class:`TrailConfig` field at fault (or ``None`` when not tied to one field).
    """

    def __init__(self, setting: str | None, reason: str) -> None:
        super().__init__(f"gotrails: invalid {setting}: {reason}" if setting else f"gotrails: {reason}")
        self.setting = setting
        self.reason = reason


@dataclass(frozen=True)
class TrailConfig:
    """Settings of a :class:`~gotrails_otel.TrailProcessor`. Immutable; build it directly or with :meth:`from_env`.

    Attributes:
        enabled: when false the processor ignores every span (``GOTRAILS_ENABLED``).
        service_name: overrides the resource's ``service.name`` in the trail (``GOTRAILS_SERVICE``).
        environment: overrides ``deployment.environment.name`` (``GOTRAILS_ENVIRONMENT``).
        root_kinds: kinds of local root span that start a trail (``GOTRAILS_ROOT_KINDS``, e.g. ``server,consumer``).
        grace_ms: how long a trail whose root ended waits for open child spans (``GOTRAILS_GRACE_MS``).
        max_age_ms: a trail still open after this long is flushed as incomplete (``GOTRAILS_MAX_AGE_MS``).
        max_trails: trails buffered at once; past it the oldest is flushed as incomplete (``GOTRAILS_MAX_TRAILS``).
        max_spans_per_trail: spans kept per trail; more are counted as dropped (``GOTRAILS_MAX_SPANS``).
        max_errors_per_trail: ``errors[]`` entries kept per trail (``GOTRAILS_MAX_ERRORS``).
        exporters: exporter names, comma separated: ``otel``, ``stdout``, ``file``; unset (``None``) chooses
            ``otel`` when an SDK LoggerProvider is configured, else ``stdout`` (``GOTRAILS_EXPORTER``).
        file_path: where the ``file`` exporter appends JSON lines (``GOTRAILS_FILE``).
        max_body_bytes: bytes kept of each captured body; the rest is counted, never held
            (``GOTRAILS_MAX_BODY_BYTES``).
        http_names: logical names of outgoing HTTP integrations, as ``(pattern, name)`` pairs; the pattern is a
            glob matched against ``host/path`` (e.g. ``api.midtrans.com/v2/charge*``) or a host
            (``GOTRAILS_HTTP_NAMES="api.midtrans.com/v2/charge*=midtrans.charge,..."``).
        capture_cache_values: record cache values (Redis ``SET`` values and ``GET`` replies), not only keys and
            reply status (``GOTRAILS_CAPTURE_CACHE_VALUES``).
        mask_keys: sensitive keys to add to the defaults, or ``-key`` to remove one (``GOTRAILS_MASK_KEYS``). An added
            key of four characters or more is masked wherever a key contains it; a shorter one when it is a word of
            a key or the whole key. The defaults are in :mod:`gotrails_otel.maskrules` and the README.
        mask_patterns: regular expressions whose matches are masked in every string, or ``-name`` to remove a default
            value detector (``bearer``, ``basic``, ``authorization``, ``password_phrase``, ``jwt``, ``card``,
            ``github``, ``private_key``, ``aws_access_key_id``, ``slack``, ``stripe``, ``google_api_key``: see
            :data:`gotrails_otel.maskrules.DETECTORS`) (``GOTRAILS_MASK_PATTERNS``, a JSON array or one expression).
        mask_field_rule: ``rule(path, value)`` returning the value to keep, for custom rules (code only).
        mask_client_ip: mask the values of client-IP headers (``x-forwarded-for``, ``x-real-ip``, ``forwarded``,
            …: personal data); off by default, so they are kept (``GOTRAILS_MASK_CLIENT_IP``).
        headers_allow / headers_deny: HTTP headers to add to the allow-list (``*`` keeps all) or to drop
            (``GOTRAILS_HEADERS_ALLOW``, ``GOTRAILS_HEADERS_DENY``).
        max_depth, max_items, max_string_length: structure limits inside payloads: nesting depth, items per list or
            object, characters per string (``GOTRAILS_MAX_DEPTH``, ``GOTRAILS_MAX_ITEMS``, ``GOTRAILS_MAX_STRING``).
        max_trail_bytes: total serialised size of a trail; the largest payloads are trimmed first
            (``GOTRAILS_MAX_TRAIL_BYTES``).
        max_buffer_bytes: estimated bytes that the trails in flight may hold together (spans, payloads, bodies);
            past it the oldest trail is flushed as incomplete, reason ``memory``; flushed trails waiting for the fold
            may hold as much again (``GOTRAILS_MAX_BUFFER_BYTES``).
        export_timeout_ms: deadline of each export call (one trail, or one batch for an exporter with
            ``export_batch``) and of the exporter's flush; an exporter that has not returned by then is abandoned to
            its thread and the failure counted (``GOTRAILS_EXPORT_TIMEOUT_MS``).
        export_queue_size, export_queue_bytes: sealed trails waiting for the exporter, by count and by bytes of
            JSON; what does not fit is dropped and counted, never held (``GOTRAILS_EXPORT_QUEUE_SIZE``,
            ``GOTRAILS_EXPORT_QUEUE_BYTES``).
        shutdown_timeout_ms: the longest ``shutdown()`` waits to seal and export what is left
            (``GOTRAILS_SHUTDOWN_TIMEOUT_MS``).
        flush_on_sigterm: on ``SIGTERM`` with no handler of the application's (or when a server such as uvicorn
            re-raises it after its graceful shutdown), shut the processors down before the process ends, so answered
            requests keep their trails (``GOTRAILS_FLUSH_ON_SIGTERM``).
        file_max_bytes: rotate the ``file`` exporter's file before it would grow past this size; 0 never rotates
            (``GOTRAILS_FILE_MAX_BYTES``).
        file_backups: rotated files kept, ``path.1`` (newest) to ``path.N`` (oldest) (``GOTRAILS_FILE_BACKUPS``).
        sample_ratio: fraction of trails kept, decided from the OTel trace id exactly as the SDK's
            ``TraceIdRatioBased`` sampler decides at the same ratio (``GOTRAILS_SAMPLE_RATIO``, 0..1).
        keep_errors: always keep trails with errors, whatever the ratio (``GOTRAILS_KEEP_ERRORS``).
        slow_ms: always keep trails at least this slow; ``None`` is off (``GOTRAILS_SLOW_MS``).
        sampler: ``sampler(trail)`` sees each folded, masked trail and returns True (keep), False (drop) or None
            (let the ratio decide); it must not change the trail; if it raises, the trail is kept (code only).
        integrity: stamp every trail with its link in the process's hash chain and emit checkpoints
            (``GOTRAILS_INTEGRITY``).
        hmac_key: key of the HMAC-SHA256 chain, at least 16 bytes (``GOTRAILS_HMAC_KEY``, its UTF-8 bytes, or
            ``GOTRAILS_HMAC_KEY_FILE``, the file's bytes without a final newline); without it the chain uses plain
            SHA-256. Never shown in ``repr``, logs or output.
        hmac_key_id: names the key in every record, for key rotation; ``default`` when unset (``GOTRAILS_HMAC_KEY_ID``).
        checkpoint_interval_s: a signed checkpoint of the chain's head is emitted at most this long after a trail
            was stamped, and at shutdown; 0 emits it at shutdown only (``GOTRAILS_CHECKPOINT_INTERVAL_S``).
        metadata_on_span: also put ``set_metadata`` fields, masked, on the request's root span as
            ``gotrails.metadata.<key>`` attributes while the request runs (``GOTRAILS_SPAN_METADATA``).
    """

    enabled: bool = True
    service_name: str | None = None
    environment: str | None = None
    root_kinds: frozenset[SpanKind] = frozenset({SpanKind.SERVER, SpanKind.CONSUMER})
    grace_ms: float = 1000.0
    max_age_ms: float = 300_000.0
    max_trails: int = 10_000
    max_spans_per_trail: int = 5_000
    max_errors_per_trail: int = 100
    exporters: tuple[str, ...] | None = None
    file_path: str | None = None
    max_body_bytes: int = 65_536
    http_names: tuple[tuple[str, str], ...] = ()
    capture_cache_values: bool = False
    mask_keys: tuple[str, ...] = ()
    mask_patterns: tuple[str, ...] = ()
    mask_field_rule: Callable[[tuple[str, ...], Any], Any] | None = None
    mask_client_ip: bool = False
    headers_allow: tuple[str, ...] = ()
    headers_deny: tuple[str, ...] = ()
    max_depth: int = 32
    max_items: int = 1000
    max_string_length: int = 16_384
    max_trail_bytes: int = 1_048_576
    max_buffer_bytes: int = 134_217_728
    export_timeout_ms: float = 10_000.0
    export_queue_size: int = 2048
    export_queue_bytes: int = 67_108_864
    shutdown_timeout_ms: float = 10_000.0
    flush_on_sigterm: bool = True
    file_max_bytes: int = 0
    file_backups: int = 5
    sample_ratio: float = 1.0
    keep_errors: bool = True
    slow_ms: float | None = None
    sampler: Callable[[Mapping[str, Any]], bool | None] | None = None
    integrity: bool = True
    hmac_key: str | bytes | None = field(default=None, repr=False)
    hmac_key_id: str | None = None
    checkpoint_interval_s: float = 10.0
    metadata_on_span: bool = False

    def __post_init__(self) -> None:
        self._check(self.grace_ms >= 0, "grace_ms", "must be >= 0")
        self._check(self.max_age_ms > 0, "max_age_ms", "must be > 0")
        self._check(self.max_age_ms >= self.grace_ms, "max_age_ms", "must be >= grace_ms")
        self._check(self.max_trails >= 1, "max_trails", "must be >= 1")
        self._check(self.max_spans_per_trail >= 1, "max_spans_per_trail", "must be >= 1")
        self._check(self.max_errors_per_trail >= 0, "max_errors_per_trail", "must be >= 0")
        self._check(self.max_body_bytes >= 0, "max_body_bytes", "must be >= 0")
        self._check(
            all(
                isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) and x for x in p)
                for p in self.http_names
            ),
            "http_names",
            "must be (pattern, name) pairs of non-empty strings",
        )
        self._check(self.max_depth >= 4, "max_depth", "must be >= 4")
        self._check(self.max_items >= 16, "max_items", "must be >= 16")
        self._check(self.max_string_length >= 16, "max_string_length", "must be >= 16")
        self._check(self.max_trail_bytes >= 1024, "max_trail_bytes", "must be >= 1024")
        self._check(self.max_buffer_bytes >= 65_536, "max_buffer_bytes", "must be >= 65536")
        self._check(self.export_timeout_ms > 0, "export_timeout_ms", "must be > 0")
        self._check(self.export_queue_size >= 1, "export_queue_size", "must be >= 1")
        self._check(self.export_queue_bytes >= 65_536, "export_queue_bytes", "must be >= 65536")
        self._check(self.shutdown_timeout_ms >= 0, "shutdown_timeout_ms", "must be >= 0")
        self._check(self.file_max_bytes >= 0, "file_max_bytes", "must be >= 0 (0: no rotation)")
        self._check(self.file_backups >= 1, "file_backups", "must be >= 1")
        self._check(
            self.mask_field_rule is None or callable(self.mask_field_rule), "mask_field_rule", "must be callable"
        )
        unknown_removals = sorted(
            entry
            for entry in self.mask_patterns
            if re.fullmatch(r"-\w+", entry) and entry[1:] not in DEFAULT_VALUE_PATTERNS
        )
        self._check(
            not unknown_removals,
            "mask_patterns",
            f"{unknown_removals} remove no default detector; the defaults are {sorted(DEFAULT_VALUE_PATTERNS)} (URL "
            "userinfo and signatures are always masked); write a pattern that starts with '-' as '[-]…'",
        )
        try:
            self.policy()
        except re.error as exc:
            raise ConfigError("mask_patterns", f"invalid regular expression: {exc}") from None
        self._check(bool(self.root_kinds), "root_kinds", "must name at least one span kind")
        self._check(0.0 <= self.sample_ratio <= 1.0, "sample_ratio", "must be between 0 and 1")
        self._check(self.slow_ms is None or self.slow_ms >= 0, "slow_ms", "must be >= 0")
        self._check(self.sampler is None or callable(self.sampler), "sampler", "must be callable")
        self._check(self.checkpoint_interval_s >= 0, "checkpoint_interval_s", "must be >= 0")
        if self.hmac_key is not None:  # messages never show the key
            self._check(isinstance(self.hmac_key, (str, bytes)), "hmac_key", "must be str or bytes")
            raw = self.hmac_key.encode("utf-8") if isinstance(self.hmac_key, str) else self.hmac_key
            self._check(len(raw) >= 16, "hmac_key", "must be at least 16 bytes (32 random bytes recommended)")
        self._check(
            self.hmac_key_id is None or re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", self.hmac_key_id) is not None,
            "hmac_key_id",
            "must be 1-64 letters, digits or ._:-",
        )
        self._check(
            all(isinstance(kind, SpanKind) for kind in self.root_kinds),
            "root_kinds",
            "must hold SpanKind values",
        )
        if self.exporters is not None:
            unknown = sorted(set(self.exporters) - EXPORTER_NAMES)
            self._check(not unknown, "exporters", f"unknown exporter {unknown}; choose from {sorted(EXPORTER_NAMES)}")
            self._check(bool(self.exporters), "exporters", "must name at least one exporter")
            self._check(
                "file" not in self.exporters or bool(self.file_path),
                "exporters",
                "the file exporter needs file_path (GOTRAILS_FILE)",
            )

    @staticmethod
    def _check(ok: bool, name: str, message: str) -> None:
        if not ok:
            raise ConfigError(name, message)

    def policy(self) -> Policy:
        """The masking and size :class:`~gotrails_otel.redact.Policy` these settings describe."""
        keys = set(DEFAULT_SENSITIVE_KEYS)
        for entry in self.mask_keys:
            if entry.startswith("-"):
                keys.discard(normalise_key(entry[1:]))
            else:
                keys.add(normalise_key(entry))
        patterns = dict(DEFAULT_VALUE_PATTERNS)
        for index, entry in enumerate(self.mask_patterns):
            if entry.startswith("-") and entry[1:] in DEFAULT_VALUE_PATTERNS:
                patterns.pop(entry[1:], None)
            else:
                patterns[f"custom{index}"] = entry
        allowed: frozenset[str] | None = DEFAULT_ALLOWED_HEADERS | {h.lower() for h in self.headers_allow}
        if "*" in self.headers_allow:
            allowed = None
        return Policy(
            keys=frozenset(keys),
            patterns=patterns,
            allowed_headers=allowed,
            denied_headers=frozenset(h.lower() for h in self.headers_deny),
            field_rule=self.mask_field_rule,
            mask_client_ip=self.mask_client_ip,
            max_depth=self.max_depth,
            max_items=self.max_items,
            max_string=self.max_string_length,
            max_trail_bytes=self.max_trail_bytes,
        )

    def replace(self, **changes: Any) -> TrailConfig:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TrailConfig:
        """Build a config from ``GOTRAILS_*`` variables (``os.environ`` by default).

        Keyword ``overrides`` win over the environment. An invalid value raises :class:`ConfigError`
        naming the variable, so a misconfiguration fails at start-up, not on the first request.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        source: dict[str, str] = {}

        def read(var: str, attr: str, parse: Callable[[str], _T]) -> None:
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                return
            source[attr] = f"{var}={raw!r}"
            try:
                values[attr] = parse(raw.strip())
            except ValueError as exc:
                raise ConfigError(f"{var}={raw!r}", str(exc)) from None

        read("GOTRAILS_ENABLED", "enabled", _parse_bool)
        read("GOTRAILS_SERVICE", "service_name", str)
        read("GOTRAILS_ENVIRONMENT", "environment", str)
        read("GOTRAILS_ROOT_KINDS", "root_kinds", _parse_kinds)
        read("GOTRAILS_GRACE_MS", "grace_ms", _parse_number)
        read("GOTRAILS_MAX_AGE_MS", "max_age_ms", _parse_number)
        read("GOTRAILS_MAX_TRAILS", "max_trails", _parse_int)
        read("GOTRAILS_MAX_SPANS", "max_spans_per_trail", _parse_int)
        read("GOTRAILS_MAX_ERRORS", "max_errors_per_trail", _parse_int)
        read("GOTRAILS_EXPORTER", "exporters", _parse_list)
        read("GOTRAILS_FILE", "file_path", str)
        read("GOTRAILS_MAX_BODY_BYTES", "max_body_bytes", _parse_int)
        read("GOTRAILS_HTTP_NAMES", "http_names", _parse_pairs)
        read("GOTRAILS_CAPTURE_CACHE_VALUES", "capture_cache_values", _parse_bool)
        read("GOTRAILS_MASK_KEYS", "mask_keys", _parse_names)
        read("GOTRAILS_MASK_PATTERNS", "mask_patterns", _parse_patterns)
        read("GOTRAILS_MASK_CLIENT_IP", "mask_client_ip", _parse_bool)
        read("GOTRAILS_HEADERS_ALLOW", "headers_allow", _parse_list)
        read("GOTRAILS_HEADERS_DENY", "headers_deny", _parse_list)
        read("GOTRAILS_MAX_DEPTH", "max_depth", _parse_int)
        read("GOTRAILS_MAX_ITEMS", "max_items", _parse_int)
        read("GOTRAILS_MAX_STRING", "max_string_length", _parse_int)
        read("GOTRAILS_MAX_TRAIL_BYTES", "max_trail_bytes", _parse_int)
        read("GOTRAILS_MAX_BUFFER_BYTES", "max_buffer_bytes", _parse_int)
        read("GOTRAILS_EXPORT_TIMEOUT_MS", "export_timeout_ms", _parse_number)
        read("GOTRAILS_EXPORT_QUEUE_SIZE", "export_queue_size", _parse_int)
        read("GOTRAILS_EXPORT_QUEUE_BYTES", "export_queue_bytes", _parse_int)
        read("GOTRAILS_SHUTDOWN_TIMEOUT_MS", "shutdown_timeout_ms", _parse_number)
        read("GOTRAILS_FLUSH_ON_SIGTERM", "flush_on_sigterm", _parse_bool)
        read("GOTRAILS_FILE_MAX_BYTES", "file_max_bytes", _parse_int)
        read("GOTRAILS_FILE_BACKUPS", "file_backups", _parse_int)
        read("GOTRAILS_SAMPLE_RATIO", "sample_ratio", _parse_number)
        read("GOTRAILS_KEEP_ERRORS", "keep_errors", _parse_bool)
        read("GOTRAILS_SLOW_MS", "slow_ms", _parse_number)
        read("GOTRAILS_INTEGRITY", "integrity", _parse_bool)
        read("GOTRAILS_HMAC_KEY_ID", "hmac_key_id", str)
        read("GOTRAILS_CHECKPOINT_INTERVAL_S", "checkpoint_interval_s", _parse_number)
        read("GOTRAILS_SPAN_METADATA", "metadata_on_span", _parse_bool)
        key = env.get("GOTRAILS_HMAC_KEY")
        key_file = env.get("GOTRAILS_HMAC_KEY_FILE", "").strip()
        if key:  # read apart from the others: an error message must never show the key
            values["hmac_key"] = key
            source["hmac_key"] = "GOTRAILS_HMAC_KEY"
        elif key_file:
            try:
                with open(key_file, "rb") as stream:
                    values["hmac_key"] = stream.read().rstrip(b"\r\n")
            except OSError as exc:
                raise ConfigError(f"GOTRAILS_HMAC_KEY_FILE={key_file!r}", f"cannot read it: {exc.strerror}") from None
            source["hmac_key"] = f"GOTRAILS_HMAC_KEY_FILE={key_file!r}"
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigError as exc:
            if exc.setting in source and exc.setting not in overrides:
                raise ConfigError(source[exc.setting], exc.reason) from None
            raise


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true or false")


def _parse_number(raw: str) -> float:
    value = float(raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return value


def _parse_int(raw: str) -> int:
    return int(raw)


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(_split(raw))


def _parse_names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_patterns(raw: str) -> tuple[str, ...]:
    if raw.startswith("["):
        try:
            values = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON array of strings: {exc}") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("not a JSON array of strings")
        patterns = tuple(values)
    else:
        patterns = (raw,)
    for pattern in patterns:
        if not pattern.startswith("-"):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return patterns


def _parse_pairs(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw.split(","):
        if not item.strip():
            continue
        pattern, sep, name = item.partition("=")
        if not sep or not pattern.strip() or not name.strip():
            raise ValueError(f"expected pattern=name, got {item.strip()!r}")
        pairs.append((pattern.strip(), name.strip()))
    return tuple(pairs)


def _parse_kinds(raw: str) -> frozenset[SpanKind]:
    kinds = set()
    for name in _split(raw):
        if name not in _KIND_NAMES:
            raise ValueError(f"unknown span kind {name!r}; choose from {sorted(_KIND_NAMES)}")
        kinds.add(_KIND_NAMES[name])
    return frozenset(kinds)


def _split(raw: str) -> Iterable[str]:
    return [part.strip().lower() for part in raw.split(",") if part.strip()]
