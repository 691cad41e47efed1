"""Trail exporters: where a sealed trail goes (OTel logs, stdout, a file, memory).

Every exporter receives the same :class:`~gotrails_otel.sealed.SealedTrail`, on gotrails' export thread (never on
a request thread), one call at a time, each call with a deadline (``GOTRAILS_EXPORT_TIMEOUT_MS``); an exporter with
an ``export_batch`` method gets the trails queued together in one call. Exporters are reset after ``fork()``: a lock
held by the export thread at the fork is not inherited as held.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import IO, Any, Protocol, runtime_checkable

import orjson
from opentelemetry import trace
from opentelemetry._logs import Logger, LoggerProvider, SeverityNumber, get_logger_provider

from .config import TrailConfig
from .integrity import CHECKPOINT, is_checkpoint
from .sealed import SealedTrail

try:  # POSIX: rotation is coordinated between processes with a lock file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EVENT_NAME",
    "ExportError",
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
    """Receives each sealed trail once, on gotrails' export thread (never on a request thread).

    ``export`` may raise; the processor counts the failure, logs it (once per kind and interval, with a count) and
    goes on with the next trail. An export that outlives its deadline is abandoned and counted. ``force_flush`` and
    ``shutdown`` also run on the export thread, within the caller's timeout.

    An exporter may also have ``export_batch(trails: Sequence[SealedTrail]) -> None`` (optional, not part of the
    protocol's checks): the export thread then hands it the trails queued together (at most 64, about 1 MiB, in
    order) in one call, with one deadline for the call. If it raises, every trail of the batch counts as failed
    (an :class:`ExportError` names the failing exporters: each is counted for the whole batch). Without it, ``export``
    is called once per trail, each with its own deadline. The file and stdout exporters have it.
    """

    def export(self, trail: SealedTrail) -> None:
        """Ship one trail. ``trail.data`` is its compact JSON; the trail itself is a read-only mapping."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Push out anything buffered; ``True`` when done within the timeout."""

    def shutdown(self) -> None:
        """Release resources; called once when the processor shuts down."""


class ExportError(Exception):
    """Raised by an exporter made of several: every exporter that failed, with its exception."""

    def __init__(self, failures: Sequence[tuple[TrailExporter, BaseException]]) -> None:
        self.failures = list(failures)
        names = ", ".join(f"{exporter_name(e)}: {type(x).__name__}: {x}" for e, x in self.failures)
        super().__init__(f"{len(self.failures)} exporter(s) failed: {names}")


BatchExport = Callable[[Sequence[SealedTrail]], None]
Failure = tuple[TrailExporter, BaseException, Sequence[SealedTrail]]
"""An exporter that failed, its exception, and the trails it did not take."""


class _BatchExportError(ExportError):
    """Raised by ``export_batch`` when it knows which trails each failing exporter did not take (the others did)."""

    def __init__(self, failures: Sequence[Failure]) -> None:
        super().__init__([(exporter, error) for exporter, error, _ in failures])
        self.trails = [trails for _, _, trails in failures]


def batch_method(exporter: object) -> BatchExport | None:
    """``exporter.export_batch`` when it has one (it may be ``None``: a composite whose parts cannot all take one)."""
    method = getattr(exporter, "export_batch", None)
    return method if callable(method) else None


def failures_of(exporter: TrailExporter, error: Exception, trails: Sequence[SealedTrail]) -> list[Failure]:
    """What ``error``, raised by ``exporter`` for ``trails``, cost: each failing exporter and the trails it lost."""
    if isinstance(error, _BatchExportError):
        return [(failed, cause, lost) for (failed, cause), lost in zip(error.failures, error.trails, strict=True)]
    if isinstance(error, ExportError):
        return [(failed, cause, trails) for failed, cause in error.failures]
    return [(exporter, error, trails)]


def export_each(exporter: TrailExporter, trails: Sequence[SealedTrail]) -> list[Failure]:
    """Send ``trails`` to ``exporter``: in one ``export_batch`` call when it has one, else one ``export`` per trail;
    return what failed (never raises an ``Exception``)."""
    batch = batch_method(exporter)
    if batch is not None:
        try:
            batch(trails)
        except Exception as error:  # returned to the caller, which counts it
            return failures_of(exporter, error, trails)
        return []
    failures: list[Failure] = []
    for trail in trails:
        try:
            exporter.export(trail)
        except Exception as error:  # one trail's failure does not stop the others
            failures.extend(failures_of(exporter, error, (trail,)))
    return failures


