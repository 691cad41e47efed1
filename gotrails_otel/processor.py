"""``TrailProcessor``: buffers the spans of each request and flushes one trail per request, exactly once.

The processor is the OpenTelemetry side of gotrails: it feeds span starts and ends into the per-request buffer
(:mod:`.buffer`), owns the capture store hooks write into (:mod:`.store`), and the flush pipeline that folds, masks,
seals and exports trails off the request path (:mod:`.pipeline`).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from . import registry
from .buffer import FlushReason, TrailBuffer, TrailState
from .config import TrailConfig
from .exporters import TrailExporter, exporter_from_config
from .integrity import Chain
from .metrics import Counters, FailureLog, register_gauges
from .pipeline import ExportQueue, FlushWorker
from .records import SpanRecord
from .sampling import TrailSampler
from .sealed import SealedTrail
from .store import CaptureStore

__all__ = ["CaptureStore", "FlushReason", "ProcessorState", "TrailProcessor", "TrailState", "processors"]

_SUPPRESS = otel_context._SUPPRESS_INSTRUMENTATION_KEY
_OPEN = TrailState.OPEN
_DRAINING = TrailState.DRAINING
_log = logging.getLogger("gotrails_otel")


class ProcessorState(enum.Enum):
    """Where a processor is in its life."""

    RUNNING = "running"
    SHUTTING_DOWN = "shutting_down"
    SHUT_DOWN = "shut_down"


class TrailProcessor(SpanProcessor):
    """An OpenTelemetry ``SpanProcessor`` that turns each request into one gotrails trail.

    A request is everything under one *local root* span (a span with no parent, or a remote parent) whose kind
    is in ``config.root_kinds`` (SERVER and CONSUMER by default); spans under other local roots are ignored.
    The trail is flushed once, off the request path, when the request is over (its root span has ended, and its
    processing — an ASGI app, a Kafka record — is done) and every child started under it has ended; children and
    payloads still open then get ``config.grace_ms``, after which the trail is flushed marked incomplete.
    ``config.max_age_ms``, ``config.max_trails`` and ``config.max_buffer_bytes`` bound how long, how many and how
    much is held; the export queue is bounded by ``config.export_queue_size`` and ``config.export_queue_bytes``, and
    each export by ``config.export_timeout_ms``.

    Args:
        exporter: where trails go; by default chosen from ``config`` (``GOTRAILS_EXPORTER``).
        config: settings; by default :meth:`TrailConfig.from_env`.
        meter_provider: for the counters and gauges; the global one by default.
    """

    def __init__(
        self,
        exporter: TrailExporter | None = None,
        config: TrailConfig | None = None,
        *,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.config = config = config if config is not None else TrailConfig.from_env()
        self._counters = counters = Counters(meter_provider)
        self._failures = failures = FailureLog()
        self._own_threads: set[int] = set()
        self._buffer = buffer = TrailBuffer(
            grace_s=config.grace_ms / 1000.0,
            max_age_s=config.max_age_ms / 1000.0,
            max_trails=config.max_trails,
            max_bytes=config.max_buffer_bytes,
            max_spans=config.max_spans_per_trail,
            max_errors=config.max_errors_per_trail,
            counters=counters,
        )
        policy = config.policy()
        self.captures = CaptureStore(buffer, config, counters, policy)
        self._chain = Chain.from_config(config)
        self._exports = ExportQueue(
            exporter if exporter is not None else exporter_from_config(config),
            timeout_s=config.export_timeout_ms / 1000.0,
            max_items=config.export_queue_size,
            max_bytes=config.export_queue_bytes,
            counters=counters,
            failures=failures,
            own_threads=self._own_threads,
            on_lost=self._lost if self._chain is not None else None,
        )
        self._worker = FlushWorker(
            buffer,
            config,
            policy,
            counters,
            failures,
            self._exports,
            self._own_threads,
            TrailSampler.from_config(config, counters.add),
            self._chain,
        )
        self._root_kinds = config.root_kinds
        self._max_spans = config.max_spans_per_trail
        self._enabled = config.enabled
        self.state = ProcessorState.RUNNING
        registry.register(self)
        register_gauges(meter_provider, lambda: [p.gauges() for p in registry.live()])
        if config.enabled and config.flush_on_sigterm:
            registry.install_sigterm_flush()

    @property
    def exporter(self) -> TrailExporter:
        """Where sealed trails go (may be replaced; the next export uses the new one)."""
        return self._exports.exporter

    @exporter.setter
    def exporter(self, exporter: TrailExporter) -> None:
        self._exports.exporter = exporter

    @property
    def chain(self) -> Chain | None:
        """The hash chain that stamps this processor's trails (``None`` with ``GOTRAILS_INTEGRITY=false``)."""
        return self._chain

    def _lost(self, trail: SealedTrail) -> None:
        """A stamped trail that did not reach every exporter: the next checkpoint lists its ``seq``."""
        chain = self._chain
        if chain is None or "integrity" not in trail:
            return
        seq = trail["integrity"].get("seq")
        if isinstance(seq, int):
            chain.note_lost(seq)

    @property
    def stages(self) -> list[Any]:
        """The pipeline stages run between the masking policy and the seal (see :func:`.pipeline.build_stages`)."""
        return self._worker.stages

    def _after_fork(self) -> None:
        """In a forked child: empty buffers, fresh locks, no threads (they do not exist in the child)."""
        self._own_threads.clear()
        self._buffer.reset()
        self._counters.reset_lock()
        self._failures.reset_lock()
        self._exports.reset()
        self._worker.reset()

    # ------------------------------------------------------------------------------------ span events

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        if not self._enabled:
            return
        parent = span.parent
        buffer = self._buffer
        if parent is None or parent.is_remote:
            if span.kind not in self._root_kinds:
                return
            if threading.get_ident() in self._own_threads or otel_context.get_value(_SUPPRESS, parent_context):
                return  # gotrails' own export activity, or instrumentation suppressed by the caller
            with buffer.lock:
                if buffer.closed:
                    return
                buffer.open_trail(span)
                self._worker.ensure_started()
            return
        parent_id = parent.span_id
        owner = buffer.owner
        if parent_id not in owner:  # cheap exit for spans outside every trail
            if parent_id in buffer.late:
                with buffer.lock:
                    trail = buffer.late.get(parent_id)
                    if trail is not None:
                        buffer.start_late_child(trail, span.context.span_id)
            return
        span_id = span.context.span_id
        with buffer.lock:
            trail = owner.get(parent_id)
            if trail is None:  # sealed meanwhile
                late = buffer.late.get(parent_id)
                if late is not None:
                    buffer.start_late_child(late, span_id)
                return
            state = trail.state
            if (state is _OPEN or state is _DRAINING) and trail.dropped_ids is None:
                span_ids = trail.span_ids
                if len(span_ids) < self._max_spans:  # the common case, inlined: a child of a trail in flight
                    span_ids.append(span_id)
                    trail.open += 1
                    owner[span_id] = trail
                    return
            buffer.start_child(trail, span_id, parent_id)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        span_id = ctx.span_id
        buffer = self._buffer
        owner = buffer.owner
        if span_id not in owner:
            if span_id in buffer.late:
                with buffer.lock:
                    trail = buffer.late.pop(span_id, None)
                    if trail is not None:
                        buffer.count_late(trail, "spans")
            return
        with buffer.lock:
            trail = owner.get(span_id)
            if trail is None:  # sealed meanwhile
                late = buffer.late.pop(span_id, None)
                if late is not None:
                    buffer.count_late(late, "spans")
                return
            if trail.root_ended is None and trail.state is _OPEN and span_id != trail.root_id:
                if trail.dropped_ids is None or span_id not in trail.dropped_ids:
                    # The common case, inlined: a child ends while its request is still running.
                    record = SpanRecord(span)
                    trail.spans.append(record)
                    trail.open -= 1
                    size = record.size
                    trail.nbytes += size
                    buffer.open_bytes += size
                    if buffer.open_bytes > buffer.max_bytes:
                        buffer.evict()
                return
            buffer.end_span(trail, span, span_id)

    # ------------------------------------------------------------------------------------- writes

    def add_metadata(self, span_id: int, fields: Mapping[str, Any]) -> bool:
        """Same as ``captures.add_metadata``: every write into a trail goes through the capture store."""
        return self.captures.add_metadata(span_id, fields)

    def add_error(self, span_id: int, error: dict[str, Any]) -> bool:
        """Same as ``captures.add_error``: every write into a trail goes through the capture store."""
        return self.captures.add_error(span_id, error)

    # ----------------------------------------------------------------------------- SpanProcessor API

    def gauges(self) -> dict[str, int]:
        """Trails in flight and the bytes they hold; trails waiting for the fold and for the exporter."""
        buffer, exports = self._buffer, self._exports
        with buffer.lock:
            values = {
                "in_flight": len(buffer.trails),
                "buffer_bytes": buffer.open_bytes,
                "fold_queue": len(buffer.ready) + (1 if self._worker.busy else 0),
                "fold_queue_bytes": buffer.queued_bytes,
            }
        with exports.lock:
            values["export_queue"] = len(exports)
            values["export_queue_bytes"] = exports.nbytes
        return values

    def stats(self) -> dict[str, int]:
        """Counts of flushed trails by reason, of everything dropped and of failures, plus the buffers and queues now:
        ``in_flight`` and ``buffer_bytes`` (trails in flight, the bytes they hold), ``fold_queue`` and
        ``fold_queue_bytes`` (flushed, waiting for the fold), ``export_queue`` and ``export_queue_bytes`` (sealed,
        waiting for the exporter)."""
        counts = self._counters.snapshot()
        counts.update(self.gauges())
        return counts

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every trail that is ready has been exported and the exporter flushed, at most
        ``timeout_millis``. Trails still waiting for spans stay. The exporter runs on the export thread only."""
        deadline = time.monotonic() + timeout_millis / 1000.0
        if not self._worker.drain(deadline) and (self._buffer.ready or self._worker.busy):
            return False
        if not self._exports.drain(deadline):
            return False
        return self._exports.call("force_flush", max(deadline - time.monotonic(), 0.0))

    def shutdown(self, timeout_millis: int | None = None) -> None:
        """Flush every trail still buffered (marked incomplete, reason ``shutdown``), export what can be exported within
        ``timeout_millis`` (``config.shutdown_timeout_ms`` by default), shut the exporter down and stop. Never waits
        longer; what could not be exported in time is counted (``trails.shutdown_timeout``)."""
        buffer = self._buffer
        with buffer.lock:
            if self.state is not ProcessorState.RUNNING:
                return
            self.state = ProcessorState.SHUTTING_DOWN
            buffer.close()
        timeout = (timeout_millis if timeout_millis is not None else self.config.shutdown_timeout_ms) / 1000.0
        deadline = time.monotonic() + timeout
        try:
            if not self._worker.stop(deadline):  # still busy (a slow stage): what it has not taken is given up
                self._worker.abandon_unsealed()
            if self._exports.drain(deadline):
                self._worker.final_checkpoint()  # after the exports: it lists the trails that did not make it
                self._exports.drain(deadline)
                self._exports.call("force_flush", max(deadline - time.monotonic(), 0.0))
            self._exports.call("shutdown", max(deadline - time.monotonic(), 0.0))
            self._exports.close()
            self._failures.flush()
        finally:
            registry.unregister(self)
            self.state = ProcessorState.SHUT_DOWN


def processors() -> list[TrailProcessor]:
    """The live trail processors (usually one)."""
    return registry.live()
