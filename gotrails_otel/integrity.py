"""The hash chain: every exported trail carries an ``integrity`` block linking it to the trail before it.

Each :class:`Chain` (one per processor and process; a forked child starts a new one) stamps trails in export order::

    "integrity": {"chain": "<32 hex>", "seq": 1, "prev": "<64 zeros>", "alg": "hmac-sha256", "key_id": "k1",
                  "hash": "<64 hex>"}

``hash`` is SHA-256 (``alg: "sha256"``) or, with a key, HMAC-SHA256 (``alg: "hmac-sha256"``) of the RFC 8785
canonical JSON of the whole trail *including* its ``integrity`` block, except ``integrity.hash`` itself. ``seq``
counts from 1 without gaps; ``prev`` is the previous trail's ``hash`` (:data:`GENESIS` for ``seq`` 1).

A :func:`checkpoint <Chain.checkpoint>` record (``"record": "gotrails.checkpoint"``) states the chain's head (its
last ``seq`` and ``hash``) and is signed the same way; checkpoints are emitted periodically and at shutdown, so a
verifier can tell that records after a point are missing. The README specifies both formats for verifiers written
in other languages.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
import rfc8785

from ._json import valid_unicode

if TYPE_CHECKING:
    from .config import TrailConfig

__all__ = [
    "ALG_HMAC",
    "ALG_SHA256",
    "CHECKPOINT",
    "GENESIS",
    "Chain",
    "StampedTrail",
    "canonical",
    "digest",
    "is_checkpoint",
]

_log = logging.getLogger("gotrails_otel")

GENESIS = "0" * 64
"""``prev`` of the first trail of every chain."""
ALG_SHA256 = "sha256"
ALG_HMAC = "hmac-sha256"
CHECKPOINT = "gotrails.checkpoint"
"""The ``record`` value of a checkpoint (also the event name of its OpenTelemetry log record)."""
CHECKPOINT_VERSION = 1
MAX_SAFE_INTEGER = 2**53 - 1
_MAX_LOST_RANGES = 1000

# orjson's compact, key-sorted output is already RFC 8785 canonical JSON unless it holds a number that ECMAScript
# writes differently — an integral float (orjson ``1.0``, ``-0.0``; ECMAScript ``1``, ``0``), an exponent (orjson
# ``1e+16``, ``1e-6``; ECMAScript ``10000000000000000``, ``0.000001``), an integer beyond 2**53 (not an IEEE double)
# — or a key outside the Basic Multilingual Plane (RFC 8785 sorts keys by UTF-16 code units, orjson by code
# points; the two orders differ only there). Candidates are found by searches that run in C: an expression that
# starts with a literal byte (``.0`` then ``,``, ``]`` or ``}``) on the bytes, and on a class map of them (digit,
# ``e``, sign, 4-byte UTF-8 lead, other) a digit before ``e`` and a sign (orjson writes every exponent so), a run of
# 16 digits and any 4-byte UTF-8 sequence. Each candidate is
# then looked at where it is: a number in compact JSON starts right after ``:``, ``,`` or ``[`` (a hex id such as a
# UUID's ``…9b0e-2a6f…`` is no number), and a 4-byte sequence matters only inside a key (a string followed by
# ``:``). What is left — a look-alike inside a string, or the real thing — sends the document to the (slower)
# reference implementation.
_CLASSES = bytearray(b"x" * 256)
for _byte in b"0123456789":
    _CLASSES[_byte] = ord("0")
for _byte in range(0xF0, 0xF5):
    _CLASSES[_byte] = ord("!")
_CLASSES[ord("e")] = ord("e")
_CLASSES[ord("+")] = _CLASSES[ord("-")] = ord("-")
_CLASS_MAP = bytes(_CLASSES)
_LONG_RUN = b"0" * 16
_ZERO = ord("0")
_EXPONENT = b"0e-"  # in the class map: a digit, ``e`` and a sign
_INTEGRAL = re.compile(rb"\.0[,\]}]")
_NUMBER_CHARS = frozenset(b"0123456789.")
_NUMBER_AFTER = frozenset(b":,[")
_MINUS = ord("-")
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"(:?)')  # from inside a string to its end (and a ``:``)
_SORTED = orjson.OPT_SORT_KEYS
_HASH_MEMBER = len('"hash":"",') + 64  # what the hash adds to a stamped trail's bytes


def canonical(value: Any) -> bytes:
    """``value`` (JSON types) as RFC 8785 canonical JSON (UTF-8 bytes).

    A non-finite float is written as ``null``, as orjson and every exporter write it (JSON has no NaN). Raises
    ``rfc8785.CanonicalizationError`` for what RFC 8785 cannot represent: an integer outside ±(2**53 - 1), a string
    that is not valid Unicode.
    """
    if type(value) is dict or type(value) is list:  # inside a container a number is always followed by , ] or }
        try:
            data = orjson.dumps(value, option=_SORTED)
        except orjson.JSONEncodeError:  # e.g. a string that is not valid Unicode: the reference says why
            return _reference(value)
        if _differs(data):
            return _reference(value)
        return data
    return _reference(value)


def _canonical_text(trail: dict[str, Any]) -> bytes:
    """The canonical form of ``trail``, whose strings are first made valid Unicode when they are not (a lone
    surrogate becomes U+FFFD, in ``trail``) and its integers beyond 2**53 text."""
    try:
        return canonical(trail)
    except (rfc8785.CanonicalizationError, UnicodeError) as error:
        if isinstance(error, rfc8785.IntegerDomainError):
            raise
        valid_unicode(trail)
        safe_integers(trail)
        return canonical(trail)


def _differs(data: bytes) -> bool:
    """Whether orjson's key-sorted compact ``data`` may differ from RFC 8785's (see the comment above)."""
    for candidate in _INTEGRAL.finditer(data):
        if _in_number(data, candidate.start() - 1):
            return True
    classes = data.translate(_CLASS_MAP)
    find = classes.find
    at = find(_EXPONENT)
    while at >= 0:  # an exponent (one search of the class map costs a fraction of an expression's search for "e")
        if _in_number(data, at):
            return True
        at = find(_EXPONENT, at + 1)
    at = find(_LONG_RUN)
    while at >= 0:  # an integer of 16 digits or more (not the fraction of a float: an IEEE double as it is)
        before = data[at - 1] if at > 0 else 0
        if before == _MINUS and at > 1:
            before = data[at - 2]
        if before in _NUMBER_AFTER:
            return True
        end = at + len(_LONG_RUN)
        while end < len(classes) and classes[end] == _ZERO:
            end += 1
        at = find(_LONG_RUN, end)
    at = find(b"!")
    while at >= 0:
        rest = _STRING_REST.match(data, at)
        if rest is None or rest.group(1):
            return True  # inside a key
        at = find(b"!", rest.end())
    return False


def _in_number(data: bytes, at: int) -> bool:
    """Whether ``data[at]`` (a digit, or the start of the data) belongs to a number token of compact JSON: the
    digits and dots before it, maybe a minus, follow ``:``, ``,`` or ``[``."""
    if at < 0 or data[at] not in _NUMBER_CHARS:
        return False
    while at > 0 and data[at - 1] in _NUMBER_CHARS:
        at -= 1
    if at > 0 and data[at - 1] == _MINUS:
        at -= 1
    return at > 0 and data[at - 1] in _NUMBER_AFTER


def _reference(value: Any) -> bytes:
    try:
        return rfc8785.dumps(value)
    except rfc8785.FloatDomainError:
        return rfc8785.dumps(_finite(value))


def _finite(value: Any) -> Any:
    """A copy of ``value`` with NaN and infinities as ``None``."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# hashlib lets go of the GIL while it hashes 2,048 bytes or more at once. For a trail (a few KiB, hashed in a few
# microseconds) that is a loss: the flush thread then has to win the GIL back from the request threads, which can
# take a whole switch interval (5 ms) and a context switch each time. Fed in pieces under that size, it keeps it.
_HASH_PIECE = 2047


def digest(data: bytes, key: bytes | None) -> str:
    """The hex SHA-256 of ``data``, or its HMAC-SHA256 with ``key``."""
    if len(data) < _HASH_PIECE:
        return hashlib.sha256(data).hexdigest() if key is None else hmac.digest(key, data, "sha256").hex()
    state = hashlib.sha256() if key is None else hmac.new(key, digestmod="sha256")
    view = memoryview(data)
    for start in range(0, len(view), _HASH_PIECE):
        state.update(view[start : start + _HASH_PIECE])
    return state.hexdigest()


def _anchor(alg: str, chain: str) -> bytes:
    """How the canonical form of a stamped trail's ``integrity`` block starts (its keys are sorted)."""
    return b'"integrity":{"alg":"' + alg.encode() + b'","chain":"' + chain.encode() + b'",'


def with_hash(data: bytes, alg: str, chain: str, value: str) -> bytes | None:
    """Canonical ``data`` of a trail without ``integrity.hash`` → the same with it (``"hash"`` sorts after
    ``"chain"``), or ``None`` when the start of the block does not occur exactly once."""
    anchor = _anchor(alg, chain)
    start = data.find(anchor)
    if start < 0 or data.find(anchor, start + 1) >= 0:
        return None
    cut = start + len(anchor)
    return data[:cut] + b'"hash":"' + value.encode() + b'",' + data[cut:]


def without_hash(line: bytes, alg: str, chain: str, value: str) -> bytes | None:
    """The inverse of :func:`with_hash` on a line as written (what was hashed, if the line is canonical), or
    ``None`` when the line does not hold its ``integrity`` block's start with this hash exactly once."""
    anchor = _anchor(alg, chain)
    member = b'"hash":"' + value.encode() + b'",'
    full = anchor + member
    start = line.find(full)
    if start < 0 or line.find(full, start + 1) >= 0:
        return None
    cut = start + len(anchor)
    return line[:cut] + line[cut + len(member) :]


def is_checkpoint(record: Mapping[str, Any]) -> bool:
    """Whether a record is a checkpoint rather than a trail."""
    return record.get("record") == CHECKPOINT


def safe_integers(value: Any) -> Any:
    """``value`` with every integer outside ±(2**53 - 1) written as a decimal string (I-JSON, RFC 7493), in place.

    RFC 8785 numbers are IEEE doubles; a larger integer would be rounded by any JSON parser in JavaScript and by
    the canonical form, so a trail holds it as text instead.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = safe_integers(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = safe_integers(item)
    elif type(value) is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return str(value)
    return value


def rfc3339_now(now_ns: int | None = None) -> str:
    """The time as RFC 3339 UTC with milliseconds (``2026-11-28T05:19:08.268Z``)."""
    nanos = time.time_ns() if now_ns is None else now_ns
    moment = datetime.fromtimestamp(nanos // 1_000_000_000, tz=timezone.utc)
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}.{nanos // 1_000_000 % 1000:03d}Z"


class StampedTrail(dict[str, Any]):
    """A stamped trail, and ``data``: its bytes exactly as hashed and to be exported (canonical JSON).

    Stands in for the sealed trail: the file and stdout exporters write ``data`` rather than serialising again.
    """

    __slots__ = ("data",)

    def __init__(self, trail: Mapping[str, Any], data: bytes) -> None:
        super().__init__(trail)
        self.data = data


class Chain:
    """The hash chain of one writer process: stamps trails and emits checkpoints of its head.

    Args:
        key: the HMAC-SHA256 key (``None``: plain SHA-256, which detects edits and losses but not a rewrite by
            someone who recomputes the hashes). Never written anywhere, never in ``repr``.
        key_id: names the key in every record so that verifiers can hold several keys (rotation).
        checkpoint_interval_s: a checkpoint is due this long after the first trail stamped since the last
            checkpoint (0: only at shutdown).

    Thread-safe. The processor stamps on its flush thread in export order, so ``seq`` order is export order.
    """

    def __init__(
        self, key: bytes | None = None, key_id: str | None = None, *, checkpoint_interval_s: float = 10.0
    ) -> None:
        self.__key = key
        self.alg = ALG_SHA256 if key is None else ALG_HMAC
        self.key_id = None if key is None else (key_id or "default")
        self.checkpoint_interval_s = checkpoint_interval_s
        self._restart()
        ref = weakref.ref(self)

        def after_fork() -> None:
            chain = ref()
            if chain is not None:
                chain._restart()

        if hasattr(os, "register_at_fork"):  # absent where there is no fork (Windows): nothing to renew then
            os.register_at_fork(after_in_child=after_fork)

    @classmethod
    def from_config(cls, config: TrailConfig) -> Chain | None:
        """The chain ``config`` asks for, or ``None`` when integrity is off (``GOTRAILS_INTEGRITY=false``)."""
        if not config.integrity:
            return None
        key = config.hmac_key
        raw = key.encode("utf-8") if isinstance(key, str) else key
        return cls(raw, config.hmac_key_id, checkpoint_interval_s=config.checkpoint_interval_s)

    def _restart(self) -> None:
        """A new chain: at construction, and in a forked child (which must never continue its parent's chain)."""
        self._lock = threading.Lock()
        self.chain_id = secrets.token_hex(16)
        self.pid = os.getpid()
        self.started = rfc3339_now()
        self._seq = 0
        self._head = GENESIS
        self._unanchored_since: float | None = None
        self._closed = False
        self._lost: list[list[int]] = []
        self._lost_more = False

    def __repr__(self) -> str:
        return f"Chain(chain={self.chain_id!r}, seq={self._seq}, alg={self.alg!r}, key_id={self.key_id!r})"

    @property
    def head(self) -> tuple[int, str]:
        """The last ``seq`` and ``hash`` stamped (``(0, GENESIS)`` before the first trail)."""
        with self._lock:
            return self._seq, self._head

    # ------------------------------------------------------------------------------------------- trails

    def stamp(self, trail: dict[str, Any], fit: Callable[[dict[str, Any], int], bool] | None = None) -> bytes:
        """Add the ``integrity`` block to ``trail`` (in place) as the chain's next link; return the trail's bytes.

        The bytes are the RFC 8785 canonical JSON that was hashed with the ``hash`` member inserted in its sorted
        place, so they are themselves the canonical JSON of the stamped trail: seal and export exactly these, and
        ``verify`` checks a line without serialising it again. Call it after masking and sampling, in the order
        trails reach the exporters. Integers outside ±(2**53 - 1) in the trail become strings (see
        :func:`safe_integers`). Raises when the trail cannot be written as canonical JSON (the chain is then left
        unchanged and the trail without its block).

        ``fit(trail, size)``, when given, sees the size the stamped trail will have and may shrink the trail (the
        masking policy trims its largest payloads when it is too large: :meth:`Policy.fit
        <gotrails_otel.redact.Policy.fit>`), returning ``True`` when it changed it; the trail is then serialised
        again. So the one serialisation that is hashed and exported also measures the trail.
        """
        with self._lock:
            seq = self._seq + 1
            block: dict[str, Any] = {"alg": self.alg, "chain": self.chain_id}
            if self.key_id is not None:
                block["key_id"] = self.key_id
            block["prev"] = self._head
            block["seq"] = seq
            trail["integrity"] = block
            try:
                try:
                    data = canonical(trail)
                except rfc8785.IntegerDomainError:
                    safe_integers(trail)
                    data = _canonical_text(trail)
                except (rfc8785.CanonicalizationError, UnicodeError):  # a lone surrogate (keys raise the latter)
                    data = _canonical_text(trail)
                if fit is not None and fit(trail, len(data) + _HASH_MEMBER):
                    data = canonical(trail)
            except Exception:
                del trail["integrity"]
                raise
            block["hash"] = value = digest(data, self.__key)
            line = with_hash(data, self.alg, self.chain_id, value)
            if line is None:  # the anchor is not unique (a payload imitates it): serialise the stamped trail
                line = canonical(trail)
            self._seq = seq
            self._head = value
            if self._unanchored_since is None:
                self._unanchored_since = time.monotonic()
            return line

    def note_lost(self, seq: int) -> None:
        """Record that the trail stamped ``seq`` did not reach every exporter; the next checkpoint lists it."""
        with self._lock:
            if self._lost and self._lost[-1][1] == seq - 1:
                self._lost[-1][1] = seq
            elif self._lost and self._lost[-1][0] <= seq <= self._lost[-1][1]:
                return
            elif len(self._lost) < _MAX_LOST_RANGES:
                self._lost.append([seq, seq])
            else:
                self._lost_more = True
            if self._unanchored_since is None:
                self._unanchored_since = time.monotonic()

    # -------------------------------------------------------------------------------------- checkpoints

    def due_in(self, now: float | None = None) -> float | None:
        """Seconds until a periodic checkpoint is due (0: now), or ``None`` when none is needed."""
        since = self._unanchored_since
        if since is None or self.checkpoint_interval_s <= 0 or self._closed:
            return None
        moment = time.monotonic() if now is None else now
        return max(since + self.checkpoint_interval_s - moment, 0.0)

    def checkpoint(self, *, final: bool = False, extra: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """A signed checkpoint of the chain's head, or ``None`` when there is nothing new to anchor.

        A periodic checkpoint is made only when trails were stamped since the last one; the ``final`` one (at
        shutdown) whenever the chain has at least one trail, and only once. ``extra`` adds fields (the processor
        adds its ``sampled_out`` counts) before signing.
        """
        with self._lock:
            if self._closed or (self._seq == 0 and not self._lost):
                return None
            if not final and self._unanchored_since is None:
                return None
            record: dict[str, Any] = {
                "record": CHECKPOINT,
                "version": CHECKPOINT_VERSION,
                "chain": self.chain_id,
                "seq": self._seq,
                "hash": self._head,
                "time": rfc3339_now(),
                "final": final,
                "pid": self.pid,
                "started": self.started,
                "alg": self.alg,
            }
            if self.key_id is not None:
                record["key_id"] = self.key_id
            if self._lost:
                record["lost"] = [list(r) for r in self._lost]
                if self._lost_more:
                    record["lost_more"] = True
            if extra:
                for name, value in extra.items():
                    record.setdefault(name, value)
            record["signature"] = digest(canonical(record), self.__key)
            self._unanchored_since = None
            self._closed = final
            return record