def exporter_name(exporter: object) -> str:
    """A short name for logs and metrics."""
    return type(exporter).__name__


# Exporters whose locks must be renewed in a forked child (one fork hook for all of them).
_FORK_RESET: weakref.WeakSet[Any] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for exporter in list(_FORK_RESET):
        exporter._reset_after_fork()


if hasattr(os, "register_at_fork"):  # absent on Windows, where there is no fork
    os.register_at_fork(after_in_child=_reset_after_fork)


class _LineLockedStdout(io.TextIOWrapper):
    """``sys.stdout`` with a lock: each ``write`` holds it, and it knows whether the last write ended a line.

    ``print()`` writes its text and its newline in two calls; a trail line written between them would be glued to
    the application's line. The stdout exporter writes under the same lock, and only at a line boundary. It wraps the
    same binary buffer as the interpreter's ``sys.stdout`` (which stays referenced as ``sys.__stdout__``), so
    ``fileno()``, ``isatty()``, ``buffer`` and ``reconfigure()`` behave as before.
    """

    def __init__(self, original: io.TextIOWrapper) -> None:
        super().__init__(
            original.buffer,
            encoding=original.encoding,
            errors=original.errors,
            newline=None if os.name == "nt" else "\n",
            line_buffering=original.line_buffering,
            write_through=original.write_through,
        )
        self.original = original
        self.lock = threading.RLock()  # re-entrant: a signal handler may print while its thread is in write()
        self.mid_line = False

    def write(self, text: str) -> int:
        with self.lock:
            count = _text_write(self, text)
            if text:
                self.mid_line = text[-1] != "\n"
            return count

    def write_line(self, line: str, wait: float) -> None:
        """Write ``line`` (ending with a newline) at a line boundary: once the application's current line has ended,
        or — when it is still unfinished after ``wait`` seconds — on a new line of its own."""
        deadline = time.monotonic() + wait
        while True:
            with self.lock:
                if not self.mid_line or time.monotonic() >= deadline:
                    _text_write(self, "\n" + line if self.mid_line else line)
                    self.mid_line = False
                    self.flush()
                    return
            time.sleep(0.0005)  # let the application's thread finish its line (print writes the newline next)

    def close(self) -> None:
        """Flush only: the buffer belongs to the interpreter's stdout."""
        self.flush()

    def _reset_after_fork(self) -> None:
        self.lock = threading.RLock()


_text_write = io.TextIOWrapper.write


def _locked_stdout() -> _LineLockedStdout | None:
    """The line-locked ``sys.stdout``, installed on first use when ``sys.stdout`` is the interpreter's own."""
    current = sys.stdout
    if isinstance(current, _LineLockedStdout):
        return current
    if current is None or current is not sys.__stdout__ or type(current) is not io.TextIOWrapper:
        return None  # replaced (a test runner's capture, the application's own wrapper): leave it alone
    current.flush()
    locked = _LineLockedStdout(current)
    _FORK_RESET.add(locked)
    sys.stdout = locked
    return locked


