"""Assert on trails in your own tests: :func:`capture_trails` (pytest, unittest, anything) and the ``captured_trails``
pytest fixture (registered by gotrails-otel's pytest plugin), modelled on ``structlog.testing.capture_logs``.

.. code-block:: python

    from gotrails_otel.testing import capture_trails

    def test_payment_is_audited(client):
        with capture_trails() as trails:
            client.post("/v1/payments", json={"amount": 150000})
        [trail] = trails
        assert trail["response"]["status"] == 201
        assert [i["type"] for i in trail["integrations"]] == ["database", "http"]

    def test_with_the_fixture(client, captured_trails):
        client.post("/v1/payments", json={"amount": -5})
        assert captured_trails[0]["response"]["status"] == 422

The trails are the documents gotrails exports (plain dicts, typed as :class:`~gotrails_otel.types.Trail`): folded,
masked and limited exactly as in production, because they come from the application's own trail processor.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast, overload

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from ._json import json_safe
from .config import TrailConfig
from .exporters import batch_method
from .integrity import is_checkpoint
from .processor import TrailProcessor, processors
from .types import Trail

__all__ = ["CapturedTrails", "Trail", "capture_trails"]

_log = logging.getLogger("gotrails_otel")
_SETTLE_S = 5.0
"""How long leaving the block waits, beyond the grace period, for requests still in flight."""
_lock = threading.Lock()


class CapturedTrails(Sequence[Trail]):
    """The trails exported while a :func:`capture_trails` block runs, in export order.

    Inside the block, reading it (indexing, ``len``, iterating) first waits for the trails of requests that have
    already ended to be exported, so a request made with a test client is there as soon as the call returns. A
    request served by another thread (a live server) may still be finishing: :meth:`wait` waits for it. Leaving
    the block waits for every request in flight, so after the block the list is complete and fixed.
    """

    def __init__(self) -> None:
        self._trails: list[Trail] = []
        self._lock = threading.Lock()
        self._processors: list[TrailProcessor] = []
        self._active = False
        self._timeout: float | None = None

    # ----------------------------------------------------------------------------------- Sequence

    @overload
    def __getitem__(self, index: int) -> Trail: ...

    @overload
    def __getitem__(self, index: slice) -> list[Trail]: ...

    def __getitem__(self, index: int | slice) -> Trail | list[Trail]:
        return self._snapshot()[index]

    def __len__(self) -> int:
        return len(self._snapshot())

    def __iter__(self) -> Iterator[Trail]:
        return iter(self._snapshot())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CapturedTrails):
            return self._snapshot() == other._snapshot()
        if isinstance(other, list):
            return self._snapshot() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CapturedTrails({self._snapshot()!r})"

    # ------------------------------------------------------------------------------------ waiting

    def wait(self, count: int | None = None, timeout: float | None = None) -> CapturedTrails:
        """Wait for trails still on their way, and return ``self``.

        Without ``count``: until every request in flight has ended and its trail was exported (requests still
        running after ``timeout`` seconds are left out). With ``count``: until at least ``count`` trails are here.
        ``timeout`` defaults to the processor's grace period plus 5 seconds. Never raises on a timeout: assert on
        what arrived.
        """
        timeout = self._default_timeout() if timeout is None else timeout
        if count is None:
            self._settle(timeout)
            return self
        deadline = time.monotonic() + timeout
        while len(self) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    def _snapshot(self) -> list[Trail]:
        if self._active:
            self._flush()
        with self._lock:
            return list(self._trails)

    def _flush(self) -> None:
        for processor in list(self._processors):
            try:
                processor.force_flush(5_000)
            except Exception:  # reading the list must not fail because a processor's flush did
                _log.exception("gotrails: flushing trails for a capture failed")

    def _settle(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until no trail is in flight in the capture's processors, then flush."""
        deadline = time.monotonic() + timeout
        for processor in list(self._processors):
            while processor.stats().get("in_flight", 0) and time.monotonic() < deadline:
                time.sleep(0.005)
        self._flush()

    def _default_timeout(self) -> float:
        if self._timeout is not None:
            return self._timeout
        grace = max((p.config.grace_ms for p in self._processors), default=0)
        return grace / 1000.0 + _SETTLE_S

    def _add(self, trail: Mapping[str, Any]) -> None:
        """Called on the flush thread with each exported record (a dict, or a sealed read-only mapping)."""
        if not self._active or is_checkpoint(trail):
            return
        data = getattr(trail, "data", None)
        if isinstance(data, (bytes, bytearray, memoryview)):
            import orjson

            document = orjson.loads(bytes(data))  # exactly what went out
        else:
            document = json_safe(trail)  # a fresh plain copy
        with self._lock:
            self._trails.append(cast(Trail, document))


