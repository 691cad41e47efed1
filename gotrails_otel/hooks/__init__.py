"""Capture hooks, one module per instrumented library.

Each module offers ``instrumentor_kwargs()`` — the hook arguments to pass to that library's contrib instrumentor
(``HTTPXClientInstrumentor().instrument(**gotrails_otel.hooks.httpx.instrumentor_kwargs())``) — and, where a hook
alone cannot see a payload, ``install()``/``uninstall()`` for a small wrapper (an httpx ``send`` wrapper for response
bodies, SQLAlchemy engine listeners for arguments and row counts, a gRPC server interceptor, …). Hooks write into
the capture store of the trail that owns the span; they never raise into the application. A module may offer
``applies()``: when it returns ``False`` the library is left alone in this process (Django without settings).

:func:`instrument_libraries` does all of it for every supported library that is installed.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LIBRARIES", "Library", "instrument_libraries", "uninstrument_libraries"]

_log = logging.getLogger("gotrails_otel")


@dataclass(frozen=True)
class Library:
    """One supported library: its ``opentelemetry_instrumentor`` entry-point name and how gotrails hooks into it."""

    name: str
    instrumentor: str  # "module:Class"
    hooks: str  # gotrails_otel.hooks.<module>
    kwargs: str | None = "instrumentor_kwargs"

    def load_instrumentor(self) -> Any:
        """A new instance of the library's OpenTelemetry instrumentor (raises ``ImportError`` when not installed)."""
        module, _, cls = self.instrumentor.partition(":")
        return getattr(importlib.import_module(module), cls)()

    def hooks_module(self) -> Any:
        """gotrails' capture-hook module for the library (``gotrails_otel.hooks.<hooks>``)."""
        return importlib.import_module(f"gotrails_otel.hooks.{self.hooks}")

    def hook_kwargs(self) -> dict[str, Any]:
        """The keyword arguments to pass to the instrumentor's ``instrument()`` (gotrails' hooks)."""
        if self.kwargs is None:
            return {}
        factory: Callable[[], dict[str, Any]] = getattr(self.hooks_module(), self.kwargs)
        return factory()


LIBRARIES: tuple[Library, ...] = (
    Library("fastapi", "opentelemetry.instrumentation.fastapi:FastAPIInstrumentor", "asgi"),
    Library("flask", "opentelemetry.instrumentation.flask:FlaskInstrumentor", "wsgi", "flask_kwargs"),
    Library("httpx", "opentelemetry.instrumentation.httpx:HTTPXClientInstrumentor", "httpx"),
    Library("sqlalchemy", "opentelemetry.instrumentation.sqlalchemy:SQLAlchemyInstrumentor", "sqlalchemy"),
    Library("redis", "opentelemetry.instrumentation.redis:RedisInstrumentor", "redis"),
    Library("grpc_client", "opentelemetry.instrumentation.grpc:GrpcInstrumentorClient", "grpc"),
    Library("grpc_server", "opentelemetry.instrumentation.grpc:GrpcInstrumentorServer", "grpc", None),
    Library("grpc_aio_client", "opentelemetry.instrumentation.grpc:GrpcAioInstrumentorClient", "grpc"),
    Library("kafka", "opentelemetry.instrumentation.kafka:KafkaInstrumentor", "kafka"),
    Library("django", "opentelemetry.instrumentation.django:DjangoInstrumentor", "django"),
    Library("requests", "opentelemetry.instrumentation.requests:RequestsInstrumentor", "requests"),
    Library("urllib3", "opentelemetry.instrumentation.urllib3:URLLib3Instrumentor", "urllib3"),
    Library("psycopg", "opentelemetry.instrumentation.psycopg:PsycopgInstrumentor", "dbapi"),
    Library("psycopg2", "opentelemetry.instrumentation.psycopg2:Psycopg2Instrumentor", "dbapi"),
    Library("sqlite3", "opentelemetry.instrumentation.sqlite3:SQLite3Instrumentor", "dbapi"),
    Library("asyncpg", "opentelemetry.instrumentation.asyncpg:AsyncPGInstrumentor", "asyncpg"),
    Library(
        "aiohttp-client", "opentelemetry.instrumentation.aiohttp_client:AioHttpClientInstrumentor", "aiohttp_client"
    ),
    Library(
        "aiohttp-server", "opentelemetry.instrumentation.aiohttp_server:AioHttpServerInstrumentor", "aiohttp_server"
    ),
    Library("celery", "opentelemetry.instrumentation.celery:CeleryInstrumentor", "celery"),
    Library(
        "confluent_kafka", "opentelemetry.instrumentation.confluent_kafka:ConfluentKafkaInstrumentor", "confluent_kafka"
    ),
)
"""The libraries gotrails captures payloads for, in the order they are instrumented."""

_done: dict[str, tuple[Any, bool]] = {}  # name -> (instrumentor, instrumented by gotrails)
_reported: set[str] = set()


def disabled_names() -> set[str]:
    """Names in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``."""
    raw = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _report_once(key: str, message: str, *args: Any) -> None:
    if key not in _reported:
        _reported.add(key)
        _log.warning(message, *args)


def instrument_libraries(tracer_provider: Any = None) -> list[str]:
    """Instrument every installed supported library with gotrails' hooks; return the names instrumented now.

    A library that is not installed is skipped quietly; one named in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` is
    skipped; one already instrumented without gotrails' hooks is reported once (its payloads stay uncaptured).
    Calling it again is harmless.
    """
    disabled = disabled_names()
    instrumented = []
    for library in LIBRARIES:
        if library.name in _done or library.name in disabled:
            continue
        try:
            instrumentor = library.load_instrumentor()
        except ImportError:
            continue  # the instrumentation (or its library) is not installed
        hooks = library.hooks_module()
        applies = getattr(hooks, "applies", None)
        if applies is not None and not applies():
            continue  # e.g. Django installed in a process that runs no Django project
        if library.name == "sqlalchemy" and (problem := hooks.support_problem()) is not None:
            if problem != "SQLAlchemy is not installed":
                _report_once("sqlalchemy", "gotrails: %s", problem)
            continue
        ours = not instrumentor.is_instrumented_by_opentelemetry
        if not ours:
            _report_once(
                library.name,
                "gotrails: %s was instrumented before gotrails; its payloads are not captured. Call "
                "gotrails_otel.instrument() first, or pass gotrails_otel.hooks.%s.%s() to the instrumentor.",
                library.name,
                library.hooks,
                library.kwargs or "install",
            )
        else:
            kwargs = library.hook_kwargs()
            if tracer_provider is not None:
                kwargs["tracer_provider"] = tracer_provider
            try:
                instrumentor.instrument(**kwargs)
            except Exception as exc:  # a broken instrumentation must not stop the application or the others
                _report_once(library.name, "gotrails: instrumenting %s failed: %s", library.name, exc)
                continue
            if not instrumentor.is_instrumented_by_opentelemetry:
                continue  # the instrumentor refused (dependency conflict), and said why
        hooks.install()  # after the instrumentor: some wrappers must be the outer ones
        _done[library.name] = (instrumentor, ours)
        instrumented.append(library.name)
    return instrumented


def uninstrument_libraries() -> None:
    """Undo :func:`instrument_libraries`."""
    for library in reversed(LIBRARIES):
        entry = _done.pop(library.name, None)
        if entry is None:
            continue
        instrumentor, ours = entry
        if not any(other.hooks == library.hooks for other in LIBRARIES if other.name in _done):
            library.hooks_module().uninstall()
        if ours and instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
