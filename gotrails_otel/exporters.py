"""Trail exporters: where a finished trail goes (OTel logs, stdout, a file, memory)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any, Protocol, runtime_checkable

from opentelemetry import trace
from opentelemetry._logs import Logger, LoggerProvider, SeverityNumber, get_logger_provider

from ._json import dumps
from .config import TrailConfig
from .integrity import CHECKPOINT, is_checkpoint

__all__ = [
    "EVENT_NAME",
    "FileTrailExporter",
    "InMemoryTrailExporter",
    "OTelLogTrailExporter",
    "StdoutTrailExporter",
    "TrailExporter",
]

EVENT_NAME = "gotrails.trail"
"""The event name of the OpenTelemetry log record that carries a trail."""
_log = logging.getLogger("gotrails_otel")


@runtime_checkable
class TrailExporter(Protocol):
    """Receives each finished trail once, on gotrails' flush thread (never on a request thread).

    ``trail`` is a dict of JSON types only. ``export`` may raise; the processor logs and counts the failure
    and goes on with the next trail.
    """

    def export(self, trail: dict[str, Any]) -> None:
        """Ship one trail."""

    def shutdown(self) -> None:
        """Release resources; called once when the processor shuts down."""


class StdoutTrailExporter:
    """Writes exactly one compact JSON line per trail to standard output (or ``stream``)."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def export(self, trail: dict[str, Any]) -> None:
        line = _line(trail)
        stream = self._stream if self._stream is not None else sys.stdout.buffer
        with self._lock:
            stream.write(line)
            stream.flush()

    def shutdown(self) -> None:
        """Nothing to release: the stream belongs to the caller."""


