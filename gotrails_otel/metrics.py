"""What gotrails counts: flushed trails, drops and failures (``stats()`` and OpenTelemetry metrics), queue depths
(observable gauges), and a failure log that reports each kind of failure once per interval, with a count."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics

from ._safelog import describe, log_failure

__all__ = ["Counters", "FailureLog", "register_gauges"]

_log = logging.getLogger("gotrails_otel")


class Counters:
    """Counts kept locally (``TrailProcessor.stats()``) and as OTel metrics.

    Keys of :meth:`snapshot`: ``trails.<flush reason>`` for flushed trails, ``<what>.<reason>`` for drops
    (``spans.late``, ``spans.max_spans_per_trail``, ``trails.export_queue_full``…), ``failures.<stage>`` for failures.
    Metrics: ``gotrails.trails{reason}``, ``gotrails.dropped{what, reason}``, ``gotrails.failures{stage[, exporter]}``.
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None) -> None:
        self.values: dict[str, int] = {}
        self._lock = threading.Lock()
        meter = metrics.get_meter("gotrails_otel", meter_provider=meter_provider)
        self._trails = meter.create_counter("gotrails.trails", unit="{trail}", description="Trails flushed")
        self._drops = meter.create_counter(
            "gotrails.dropped",
            unit="{item}",
            description="Spans, payloads, trails, errors or metadata dropped by limits, late or unexportable",
        )
        self._failures = meter.create_counter(
            "gotrails.failures",
            unit="{failure}",
            description="Folds, exports or emits of a trail that failed",
        )

    def reset_lock(self) -> None:
        self._lock = threading.Lock()

    def _add(self, key: str, n: int) -> None:
        with self._lock:
            self.values[key] = self.values.get(key, 0) + n

    def flushed(self, reason: str) -> None:
        self._add(f"trails.{reason}", 1)
        self._record(self._trails, 1, {"reason": reason})

    def dropped(self, what: str, reason: str, n: int = 1) -> None:
        self._add(f"{what}.{reason}", n)
        self._record(self._drops, n, {"what": what, "reason": reason})

    def failed(self, stage: str, n: int = 1, exporter: str | None = None) -> None:
        self._add(f"failures.{stage}", n)
        attributes = {"stage": stage} if exporter is None else {"stage": stage, "exporter": exporter}
        self._record(self._failures, n, attributes)

    @staticmethod
    def _record(counter: Any, n: int, attributes: dict[str, str]) -> None:
        try:
            counter.add(n, attributes)
        except Exception:  # a broken MeterProvider must not break the request path
            _log.debug("gotrails: recording a metric failed", exc_info=True)

    def add(self, name: str, n: int = 1, *, reason: str | None = None) -> None:
        """``trails`` (flushed), ``failures`` (a stage) or a drop of ``name``, by ``reason`` (the sampler counts
        through this)."""
        if name == "trails":
            self.flushed(reason or "")
        elif name == "failures":
            self.failed(reason or "", n)
        else:
            self.dropped(name, reason or "", n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


_gauges_lock = threading.Lock()
_gauges_for: set[int] = set()


def register_gauges(
    meter_provider: metrics.MeterProvider | None, sources: Callable[[], Iterable[Mapping[str, int]]]
) -> None:
    """Observable gauges of the buffers and queues, summed over the live processors; once per meter provider.

    ``gotrails.buffer.trails`` and ``gotrails.buffer.bytes``: trails in flight and the bytes they hold;
    ``gotrails.queue.depth{queue=fold|export}`` and ``gotrails.queue.bytes{queue=fold|export}``: what waits for the
    fold and for the exporter. Read when metrics are collected, never on the request path.
    """
    key = id(meter_provider)
    with _gauges_lock:
        if key in _gauges_for:
            return
        _gauges_for.add(key)
    meter = metrics.get_meter("gotrails_otel", meter_provider=meter_provider)

    def total(name: str) -> int:
        return sum(source.get(name, 0) for source in sources())

    def observe(*pairs: tuple[str, dict[str, str]]) -> Callable[[metrics.CallbackOptions], list[metrics.Observation]]:
        def callback(options: metrics.CallbackOptions) -> list[metrics.Observation]:
            return [metrics.Observation(total(name), attributes) for name, attributes in pairs]

        return callback

    meter.create_observable_gauge(
        "gotrails.buffer.trails", [observe(("in_flight", {}))], unit="{trail}", description="Trails in flight"
    )
    meter.create_observable_gauge(
        "gotrails.buffer.bytes", [observe(("buffer_bytes", {}))], unit="By", description="Bytes held by trails"
    )
    meter.create_observable_gauge(
        "gotrails.queue.depth",
        [observe(("fold_queue", {"queue": "fold"}), ("export_queue", {"queue": "export"}))],
        unit="{trail}",
        description="Trails waiting for the fold and for the exporter",
    )
    meter.create_observable_gauge(
        "gotrails.queue.bytes",
        [observe(("fold_queue_bytes", {"queue": "fold"}), ("export_queue_bytes", {"queue": "export"}))],
        unit="By",
        description="Bytes of trails waiting for the fold and for the exporter",
    )


class FailureLog:
    """Logs each kind of failure once per ``interval`` seconds: the first with its traceback, then a count.

    Modelled on the OpenTelemetry SDK's duplicate filter; a kind is ``(what, exception type)``, so every failing
    exporter is reported, each once per interval.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], list[Any]] = {}  # kind -> [last logged at, suppressed count, last error]

    def reset_lock(self) -> None:
        self._lock = threading.Lock()

    def report(self, what: str, error: BaseException | Callable[[], BaseException], count: int = 1) -> None:
        """Log ``error`` (or the error ``error()`` makes, called only when it is logged) for ``what``; ``count``:
        how many times it happened (one error that cost several trails)."""
        kind = (what, type(error).__qualname__)
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(kind)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += count
                if isinstance(error, BaseException):
                    entry[2] = error
                return
            if not isinstance(error, BaseException):
                error = error()
            if entry is None:
                self._seen[kind] = [now, count - 1, error]
                first, suppressed = True, 0
            else:
                first, suppressed = False, entry[1]
                self._seen[kind] = [now, count - 1, error]
        if first:
            log_failure(
                _log,
                f"gotrails: {what} failed (repeats of this failure are counted and reported every "
                f"{self.interval:.0f} s)",
                error,
            )
        else:
            _log.error(
                "gotrails: %s failed %d more time(s) in the last %.0f s; now: %s",
                what,
                suppressed + 1,
                self.interval,
                describe(error),
            )

    def flush(self) -> None:
        """Report the failures counted since they were last logged (at shutdown)."""
        with self._lock:
            pending = [(kind[0], entry[1], entry[2]) for kind, entry in self._seen.items() if entry[1]]
            for entry in self._seen.values():
                entry[1] = 0
        for what, count, error in pending:
            _log.error("gotrails: %s failed %d more time(s); last: %s", what, count, describe(error))
