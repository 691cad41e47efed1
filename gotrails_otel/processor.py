"""``TrailProcessor``: buffers the spans of each request and flushes one trail per request, exactly once."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .bridge import set_span_metadata
from .config import TrailConfig
from .exporters import TrailExporter, exporter_from_config
from .fold import FoldInput, fold
from .integrity import Chain, StampedTrail
from .sampling import TrailSampler

__all__ = ["CaptureStore", "TrailProcessor"]

_log = logging.getLogger("gotrails_otel")
_MAX_LATE_IDS = 10_000
_MAX_METADATA_KEYS = 1_000

# Every live processor, so the module-level API (steps, metadata, hooks) can find the trail of a span.
_PROCESSORS: weakref.WeakSet[TrailProcessor] = weakref.WeakSet()


class _SpanRecord:
    """What the fold needs of an ended span, kept instead of the SDK's ``ReadableSpan``.

    A ReadableSpan carries locks and bounded containers for its attributes and events; holding thousands of them
    until their requests end keeps the garbage collector busy. This record holds plain values (its attribute dict
    holds atomic values only, which the collector does not track) and lets the ReadableSpan go at once.
    """

    __slots__ = (
        "attributes",
        "context",
        "end_time",
        "events",
        "instrumentation_scope",
        "kind",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    def __init__(self, span: ReadableSpan) -> None:
        inner = getattr(getattr(span, "_attributes", None), "_dict", None)
        self.attributes = dict(inner) if isinstance(inner, dict) else dict(span.attributes or {})
        self.context = span.context
        self.parent = span.parent
        self.name = span.name
        self.kind = span.kind
        self.start_time = span.start_time
        self.end_time = span.end_time
        self.status = span.status
        events = getattr(span, "_events", None)
        self.events = tuple(events) if events else ()
        self.instrumentation_scope = span.instrumentation_scope
        self.resource = span.resource


class _Trail:
    """The mutable buffer of one request, guarded by its processor's lock."""

    __slots__ = (
        "captures",
        "created",
        "dropped",
        "errors",
        "finished",
        "grace_started",
        "metadata",
        "open",
        "pending",
        "root",
        "root_ended",
        "root_id",
        "span_ids",
        "spans",
    )

    def __init__(self, root: Span, created: float) -> None:
        self.root: ReadableSpan = root
        self.root_id: int = root.context.span_id
        self.root_ended = False
        self.spans: list[ReadableSpan] = []
        self.span_ids: list[int] = [self.root_id]
        self.open = 0
        self.pending = 0
        self.captures: dict[int, dict[str, Any]] = {}
        self.metadata: dict[str, Any] = {}
        self.errors: list[dict[str, Any]] = []
        self.dropped: dict[str, int] = {}
        self.created = created
        self.grace_started = False
        self.finished = False

    def count_drop(self, what: str, n: int = 1) -> None:
        self.dropped[what] = self.dropped.get(what, 0) + n


class _Counters:
    """Drop and flush counts, kept locally (``TrailProcessor.stats()``) and as OTel metrics."""

    def __init__(self, meter_provider: metrics.MeterProvider | None) -> None:
        self.values: dict[str, int] = {}
        self._lock = threading.Lock()
        meter = metrics.get_meter("gotrails_otel", meter_provider=meter_provider)
        self._trails = meter.create_counter("gotrails.trails", unit="{trail}", description="Trails flushed")
        self._drops = meter.create_counter(
            "gotrails.dropped",
            unit="{item}",
            description="Spans, payloads, errors or metadata dropped by limits",
        )
        self._failures = meter.create_counter(
            "gotrails.failures",
            unit="{failure}",
            description="Folds, exports or emits of a trail that failed",
        )

    def add(self, name: str, n: int = 1, *, reason: str | None = None) -> None:
        key = f"{name}.{reason}" if reason else name
        with self._lock:
            self.values[key] = self.values.get(key, 0) + n
        try:
            if name == "trails":
                self._trails.add(n, {"reason": reason or ""})
            elif name == "failures":
                self._failures.add(n, {"stage": reason or ""})
            else:
                self._drops.add(n, {"what": name, "reason": reason or ""})
        except Exception:  # a broken MeterProvider must not break the request path
            _log.debug("gotrails: recording a metric failed", exc_info=True)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