class FileTrailExporter:
    """Appends one JSON line per trail to ``path`` (created with its parent folders when missing).

    Each line is written with a single ``write`` on a file opened in append mode, so lines from several
    processes appending to the same file do not interleave.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._lock = threading.Lock()

    def export(self, trail: dict[str, Any]) -> None:
        line = _line(trail)
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"gotrails: file exporter for {self.path} is shut down")
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class InMemoryTrailExporter:
    """Keeps trails in memory; for tests. Checkpoints of the hash chain are kept apart from the trails."""

    def __init__(self) -> None:
        self._trails: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def export(self, trail: dict[str, Any]) -> None:
        with self._lock:
            self._trails.append(trail)

    def get_finished_trails(self) -> list[dict[str, Any]]:
        """A copy of the list of trails exported so far, in export order (without checkpoint records)."""
        with self._lock:
            return [trail for trail in self._trails if not is_checkpoint(trail)]

    def get_finished_records(self) -> list[dict[str, Any]]:
        """Everything exported so far, trails and checkpoints, in export order."""
        with self._lock:
            return list(self._trails)

    def clear(self) -> None:
        """Forget the trails exported so far."""
        with self._lock:
            self._trails.clear()

    def shutdown(self) -> None:
        """Nothing to release."""


class OTelLogTrailExporter:
    """Emits one OpenTelemetry LogRecord per trail through a LoggerProvider (the global one by default).

    The record's event name is ``gotrails.trail``, its body the trail, its timestamp the request start and its
    trace and span ids those of the request's root span, so whatever logs exporter is configured
    (``OTEL_LOGS_EXPORTER=console``, ``otlp``…) ships it and backends link it to the trace. A checkpoint of the
    hash chain goes out as a record of its own with event name ``gotrails.checkpoint``.
    """

    def __init__(self, logger_provider: LoggerProvider | None = None) -> None:
        self._provider = logger_provider
        self._logger: Logger | None = None

    def _get_logger(self) -> Logger:
        # Looked up lazily: under auto-instrumentation the LoggerProvider is set after the TracerProvider.
        if self._logger is None:
            from . import __version__

            provider = self._provider if self._provider is not None else get_logger_provider()
            self._logger = provider.get_logger("gotrails_otel", __version__)
        return self._logger

    def export(self, trail: dict[str, Any]) -> None:
        if is_checkpoint(trail):
            self._get_logger().emit(
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=trail,
                event_name=CHECKPOINT,
                attributes={"gotrails.chain": str(trail.get("chain")), "gotrails.seq": int(trail.get("seq") or 0)},
            )
            return
        otel = trail.get("otel") or {}
        context = None
        try:
            span_context = trace.SpanContext(
                trace_id=int(otel["trace_id"], 16),
                span_id=int(otel["span_id"], 16),
                is_remote=False,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
        except (KeyError, TypeError, ValueError):
            _log.debug("gotrails: trail without OTel ids; log record not linked to a trace")
        status = trail.get("status")
        self._get_logger().emit(
            timestamp=_timestamp_ns(trail.get("timestamp")),
            context=context,
            severity_number=SeverityNumber.ERROR if status == "error" else SeverityNumber.INFO,
            severity_text="ERROR" if status == "error" else "INFO",
            body=trail,
            event_name=EVENT_NAME,
            attributes={
                "gotrails.trace_id": str(trail.get("trace_id")),
                "gotrails.request_id": str(trail.get("request_id")),
                "gotrails.status": str(status),
            },
        )

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the LoggerProvider when it supports it."""
        provider = self._provider if self._provider is not None else get_logger_provider()
        flush = getattr(provider, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True

    def shutdown(self) -> None:
        """Nothing to release: the LoggerProvider belongs to the application."""


def _line(trail: dict[str, Any]) -> bytes:
    """One JSON line: a stamped trail's bytes exactly as hashed, else the trail serialised."""
    data = getattr(trail, "data", None)
    return (data if isinstance(data, bytes) else dumps(trail)) + b"\n"


def _timestamp_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch of a trail's RFC 3339 ``timestamp``, or ``None`` when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


class _MultiExporter:
    """Sends each trail to several exporters; one failing does not stop the others."""

    def __init__(self, exporters: Sequence[TrailExporter]) -> None:
        self.exporters = tuple(exporters)

    def export(self, trail: dict[str, Any]) -> None:
        failures = []
        for exporter in self.exporters:
            try:
                exporter.export(trail)
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        ok = True
        for exporter in self.exporters:
            flush = getattr(exporter, "force_flush", None)
            if callable(flush):
                ok = bool(flush(timeout_millis)) and ok
        return ok

    def shutdown(self) -> None:
        for exporter in self.exporters:
            exporter.shutdown()


class _AutoExporter:
    """The default: OTel logs when an SDK LoggerProvider is configured at the first trail, else stdout.

    The choice is made at the first export (the LoggerProvider is often set up after the processor) and
    announced once on the ``gotrails_otel`` logger when it falls back to stdout, so a trail never vanishes
    into a no-op provider.
    """

    def __init__(self) -> None:
        self._chosen: TrailExporter | None = None
        self._lock = threading.Lock()

    def _choose(self) -> TrailExporter:
        with self._lock:
            if self._chosen is None:
                from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider

                provider = get_logger_provider()
                if isinstance(provider, SdkLoggerProvider) and _has_processors(provider):
                    self._chosen = OTelLogTrailExporter()
                else:
                    _log.warning(
                        "gotrails: no OpenTelemetry SDK LoggerProvider with a logs exporter is configured; writing "
                        "trails to stdout (set OTEL_LOGS_EXPORTER, or GOTRAILS_EXPORTER to choose)"
                    )
                    self._chosen = StdoutTrailExporter()
            return self._chosen

    def export(self, trail: dict[str, Any]) -> None:
        self._choose().export(trail)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        flush = getattr(self._chosen, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True

    def shutdown(self) -> None:
        if self._chosen is not None:
            self._chosen.shutdown()


def _has_processors(provider: Any) -> bool:
    """Whether an SDK LoggerProvider has any log record processor (else it drops every record)."""
    multi = getattr(provider, "_multi_log_record_processor", None)
    processors = getattr(multi, "_log_record_processors", None)
    return True if processors is None else bool(processors)


def exporter_from_config(config: TrailConfig) -> TrailExporter:
    """The exporter that ``config.exporters`` (``GOTRAILS_EXPORTER``) names."""
    if config.exporters is None:
        return _AutoExporter()
    built: list[TrailExporter] = []
    for name in config.exporters:
        if name == "otel":
            built.append(OTelLogTrailExporter())
        elif name == "stdout":
            built.append(StdoutTrailExporter())
        elif name == "file" and config.file_path:
            built.append(FileTrailExporter(config.file_path))
    return built[0] if len(built) == 1 else _MultiExporter(built)