class StdoutTrailExporter:
    """Writes exactly one compact JSON line per trail to standard output (or to ``stream``, a binary stream).

    In one process a trail line is never split, and never glued to the application's own output: when it is made,
    the exporter puts a lock around ``sys.stdout`` (when it is the interpreter's own stream) that ``print()`` and the
    exporter share, and a trail line is written with one call, at a line boundary, then flushed. Output that bypasses
    ``sys.stdout`` (``sys.stdout.buffer``, ``os.write(1, …)``, a reference to the stream taken before) is not
    covered. The lock costs ``print()`` about a microsecond.

    Across processes sharing one pipe (forked workers), the operating system keeps a write in one piece only up to
    ``PIPE_BUF`` bytes (4096 on Linux): larger trails from several processes can interleave there. Use the file
    exporter (each line one ``O_APPEND`` write) or the OTel logs exporter for several processes.
    """

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        _FORK_RESET.add(self)
        if stream is None:
            _locked_stdout()  # now, before the application's threads print (the exporter is made at start-up)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def export(self, trail: SealedTrail) -> None:
        self._write((trail.data,))

    def export_batch(self, trails: Sequence[SealedTrail]) -> None:
        """Write several trails, one line each, in order: lines that fit in ``PIPE_BUF`` together go out in one
        write (so no line is split where one line alone would not be)."""
        if type(self).export is not StdoutTrailExporter.export:  # a subclass's own export sees every trail
            for trail in trails:
                self.export(trail)
            return
        self._write([trail.data for trail in trails])

    def _write(self, records: Sequence[bytes]) -> None:
        with self._lock:
            if self._stream is not None:
                for group in _pipe_groups(records):
                    self._stream.write(b"".join([record + b"\n" for record in group]))
                    self._stream.flush()
                return
            locked = _locked_stdout()
            if locked is not None:
                locked.original.flush()  # anything still written through the original object goes first
                for group in _pipe_groups(records):
                    locked.write_line(_text_lines(group, locked.encoding), 0.1)
                return
            stream = sys.stdout
            if stream is None:  # pythonw, or stdout closed: nowhere to write
                raise RuntimeError("gotrails: sys.stdout is not available")
            encoding = getattr(stream, "encoding", None) or "utf-8"
            for group in _pipe_groups(records):
                stream.write(_text_lines(group, encoding))
            stream.flush()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every line is flushed as it is written."""
        return True

    def shutdown(self) -> None:
        """Nothing to release: the stream belongs to the caller."""


# Bytes a pipe writes in one piece, whatever other processes write to it (POSIX's minimum, Linux's value).
_PIPE_BUF = 4096


def _pipe_groups(records: Sequence[bytes]) -> list[Sequence[bytes]]:
    """``records`` in order, grouped so that each group's lines fit in ``PIPE_BUF`` (a longer line alone)."""
    if len(records) == 1:
        return [records]
    groups: list[Sequence[bytes]] = []
    group: list[bytes] = []
    size = 0
    for record in records:
        if group and size + len(record) + 1 > _PIPE_BUF:
            groups.append(group)
            group, size = [], 0
        group.append(record)
        size += len(record) + 1
    if group:
        groups.append(group)
    return groups


def _text_lines(records: Sequence[bytes], encoding: str) -> str:
    """``records`` as text lines that can be written in ``encoding`` (see :func:`_encodable`)."""
    return "".join([_encodable(record.decode("utf-8") + "\n", encoding) for record in records])


def _encodable(text: str, encoding: str) -> str:
    """``text`` (a JSON line) as it can be written in ``encoding``: unchanged, or with non-ASCII escaped as JSON."""
    if encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig") or text.isascii():
        return text
    try:
        text.encode(encoding)
        return text
    except (UnicodeEncodeError, LookupError):
        return json.dumps(orjson.loads(text), ensure_ascii=True, separators=(",", ":")) + "\n"


