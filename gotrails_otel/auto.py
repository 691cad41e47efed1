"""Setting gotrails up: one call in an existing OpenTelemetry setup, or none under ``opentelemetry-instrument``."""

from __future__ import annotations

import logging
import os
import threading

from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from ._safelog import log_failure
from .config import ConfigError, TrailConfig
from .hooks import instrument_libraries, uninstrument_libraries
from .processor import TrailProcessor
from .propagation import GotrailsPropagator

__all__ = ["instrument", "post_instrument", "pre_instrument", "providers", "uninstrument"]

_log = logging.getLogger("gotrails_otel")
_lock = threading.Lock()
_processors: dict[int, tuple[SdkTracerProvider, TrailProcessor]] = {}  # id(tracer provider) -> it, its processor
_previous_propagator: TextMapPropagator | None = None


def instrument(
    tracer_provider: trace.TracerProvider | None = None, config: TrailConfig | None = None
) -> TrailProcessor | None:
    """Add gotrails to an OpenTelemetry setup: a :class:`TrailProcessor` on the tracer provider (the global one by
    default), the ``X-Trace-ID`` propagator, and capture hooks for every supported library that is installed.

    Call it after the SDK ``TracerProvider`` is set up and before the application creates its FastAPI/Flask app
    and clients. Calling it again is harmless (it returns the processor already added); :func:`uninstrument` undoes
    it. Returns ``None`` when gotrails is disabled (``GOTRAILS_ENABLED=false``). Raises :class:`ConfigError` for an
    invalid ``GOTRAILS_*`` setting and ``TypeError`` when the provider is not the SDK's.
    """
    config = config if config is not None else TrailConfig.from_env()
    if not config.enabled:
        return None
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if not isinstance(provider, SdkTracerProvider):
        raise TypeError(
            "gotrails needs an OpenTelemetry SDK TracerProvider (opentelemetry.sdk.trace.TracerProvider); "
            f"got {type(provider).__name__}. Set one up with trace.set_tracer_provider() first."
        )
    with _lock:
        entry = _processors.get(id(provider))
        if entry is None:
            processor = TrailProcessor(config=config)
            provider.add_span_processor(processor)
            _processors[id(provider)] = (provider, processor)
        else:
            processor = entry[1]
        _install_propagator()
    instrument_libraries(tracer_provider if tracer_provider is not None else None)
    return processor


def uninstrument() -> None:
    """Undo :func:`instrument`: remove the hooks and the propagator, flush and stop the processors."""
    global _previous_propagator
    uninstrument_libraries()
    with _lock:
        processors = [processor for _, processor in _processors.values()]
        _processors.clear()
        if _previous_propagator is not None:
            propagate.set_global_textmap(_previous_propagator)
            _previous_propagator = None
    for processor in processors:
        processor.shutdown()  # flushes what is buffered; the provider then skips it (no API removes a processor)


def providers() -> list[SdkTracerProvider]:
    """The tracer providers :func:`instrument` added a processor to."""
    with _lock:
        return [provider for provider, _ in _processors.values()]


def _install_propagator() -> None:
    global _previous_propagator
    current = propagate.get_global_textmap()
    if _uses_gotrails(current):
        return
    _previous_propagator = current
    propagate.set_global_textmap(CompositePropagator([current, GotrailsPropagator()]))


def _uses_gotrails(propagator: TextMapPropagator) -> bool:
    if isinstance(propagator, GotrailsPropagator):
        return True
    inner = getattr(propagator, "_propagators", None) or ()
    return any(_uses_gotrails(p) for p in inner)


def pre_instrument() -> None:
    """The ``opentelemetry_pre_instrument`` entry point: runs under ``opentelemetry-instrument`` after the SDK is
    configured and before the instrumentors, with no code change and no ``OTEL_PYTHON_DISTRO`` setting.

    Never raises: a misconfiguration is reported once, clearly, and the application starts without trails.
    """
    try:
        if os.environ.get("GOTRAILS_ENABLED", "").strip().lower() in ("0", "false", "no", "off"):
            return
        config = TrailConfig.from_env()
        if not isinstance(trace.get_tracer_provider(), SdkTracerProvider):
            _configure_sdk()
        instrument(config=config)
        _quiet.install()
    except ConfigError as exc:
        _log.error("%s; the application runs without gotrails trails", exc)
    except Exception as exc:  # auto-instrumentation must never stop the application from starting
        log_failure(_log, "gotrails: setting up trails failed; the application runs without them", exc)


def post_instrument() -> None:
    """The ``opentelemetry_post_instrument`` entry point: ends the quiet period of :func:`pre_instrument`."""
    _quiet.remove()


class _AlreadyInstrumented(logging.Filter):
    """While ``opentelemetry-instrument`` walks its instrumentors after :func:`pre_instrument`, drop its notices
    about libraries gotrails has just instrumented with hooks (they say nothing the user must act on)."""

    _LOGGERS = (
        "opentelemetry.instrumentation.instrumentor",
        "opentelemetry.instrumentation.auto_instrumentation._load",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "Attempting to instrument while already instrumented":
            return False
        # SQLAlchemy 2.1 is outside the instrumentation's declared range, but gotrails instrumented it (see hooks).
        return not ("falls outside of that range" in message and "sqlalchemy" in message and _sqlalchemy_done())

    def install(self) -> None:
        for name in self._LOGGERS:
            logging.getLogger(name).addFilter(self)

    def remove(self) -> None:
        for name in self._LOGGERS:
            logging.getLogger(name).removeFilter(self)


def _sqlalchemy_done() -> bool:
    from .hooks import _done

    return "sqlalchemy" in _done


_quiet = _AlreadyInstrumented()


def _configure_sdk() -> None:
    """No configurator set up the SDK (no distro installed): do what the SDK's own configurator does."""
    from opentelemetry.sdk._configuration import _OTelSDKConfigurator

    _OTelSDKConfigurator().configure()  # type: ignore[no-untyped-call]
    _log.info("gotrails: configured the OpenTelemetry SDK from OTEL_* variables (no distro configured it)")
