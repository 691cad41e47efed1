"""Tail sampling: whether a folded (and masked) trail is kept, decided on the whole trail after the request.

The rules, in order (the first that applies decides):

1. ``keep_errors`` (default on): a trail with ``status: "error"`` or any entry in ``errors[]`` is kept.
2. ``slow_ms`` (default off): a trail whose ``latency_ms`` is at least ``slow_ms`` is kept.
3. ``sampler``: a callable that sees the trail and returns ``True`` (keep), ``False`` (drop) or ``None`` (no opinion,
   go on). A sampler that raises keeps the trail (fail open for retention) and the failure is counted.
4. ``sample_ratio``: the trail is kept when its OpenTelemetry trace id (``otel.trace_id``) passes the same test as the
   SDK's ``TraceIdRatioBased`` sampler at that ratio: ``trace_id & (2**64 - 1) < round(ratio * 2**64)``. Every
   service of one distributed trace therefore keeps or drops the trails of that trace together, and a backend that
   head-samples at the same ratio holds exactly the traces whose trails were kept.

Sampled-out trails are never stamped (they take no place in the hash chain) and are counted by reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from ._safelog import log_failure

if TYPE_CHECKING:
    from .config import TrailConfig

__all__ = ["TRACE_ID_LIMIT", "TrailSampler", "keeps_trace_id", "ratio_bound"]

_log = logging.getLogger("gotrails_otel")

TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
"""The mask of the trace id's low 64 bits that ``TraceIdRatioBased`` compares with its bound."""

Sampler = Callable[[Mapping[str, Any]], "bool | None"]
"""A custom sampler: ``sampler(trail)`` returns True (keep), False (drop) or None (let the other rules decide)."""

Count = Callable[..., None]


def ratio_bound(ratio: float) -> int:
    """The bound the SDK's ``TraceIdRatioBased`` uses for ``ratio`` (its own function, so they cannot differ)."""
    return TraceIdRatioBased.get_bound_for_rate(ratio)


def keeps_trace_id(trace_id: int, bound: int) -> bool:
    """Whether a trace id is kept at the ratio whose bound is ``bound`` (``TraceIdRatioBased``'s decision)."""
    return trace_id & TRACE_ID_LIMIT < bound


class TrailSampler:
    """Decides, per folded trail, whether it is kept; counts what it drops.

    Args:
        ratio: fraction of trails kept by trace id, 0..1.
        keep_errors: always keep trails with errors.
        slow_ms: always keep trails at least this slow (``None``: off).
        sampler: a custom rule that sees the folded trail (it must not change it).
        count: ``count(name, reason=...)`` records a counter (the processor's drop and failure counters).
    """

    __slots__ = ("_bound", "_count", "_custom", "_keep_errors", "_slow_ms", "ratio")

    def __init__(
        self,
        ratio: float = 1.0,
        *,
        keep_errors: bool = True,
        slow_ms: float | None = None,
        sampler: Sampler | None = None,
        count: Count | None = None,
    ) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("ratio must be between 0 and 1")
        self.ratio = ratio
        self._bound = ratio_bound(ratio)
        self._keep_errors = keep_errors
        self._slow_ms = slow_ms
        self._custom = sampler
        self._count = count

    @classmethod
    def from_config(cls, config: TrailConfig, count: Count | None = None) -> TrailSampler:
        """The sampler that ``config`` describes (``sample_ratio``, ``keep_errors``, ``slow_ms``, ``sampler``)."""
        return cls(
            config.sample_ratio,
            keep_errors=config.keep_errors,
            slow_ms=config.slow_ms,
            sampler=config.sampler,
            count=count,
        )

    @property
    def active(self) -> bool:
        """Whether this sampler can drop anything at all (a ratio below 1 or a custom sampler)."""
        return self._bound <= TRACE_ID_LIMIT or self._custom is not None

    def decide(self, trail: Mapping[str, Any]) -> str | None:
        """``None`` to keep ``trail``, or the reason it is sampled out (``ratio`` or ``sampler``), counted."""
        if not self.active:
            return None
        if self._keep_errors and (trail.get("status") == "error" or trail.get("errors")):
            return None
        if self._slow_ms is not None:
            latency = trail.get("latency_ms")
            if isinstance(latency, (int, float)) and latency >= self._slow_ms:
                return None
        if self._custom is not None:
            try:
                verdict = self._custom(trail)
            except Exception as exc:  # fail open: a broken sampler never costs a trail
                log_failure(_log, "gotrails: the custom trail sampler failed; the trail is kept", exc)
                self._note("failures", "sampler")
                return None
            if verdict is not None:
                if verdict:
                    return None
                self._note("sampled_out", "sampler")
                return "sampler"
        if self._bound > TRACE_ID_LIMIT or keeps_trace_id(_otel_trace_id(trail), self._bound):
            return None
        self._note("sampled_out", "ratio")
        return "ratio"

    def _note(self, name: str, reason: str) -> None:
        if self._count is not None:
            self._count(name, reason=reason)


def _otel_trace_id(trail: Mapping[str, Any]) -> int:
    """The trail's OpenTelemetry trace id as an integer (0 when it has none, which every ratio above 0 keeps)."""
    otel = trail.get("otel")
    value = otel.get("trace_id") if isinstance(otel, Mapping) else None
    try:
        return int(value, 16) if isinstance(value, str) else 0
    except ValueError:
        return 0