class _Tee:
    """Stands in for a trail processor's exporter while captures are active: each record goes to every capture,
    then to the processor's own exporter, as before."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.captures: list[CapturedTrails] = []

    def _record(self, trail: Any) -> None:
        for capture in list(self.captures):
            try:
                capture._add(trail)
            except Exception:  # a capture must never cost the application its export
                _log.exception("gotrails: a test capture could not record a trail")

    def export(self, trail: Any) -> None:
        self._record(trail)
        self.inner.export(trail)

    @property
    def export_batch(self) -> Callable[[Sequence[Any]], None] | None:
        """Batches when the processor's own exporter takes them (each trail still goes to every capture first)."""
        inner = batch_method(self.inner)
        if inner is None:
            return None

        def export_batch(trails: Sequence[Any]) -> None:
            for trail in trails:
                self._record(trail)
            inner(trails)

        return export_batch

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        flush = getattr(self.inner, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True

    def shutdown(self) -> None:
        self.inner.shutdown()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _CaptureExporter:
    """The exporter of a processor that :func:`capture_trails` adds itself."""

    def __init__(self, capture: CapturedTrails) -> None:
        self.capture = capture

    def export(self, trail: Any) -> None:
        self.capture._add(trail)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        """Nothing to release."""


@contextlib.contextmanager
def capture_trails(
    *, tracer_provider: trace.TracerProvider | None = None, timeout: float | None = None
) -> Iterator[CapturedTrails]:
    """Capture the trails exported while the block runs; yields a :class:`CapturedTrails` (a read-only sequence).

    The trails come from the trail processor the application already runs (``gotrails_otel.instrument()``,
    ``opentelemetry-instrument`` or a ``TrailProcessor`` added by hand), whose exporter also keeps receiving them.
    When no trail processor runs, one is added to ``tracer_provider`` (the global SDK provider by default) for
    the block and removed afterwards. Leaving the block waits for the requests still in flight (up to
    ``timeout`` seconds; by default the grace period plus 5 s) so the trail of a request that ended inside the
    block is captured even when a server thread finishes it a moment after the client returned.

    Works in pytest (or use the ``captured_trails`` fixture), unittest and plain scripts; blocks may nest.
    """
    capture = CapturedTrails()
    capture._timeout = timeout
    added: tuple[SdkTracerProvider, TrailProcessor] | None = None
    live = list(processors())
    if live:
        for processor in live:  # trails of requests that ended before the block go out before it starts
            processor.force_flush(5_000)
        _attach(capture, live)
    else:
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        if not isinstance(provider, SdkTracerProvider):
            raise TypeError(
                "capture_trails needs an OpenTelemetry SDK TracerProvider (opentelemetry.sdk.trace.TracerProvider) "
                f"or a running gotrails trail processor; got {type(provider).__name__}"
            )
        processor = TrailProcessor(_CaptureExporter(capture), TrailConfig.from_env().replace(enabled=True))
        provider.add_span_processor(processor)
        added = (provider, processor)
        capture._processors = [processor]
        capture._active = True
    try:
        yield capture
    except BaseException:
        capture._flush()  # the block failed: keep what already ended, without waiting for the rest
        raise
    else:
        capture._settle(capture._default_timeout())
    finally:
        capture._active = False
        if added is not None:
            provider, processor = added
            _remove_processor(provider, processor)
            processor.shutdown()
        else:
            _detach(capture)


def _attach(capture: CapturedTrails, live: list[TrailProcessor]) -> None:
    with _lock:
        for processor in live:
            tee = processor.exporter
            if not isinstance(tee, _Tee):
                tee = _Tee(processor.exporter)
                processor.exporter = tee
            tee.captures.append(capture)
        capture._processors = live
        capture._active = True


def _detach(capture: CapturedTrails) -> None:
    with _lock:
        for processor in capture._processors:
            tee = processor.exporter
            if not isinstance(tee, _Tee):
                continue
            if capture in tee.captures:
                tee.captures.remove(capture)
            if not tee.captures:
                processor.exporter = tee.inner


def _remove_processor(provider: SdkTracerProvider, processor: TrailProcessor) -> None:
    """Take ``processor`` off ``provider`` (the SDK has no public API for it)."""
    multi = getattr(provider, "_active_span_processor", None)
    lock = getattr(multi, "_lock", None)
    current = getattr(multi, "_span_processors", None)
    if multi is None or lock is None or not isinstance(current, tuple):
        _log.warning("gotrails: could not remove the capture's trail processor from the tracer provider")
        return
    with lock:
        multi._span_processors = tuple(p for p in multi._span_processors if p is not processor)