class CaptureStore:
    """Payloads captured by hooks and the public API, keyed by span id and merged into the trail at fold.

    Writes go to the trail that owns the span, so they are bounded by the trail's limits and freed when the
    trail is flushed. A payload may arrive after its span ended (an HTTP response body, a Kafka offset): it
    still reaches the trail as long as the trail has not been flushed; use :meth:`hold` to make the trail wait
    for it (within the grace period). Writes for spans outside any trail are ignored and return ``False``.

    Keys the fold understands: ``request``, ``response``, ``metadata`` (dicts merged into the entry), ``error``
    (an exception, a mapping with ``message``/``type``, or a string), ``name`` (overrides the default name),
    and on the root span ``trace_id``/``request_id``.
    """

    def __init__(self, processor: TrailProcessor) -> None:
        self._processor = processor

    def put(self, span_id: int, key: str, value: Any) -> bool:
        """Set ``key`` of the span's payload to ``value`` (replacing any earlier value)."""
        with self._processor._lock:
            trail = self._processor._owner.get(span_id)
            if trail is None:
                self._processor._counters.add("captures", reason="no_trail")
                return False
            trail.captures.setdefault(span_id, {})[key] = value
            return True

    def update(self, span_id: int, key: str, values: Mapping[str, Any]) -> bool:
        """Merge ``values`` into the dict under ``key`` (``request``, ``response``, ``metadata``)."""
        with self._processor._lock:
            trail = self._processor._owner.get(span_id)
            if trail is None:
                self._processor._counters.add("captures", reason="no_trail")
                return False
            payload = trail.captures.setdefault(span_id, {})
            current = payload.get(key)
            if isinstance(current, dict):
                current.update(values)
            else:
                payload[key] = dict(values)
            return True

    def get(self, span_id: int) -> dict[str, Any] | None:
        """A copy of what is captured for ``span_id`` so far, or ``None``."""
        with self._processor._lock:
            trail = self._processor._owner.get(span_id)
            if trail is None or span_id not in trail.captures:
                return None
            return dict(trail.captures[span_id])

    @property
    def config(self) -> TrailConfig:
        """The owning processor's configuration (limits that hooks apply at capture time)."""
        return self._processor.config

    def tracks(self, span_id: int) -> bool:
        """Whether ``span_id`` belongs to a trail that has not been flushed yet."""
        return span_id in self._processor._owner

    def hold(self, span_id: int) -> Callable[[], None] | None:
        """Keep the span's trail open until the returned release function is called (or the grace expires).

        Returns ``None`` when the span is in no trail. Calling the release function more than once is harmless.
        """
        processor = self._processor
        with processor._lock:
            trail = processor._owner.get(span_id)
            if trail is None:
                return None
            trail.pending += 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with processor._lock:
                if not trail.finished:
                    trail.pending -= 1
                    processor._maybe_finish(trail)

        return release