class FileTrailExporter:
    """Appends one JSON line per trail to ``path`` (created with its parent folders when missing).

    * Each line, or each batch of whole lines (:meth:`export_batch`), is one ``write`` on a file opened with
      ``O_APPEND``, so lines from several processes appending to the same file do not interleave.
    * When ``path`` no longer names the open file (moved or deleted by logrotate or an operator), the file is reopened
      before the next line, as ``logging.handlers.WatchedFileHandler`` does: no trail goes to an unlinked file.
    * With ``max_bytes`` > 0 the file is rotated before a line would take it past ``max_bytes``: ``path`` → ``path.1``
      → … → ``path.N`` (``N`` = ``backups``; the oldest beyond it is deleted), logrotate's naming. Several processes
      may append to and rotate the same file: the check and the rotation run under an ``fcntl.flock`` on
      ``path + ".lock"``, and a process whose file was rotated by another reopens ``path`` before its next line (a
      batch is then written line by line, so a file passes the limit by at most a line per process).
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 0, backups: int = 5) -> None:
        if max_bytes < 0 or backups < 1:
            raise ValueError("max_bytes must be >= 0 and backups >= 1")
        self.path = os.path.abspath(os.fspath(path))
        self.max_bytes = max_bytes
        self.backups = backups
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._closed = False
        self._open()
        _FORK_RESET.add(self)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        stat = os.fstat(fd)
        old, self._fd, self._identity = self._fd, fd, (stat.st_dev, stat.st_ino)
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)

    def _current_size(self) -> int | None:
        """The size of the file at ``path`` when it is still the open file, else ``None`` (moved, deleted)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        if (stat.st_dev, stat.st_ino) != self._identity:
            return None
        return stat.st_size

    def export(self, trail: SealedTrail) -> None:
        with self._lock:
            self._check_open()
            self._append(trail.data + b"\n")

    def export_batch(self, trails: Sequence[SealedTrail]) -> None:
        """Append several trails, one line each, in order, with one ``write`` (and one check of the file).

        With ``max_bytes`` the lines are written one by one, each rotating the file first when it would pass the
        limit (as :meth:`export` does). When the write fails part-way, the trails whose lines were written whole
        count as exported, the others as failed.
        """
        if type(self).export is not FileTrailExporter.export:  # a subclass's own export sees every trail
            for trail in trails:
                self.export(trail)
            return
        if not trails:
            return
        with self._lock:
            self._check_open()
            if not self.max_bytes:
                if self._current_size() is None:
                    self._open()
                self._write(b"\n".join([*(trail.data for trail in trails), b""]), trails)
                return
            # With rotation, line by line: each process checks the size before each of its lines, so that a file
            # goes past the limit by at most a line per process (a batch checked once could take it past by a
            # whole batch of another process's lines).
            failures: list[Failure] = []
            for trail in trails:
                try:
                    self._append(trail.data + b"\n")
                except Exception as error:  # the other lines are still written, as they would be one by one
                    failures.append((self, error, (trail,)))
            if failures:
                raise _BatchExportError(failures)

    def _check_open(self) -> None:
        if self._closed or self._fd is None:
            raise RuntimeError(f"gotrails: file exporter for {self.path} is shut down")

    def _append(self, line: bytes) -> None:
        """With the lock held: append one line, reopening or rotating the file first when due."""
        size = self._current_size()
        if size is None:
            self._open()
            size = 0
        if self.max_bytes and size and size + len(line) > self.max_bytes:
            self._rotate(len(line))
        fd = self._fd
        assert fd is not None
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def _write(self, data: bytes, trails: Sequence[SealedTrail]) -> None:
        """With the lock held: append ``data``, the lines of ``trails``; on failure say which trails it cost."""
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        done = 0
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
                done += written
        except OSError as error:
            whole = data.count(b"\n", 0, done)  # lines written whole before the failure
            if not whole:
                raise
            raise _BatchExportError([(self, error, trails[whole:])]) from error

    def _rotate(self, incoming: int) -> None:
        """Rotate under the cross-process lock, unless another process did it already."""
        lock_fd = os.open(self.path + ".lock", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            if fcntl is not None:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            size = self._current_size()
            if size is not None and size and size + incoming > self.max_bytes:
                self._shift()
            self._open()  # the new file (or the one another process has just opened at path)
        finally:
            os.close(lock_fd)  # closing releases the flock

    def _shift(self) -> None:
        for n in range(self.backups, 0, -1):
            source = self.path if n == 1 else f"{self.path}.{n - 1}"
            if os.path.exists(source):
                os.replace(source, f"{self.path}.{n}")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Lines are written to the file as they come (no buffer in this process)."""
        return True

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class InMemoryTrailExporter:
    """Keeps trails in memory; for tests. :meth:`get_finished_trails` returns fresh plain dicts of what went out;
    checkpoints of the hash chain are kept apart from the trails (:meth:`get_finished_records` has both)."""

    def __init__(self) -> None:
        self._trails: list[SealedTrail] = []
        self._lock = threading.Lock()
        _FORK_RESET.add(self)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def export(self, trail: SealedTrail) -> None:
        with self._lock:
            self._trails.append(trail)

    def get_finished_trails(self) -> list[dict[str, Any]]:
        """The trails exported so far, in export order, each a fresh plain dict decoded from what was exported
        (without checkpoint records)."""
        return [record for record in self.get_finished_records() if not is_checkpoint(record)]

    def get_finished_records(self) -> list[dict[str, Any]]:
        """Everything exported so far, trails and checkpoints, in export order, as fresh plain dicts."""
        with self._lock:
            sealed = list(self._trails)
        return [orjson.loads(trail.data) for trail in sealed]

    def get_sealed_trails(self) -> list[SealedTrail]:
        """The sealed trails exported so far, as the exporters received them."""
        with self._lock:
            return list(self._trails)

    def clear(self) -> None:
        """Forget the trails exported so far."""
        with self._lock:
            self._trails.clear()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered."""
        return True

    def shutdown(self) -> None:
        """Nothing to release."""


class OTelLogTrailExporter:
    """Emits one OpenTelemetry LogRecord per trail through a LoggerProvider (the global one by default).

    The record's event name is ``gotrails.trail``, its body the trail (a fresh plain dict), its timestamp the request
    start and its trace and span ids those of the request's root span, so whatever logs exporter is configured
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

    def export(self, trail: SealedTrail) -> None:
        body: dict[str, Any] = orjson.loads(trail.data)
        if is_checkpoint(body):
            self._get_logger().emit(
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=body,
                event_name=CHECKPOINT,
                attributes={"gotrails.chain": str(body.get("chain")), "gotrails.seq": int(body.get("seq") or 0)},
            )
            return
        otel = body.get("otel")
        context = None
        if isinstance(otel, dict):
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
        status = body.get("status")
        self._get_logger().emit(
            timestamp=_timestamp_ns(body.get("timestamp")),
            context=context,
            severity_number=SeverityNumber.ERROR if status == "error" else SeverityNumber.INFO,
            severity_text="ERROR" if status == "error" else "INFO",
            body=body,
            event_name=EVENT_NAME,
            attributes={
                "gotrails.trace_id": str(body.get("trace_id")),
                "gotrails.request_id": str(body.get("request_id")),
                "gotrails.status": str(status),
            },
        )

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the LoggerProvider when it supports it (its batch processor holds the records)."""
        provider = self._provider if self._provider is not None else get_logger_provider()
        flush = getattr(provider, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True

    def shutdown(self) -> None:
        """Nothing to release: the LoggerProvider belongs to the application."""


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
    """Sends each trail to several exporters; one failing does not stop the others, and every failure is reported.

    It takes batches (``export_batch``) when every one of its exporters does, and hands each the whole batch.
    """

    def __init__(self, exporters: Sequence[TrailExporter]) -> None:
        self.exporters = tuple(exporters)

    @property
    def export_batch(self) -> BatchExport | None:
        """The batch export, when every exporter has one (else trails come one by one, each with its deadline)."""
        if all(batch_method(exporter) is not None for exporter in self.exporters):
            return self._export_batch
        return None

    def _export_batch(self, trails: Sequence[SealedTrail]) -> None:
        failures: list[Failure] = []
        for exporter in self.exporters:
            failures.extend(export_each(exporter, trails))
        if failures:
            raise _BatchExportError(failures)

    def export(self, trail: SealedTrail) -> None:
        failures: list[tuple[TrailExporter, BaseException]] = []
        for exporter in self.exporters:
            try:
                exporter.export(trail)
            except Exception as exc:  # reported below, with every other failure
                failures.append((exporter, exc))
        if failures:
            raise ExportError(failures)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        ok = True
        for exporter in self.exporters:
            flush = getattr(exporter, "force_flush", None)
            if callable(flush):
                ok = bool(flush(timeout_millis)) and ok
        return ok

    def shutdown(self) -> None:
        failures: list[tuple[TrailExporter, BaseException]] = []
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception as exc:  # every exporter gets its shutdown
                failures.append((exporter, exc))
        if failures:
            raise ExportError(failures)


class _AutoExporter:
    """The default: OTel logs when an SDK LoggerProvider is configured at the first trail, else stdout.

    The choice is made at the first export (the LoggerProvider is often set up after the processor) and
    announced once on the ``gotrails_otel`` logger when it falls back to stdout, so a trail never vanishes
    into a no-op provider.
    """

    def __init__(self) -> None:
        self._chosen: TrailExporter | None = None

    def _choose(self) -> TrailExporter:
        # Only ever called on the export thread: no lock needed.
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

    def export(self, trail: SealedTrail) -> None:
        self._choose().export(trail)

    @property
    def export_batch(self) -> BatchExport | None:
        """The chosen exporter's batch export, if it has one (looked up on the export thread, which chooses)."""
        return batch_method(self._choose())

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
            built.append(FileTrailExporter(config.file_path, config.file_max_bytes, config.file_backups))
    return built[0] if len(built) == 1 else _MultiExporter(built)
