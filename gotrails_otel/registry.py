"""The live trail processors, and the one owner lookup the API, the hooks and the capture helpers use.

Also what concerns every live processor at once: renewing their state in a forked child, and flushing them when the
process is terminated by ``SIGTERM`` (servers such as uvicorn re-raise it after their graceful shutdown, which ends
the process without running ``atexit`` handlers — so without this, the trails still on their way would be lost).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from ._safelog import log_failure
from .store import Target

if TYPE_CHECKING:
    from .processor import TrailProcessor

__all__ = ["current_target", "flush_all", "live", "register", "target_for", "unregister"]

_log = logging.getLogger("gotrails_otel")
_lock = threading.Lock()
_refs: tuple[weakref.ref[TrailProcessor], ...] = ()


def register(processor: TrailProcessor) -> None:
    global _refs
    with _lock:
        _refs = (*(r for r in _refs if r() is not None), weakref.ref(processor))


def unregister(processor: TrailProcessor) -> None:
    global _refs
    with _lock:
        _refs = tuple(r for r in _refs if r() is not None and r() is not processor)


def live() -> list[TrailProcessor]:
    """The live trail processors (usually one)."""
    return [p for p in (r() for r in _refs) if p is not None]


def target_for(span: Any) -> Target | None:
    """The capture target for ``span`` when it belongs to a trail, else ``None``. Writes to a trail that was flushed
    already are refused and counted as late payloads."""
    if span is None:
        return None
    span_id = span.get_span_context().span_id  # an invalid span's id (0) is in no trail
    for ref in _refs:
        processor = ref()
        if processor is not None and processor.captures.knows(span_id):
            return Target(processor.captures, span_id)
    return None


def current_target() -> Target | None:
    """The capture target of the current span."""
    return target_for(trace.get_current_span())


def flush_all() -> bool:
    """Export what every live processor has ready (``force_flush``, each bounded by its ``shutdown_timeout_ms``);
    ``True`` when all of it was exported in time. Never raises: a failure is logged and the others are flushed."""
    done = True
    for processor in live():
        try:
            done = processor.force_flush(int(processor.config.shutdown_timeout_ms)) and done
        except Exception as exc:  # the application is shutting down: flush the others all the same
            log_failure(_log, "gotrails: flushing a trail processor failed", exc)
            done = False
    return done


# ---------------------------------------------------------------------------------------------------- fork


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for processor in live():
        processor._after_fork()


if hasattr(os, "register_at_fork"):  # absent on Windows (no fork there), as the OpenTelemetry SDK checks too
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------------------------------------- SIGTERM

_sigterm_installed = False


def install_sigterm_flush() -> bool:
    """Flush every live processor when ``SIGTERM`` would end the process with its default action.

    Installed only from the main thread and only while ``SIGTERM`` has its default disposition, so an application's
    own handler always wins (servers that install one for their run and restore ours afterwards — uvicorn — get it
    back for the signal they re-raise). On ``SIGTERM`` every live processor is shut down (bounded by its
    ``shutdown_timeout_ms``), then the default action is restored and the signal raised again: the process ends as it
    would have, with its trails written.
    """
    global _sigterm_installed
    if _sigterm_installed or os.name != "posix" or threading.current_thread() is not threading.main_thread():
        return _sigterm_installed
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not allowed here (an embedded interpreter)
        return False
    _sigterm_installed = True
    return True


def _on_sigterm(signum: int, frame: Any) -> None:
    # The main thread may be anywhere, even inside a processor's lock: flush on another thread, wait a bounded time.
    processors = live()
    timeout = max((p.config.shutdown_timeout_ms for p in processors), default=0) / 1000.0
    flusher = threading.Thread(target=_shutdown_all, args=(processors,), name="gotrails-sigterm", daemon=True)
    flusher.start()
    flusher.join(timeout + 1.0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _shutdown_all(processors: list[TrailProcessor]) -> None:
    for processor in processors:
        try:
            processor.shutdown()
        except Exception as exc:  # the process is ending: flush the others all the same
            log_failure(_log, "gotrails: shutting down a trail processor on SIGTERM failed", exc)