class TrailProcessor(SpanProcessor):
    """An OpenTelemetry ``SpanProcessor`` that turns each request into one gotrails trail.

    A request is everything under one *local root* span (a span with no parent, or a remote parent) whose kind
    is in ``config.root_kinds`` (SERVER and CONSUMER by default); spans under other local roots are ignored.
    The trail is flushed once, off the request path, when the root and every child started under it have ended;
    children still open when the root ends get ``config.grace_ms``, after which the trail is flushed marked
    incomplete. ``config.max_age_ms`` and ``config.max_trails`` bound how long and how many trails are held.

    Args:
        exporter: where trails go; by default chosen from ``config`` (``GOTRAILS_EXPORTER``).
        config: settings; by default :meth:`TrailConfig.from_env`.
        meter_provider: for the drop and flush counters; the global one by default.
    """

    def __init__(
        self,
        exporter: TrailExporter | None = None,
        config: TrailConfig | None = None,
        *,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.config = config if config is not None else TrailConfig.from_env()
        self.exporter = exporter if exporter is not None else exporter_from_config(self.config)
        self.captures = CaptureStore(self)
        self._counters = _Counters(meter_provider)
        self._grace_s = self.config.grace_ms / 1000.0
        self._max_age_s = self.config.max_age_ms / 1000.0
        self._policy = self.config.policy()
        self._root_kinds = self.config.root_kinds
        self._max_spans = self.config.max_spans_per_trail
        self._enabled = self.config.enabled
        self._sampler = TrailSampler.from_config(self.config, self._counters.add)
        self._chain = Chain.from_config(self.config)
        self._init_state()
        _PROCESSORS.add(self)
        ref = weakref.ref(self)

        def after_fork() -> None:
            processor = ref()
            if processor is not None:
                processor._init_state()

        os.register_at_fork(after_in_child=after_fork)

    @property
    def chain(self) -> Chain | None:
        """The hash chain that stamps this processor's trails (``None`` with ``GOTRAILS_INTEGRITY=false``)."""
        return self._chain

    def _init_state(self) -> None:
        # Also run in a forked child: a lock held by another thread at fork() would stay held forever there,
        # and the worker thread does not exist in the child.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._trails: OrderedDict[int, _Trail] = OrderedDict()
        self._owner: dict[int, _Trail] = {}
        self._late: OrderedDict[int, None] = OrderedDict()
        self._grace: deque[tuple[float, _Trail]] = deque()
        self._ready: deque[tuple[_Trail, str]] = deque()
        self._busy = False
        self._closed = False
        self._worker: threading.Thread | None = None
        self._worker_ident: int | None = None

    # ------------------------------------------------------------------------------------ span events

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        if not self._enabled:
            return
        parent = span.parent
        if parent is None or parent.is_remote:
            if span.kind not in self._root_kinds:
                return
            if threading.get_ident() == self._worker_ident or otel_context.get_value(
                otel_context._SUPPRESS_INSTRUMENTATION_KEY, parent_context
            ):
                return  # gotrails' own export activity, or instrumentation suppressed by the caller
            trail = _Trail(span, time.monotonic())
            with self._lock:
                if self._closed:
                    return
                while len(self._trails) >= self.config.max_trails:
                    self._finish(next(iter(self._trails.values())), "capacity")
                self._trails[trail.root_id] = trail
                self._owner[trail.root_id] = trail
                self._ensure_worker()
            return
        owners = self._owner
        parent_id = parent.span_id
        if parent_id not in owners:  # cheap exit for spans outside every trail
            return
        span_id = span.context.span_id
        with self._lock:
            owner = owners.get(parent_id)
            if owner is None or owner.finished:
                return
            trail = owner
            if len(trail.span_ids) >= self._max_spans:
                trail.count_drop("spans")
                self._counters.add("spans", reason="max_spans_per_trail")
                return
            trail.span_ids.append(span_id)
            trail.open += 1
            owners[span_id] = trail

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        span_id = ctx.span_id
        if span_id not in self._owner:
            if span_id in self._late:
                with self._lock:
                    found = span_id in self._late
                    self._late.pop(span_id, None)
                if found:
                    self._counters.add("spans", reason="late")
            return
        with self._lock:
            trail = self._owner.get(span_id)
            if trail is None or trail.finished:
                return
            if span_id == trail.root_id:
                trail.root = span
                trail.root_ended = True
            else:
                trail.spans.append(_SpanRecord(span))  # type: ignore[arg-type]
                trail.open -= 1
                if not trail.root_ended:
                    return  # the common case: a child ends while its request is still running
            self._maybe_finish(trail)

    # --------------------------------------------------------------------------- the trail's lifecycle

    def _maybe_finish(self, trail: _Trail) -> None:
        """With the lock held: flush when complete, else start the grace period once the root ended."""
        if not trail.root_ended:
            return
        if trail.open <= 0 and trail.pending <= 0:
            self._finish(trail, "complete")
        elif not trail.grace_started:
            trail.grace_started = True
            self._grace.append((time.monotonic() + self._grace_s, trail))
            self._cond.notify_all()

    def _finish(self, trail: _Trail, reason: str) -> None:
        """With the lock held: take the trail out of the buffers and queue it for the worker."""
        trail.finished = True
        self._trails.pop(trail.root_id, None)
        ended = {s.context.span_id for s in trail.spans if s.context is not None}
        ended.add(trail.root_id)
        for span_id in trail.span_ids:
            self._owner.pop(span_id, None)
            if span_id not in ended:
                self._late[span_id] = None
        while len(self._late) > _MAX_LATE_IDS:
            self._late.popitem(last=False)
        self._ready.append((trail, reason))
        self._cond.notify_all()

    def _expire(self, now: float) -> float | None:
        """With the lock held: flush trails past their grace or age; return seconds until the next deadline."""
        while self._grace and (self._grace[0][1].finished or self._grace[0][0] <= now):
            _, trail = self._grace.popleft()
            if not trail.finished:
                self._finish(trail, "grace_expired")
        while self._trails:
            oldest = next(iter(self._trails.values()))
            if oldest.created + self._max_age_s > now:
                break
            self._finish(oldest, "max_age")
        deadlines = []
        if self._grace:
            deadlines.append(self._grace[0][0])
        if self._trails:
            deadlines.append(next(iter(self._trails.values())).created + self._max_age_s)
        return max(min(deadlines) - now, 0.0) if deadlines else None

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="gotrails-flush", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        self._worker_ident = threading.get_ident()
        while True:
            with self._cond:
                while not self._ready:
                    if self._closed:
                        return
                    wait = self._expire(time.monotonic())
                    if self._ready:
                        break
                    due = self._chain.due_in() if self._chain is not None else None
                    if due is not None and due <= 0:
                        break  # a checkpoint is due: emitted below, outside the lock
                    self._cond.wait(due if wait is None else wait if due is None else min(wait, due))
                batch = list(self._ready)
                self._ready.clear()
                self._busy = True
            try:
                for trail, reason in batch:
                    try:
                        self._emit(trail, reason)
                    except Exception:  # keep the worker alive for every other trail
                        self._counters.add("failures", reason="emit")
                        _log.exception("gotrails: a trail could not be emitted")
                due = self._chain.due_in() if self._chain is not None else None
                if due is not None and due <= 0:
                    self._emit_checkpoint(final=False)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _emit(self, trail: _Trail, reason: str) -> None:
        token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            document = self._fold(trail, reason)
            self._counters.add("trails", reason=reason)
            if self._sampler.decide(document) is not None:
                return  # sampled out: counted by reason, never stamped
            if self._chain is not None:
                try:
                    document = StampedTrail(document, self._chain.stamp(document))
                except Exception:  # exported without its link: verify reports it, the chain stays whole
                    self._counters.add("failures", reason="integrity")
                    _log.exception("gotrails: a trail could not be stamped")
            try:
                self.exporter.export(document)
            except Exception:  # an exporter failure must not stop other trails
                self._counters.add("failures", reason="export")
                _log.exception("gotrails: exporting a trail failed")
                seq = document.get("integrity", {}).get("seq")
                if self._chain is not None and isinstance(seq, int):
                    self._chain.note_lost(seq)
        finally:
            otel_context.detach(token)

    def _emit_checkpoint(self, *, final: bool) -> None:
        """Export a checkpoint of the hash chain's head (periodic, or the final one at shutdown)."""
        if self._chain is None:
            return
        counts = self._counters.snapshot()
        sampled = {k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("sampled_out.")}
        token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            record = self._chain.checkpoint(final=final, extra={"sampled_out": sampled} if sampled else None)
            if record is not None:
                self.exporter.export(record)
        except Exception:
            self._counters.add("failures", reason="checkpoint")
            _log.exception("gotrails: exporting a checkpoint failed")
        finally:
            otel_context.detach(token)

    def _fold(self, trail: _Trail, reason: str) -> dict[str, Any]:
        config = self.config
        data = FoldInput(
            root=trail.root,
            spans=trail.spans,
            captures=trail.captures,
            metadata=trail.metadata,
            errors=trail.errors,
            flush_reason=reason,
            open_spans=max(trail.open, 0),
            dropped=trail.dropped,
            now_ns=time.time_ns(),
            service_name=config.service_name,
            environment=config.environment,
            http_names=config.http_names,
        )
        try:
            return self._policy.apply(fold(data))
        except Exception as exc:  # bad input in one trail yields a marked fallback, never a lost trail
            _log.exception("gotrails: folding a trail failed; exporting a reduced trail")
            self._counters.add("failures", reason="fold")
            reduced = FoldInput(
                root=trail.root,
                errors=[{"source": "gotrails", "message": f"fold failed: {type(exc).__name__}: {exc}"}],
                flush_reason=reason,
                open_spans=max(trail.open, 0),
                dropped={**trail.dropped, "spans_unfolded": len(trail.spans)},
                now_ns=data.now_ns,
                service_name=config.service_name,
                environment=config.environment,
            )
            # Without captured payloads; still masked (span attributes of the root may hold secrets).
            return self._policy.apply(fold(reduced))

    # ------------------------------------------------------------------------ API used by the front end

    def add_metadata(self, span_id: int, fields: Mapping[str, Any]) -> bool:
        """Merge ``fields`` into the ``metadata{}`` of the trail that owns ``span_id``."""
        accepted: dict[str, Any] = {}
        with self._lock:
            trail = self._owner.get(span_id)
            if trail is None:
                return False
            for key, value in fields.items():
                if key in trail.metadata or len(trail.metadata) < _MAX_METADATA_KEYS:
                    trail.metadata[key] = accepted[key] = value
                else:
                    trail.count_drop("metadata")
                    self._counters.add("metadata", reason="max_keys")
            root = trail.root if self.config.metadata_on_span and not trail.root_ended else None
        if root is not None and accepted:  # the OpenTelemetry bridge: masked, outside the lock
            set_span_metadata(root, self._policy, accepted)  # type: ignore[arg-type]
        return True

    def add_error(self, span_id: int, error: dict[str, Any]) -> bool:
        """Append an entry to ``errors[]`` of the trail that owns ``span_id``."""
        with self._lock:
            trail = self._owner.get(span_id)
            if trail is None:
                return False
            if len(trail.errors) >= self.config.max_errors_per_trail:
                trail.count_drop("errors")
                self._counters.add("errors", reason="max_errors_per_trail")
            else:
                trail.errors.append(error)
            return True

    # ----------------------------------------------------------------------------- SpanProcessor API

    def stats(self) -> dict[str, int]:
        """Counts of flushed trails by reason and of everything dropped, plus the trails in flight now."""
        counts = self._counters.snapshot()
        with self._lock:
            counts["in_flight"] = len(self._trails)
        return counts

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every trail that is ready has been exported. Trails still waiting for spans stay."""
        deadline = time.monotonic() + timeout_millis / 1000.0
        with self._cond:
            while self._ready or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        flush = getattr(self.exporter, "force_flush", None)
        if callable(flush):
            try:
                return bool(flush(max(int((deadline - time.monotonic()) * 1000), 0)))
            except Exception:
                _log.exception("gotrails: exporter force_flush failed")
                return False
        return True

    def shutdown(self) -> None:
        """Flush every trail still buffered (marked incomplete, reason ``shutdown``) and stop."""
        with self._cond:
            if self._closed:
                return
            for trail in list(self._trails.values()):
                self._finish(trail, "shutdown")
            self._closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=30)
        # Trails queued after the worker stopped (or with no worker at all) are emitted here.
        while self._ready:
            trail, reason = self._ready.popleft()
            self._emit(trail, reason)
        self._emit_checkpoint(final=True)
        _PROCESSORS.discard(self)
        try:
            self.exporter.shutdown()
        except Exception:
            _log.exception("gotrails: exporter shutdown failed")


def processors() -> Iterator[TrailProcessor]:
    """The live trail processors (usually one)."""
    return iter(list(_PROCESSORS))
