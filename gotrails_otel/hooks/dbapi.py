"""Database calls through DB-API drivers used directly: psycopg (3, sync and async), psycopg2, sqlite3 — and the
ORMs that sit on them without SQLAlchemy (Django's ORM on PostgreSQL and SQLite).

The contrib instrumentations of these drivers share ``opentelemetry.instrumentation.dbapi``: every ``execute``,
``executemany`` and ``callproc`` goes through ``CursorTracer.traced_execution`` (``traced_execution_async`` for
psycopg's async cursors), which opens the statement's CLIENT span and calls the driver inside it. :func:`install`
wraps those two methods and hands them a driver call that records, inside the span, the statement's arguments,
``cursor.rowcount`` and any error. No span is made by gotrails, and nothing changes when the instrumentation is
suppressed.

When SQLAlchemy runs on the same driver, both instrumentations make a span for one statement; the trail keeps the
SQLAlchemy one (the driver's span is its child and is left out at fold).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .._safelog import log_failure
from ..capture import Target, current_target, guard
from . import _wrap
from .sqlalchemy import _request

__all__ = ["install", "instrumentor_kwargs", "uninstall"]

_log = logging.getLogger("gotrails_otel")

_MODULE = "opentelemetry.instrumentation.dbapi"
_SYNC = "CursorTracer.traced_execution"
_ASYNC = "CursorTracer.traced_execution_async"
_PROXY = "get_traced_connection_proxy"


def instrumentor_kwargs() -> dict[str, Any]:
    """Arguments for the driver instrumentors (``PsycopgInstrumentor``, ``Psycopg2Instrumentor``,
    ``SQLite3Instrumentor``): none are needed."""
    return {}


def install() -> bool:
    """Wrap the shared DB-API cursor tracer; ``False`` when ``opentelemetry-instrumentation-dbapi`` is absent."""
    ok = _wrap.wrap(_MODULE, _SYNC, _traced_execution)
    _wrap.wrap(_MODULE, _ASYNC, _traced_execution_async)
    _wrap.wrap(_MODULE, _PROXY, _traced_connection_proxy)
    return ok


def uninstall() -> None:
    """Remove the wrappers."""
    _wrap.unwrap(_MODULE, _SYNC)
    _wrap.unwrap(_MODULE, _ASYNC)
    _wrap.unwrap(_MODULE, _PROXY)


# sqlite3's connections have shortcuts — ``execute``, ``executemany`` — that make a cursor inside the C module, out
# of the instrumentation's reach (opentelemetry-python-contrib#3082): ``conn.execute(...)``, the most common way to
# use sqlite3, made no span and so no integration. The traced connection proxy of a sqlite3 connection gets the two
# shortcuts, each through the proxy's own traced ``cursor()``, returning that cursor as sqlite3 does.
_shortcut_classes: dict[type, type] = {}


def _traced_connection_proxy(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    proxy = wrapped(*args, **kwargs)
    connection = args[0] if args else kwargs.get("connection")
    if not isinstance(connection, sqlite3.Connection):
        return proxy
    base = type(proxy)
    cls = _shortcut_classes.get(base)
    if cls is None:
        cls = _shortcut_classes[base] = type(
            "TracedSQLiteConnectionProxy", (base,), {"execute": _execute, "executemany": _executemany}
        )
    try:
        return cls(*args, **kwargs)
    except Exception as exc:  # an instrumentation version whose proxy is built differently: keep its own proxy
        log_failure(_log, "gotrails: the sqlite3 shortcuts could not be added (conn.execute makes no span)", exc)
        return proxy


def _execute(self: Any, *args: Any, **kwargs: Any) -> Any:
    cursor = self.cursor()
    cursor.execute(*args, **kwargs)
    return cursor


def _executemany(self: Any, *args: Any, **kwargs: Any) -> Any:
    cursor = self.cursor()
    cursor.executemany(*args, **kwargs)
    return cursor


def _traced_execution(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) < 2:
        return wrapped(*args, **kwargs)
    cursor, query_method, *rest = args
    return wrapped(cursor, _capturing(cursor, query_method), *rest, **kwargs)


def _traced_execution_async(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if len(args) < 2:
        return wrapped(*args, **kwargs)
    cursor, query_method, *rest = args
    return wrapped(cursor, _capturing_async(cursor, query_method), *rest, **kwargs)


def _capturing(cursor: Any, query_method: Callable[..., Any]) -> Callable[..., Any]:
    many = getattr(query_method, "__name__", "") == "executemany"

    def call(*args: Any, **kwargs: Any) -> Any:
        target = current_target()  # the statement's span, opened by the instrumentation
        if target is None:
            return query_method(*args, **kwargs)
        try:
            result = query_method(*args, **kwargs)
        except Exception as exc:
            _failed(target, args, kwargs, many, exc)
            raise
        _done(target, cursor, args, kwargs, many)
        return result

    return call


def _capturing_async(cursor: Any, query_method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    many = getattr(query_method, "__name__", "") == "executemany"

    async def call(*args: Any, **kwargs: Any) -> Any:
        target = current_target()
        if target is None:
            return await query_method(*args, **kwargs)
        try:
            result = await query_method(*args, **kwargs)
        except Exception as exc:
            _failed(target, args, kwargs, many, exc)
            raise
        _done(target, cursor, args, kwargs, many)
        return result

    return call


def parameters(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The parameters of ``execute(statement, params)`` / ``executemany(statement, seq)`` / ``callproc(name,
    args)``, however they were passed."""
    if len(args) > 1:
        return args[1]
    for key in ("params", "parameters", "vars", "vars_list", "params_seq", "seq_of_parameters", "args"):
        if key in kwargs:
            return kwargs[key]
    return None


@guard
def _done(target: Target, cursor: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], many: bool) -> None:
    rowcount = getattr(cursor, "rowcount", -1)
    target.update("request", _request(parameters(args, kwargs), many))
    target.update("response", {"rows_affected": rowcount if isinstance(rowcount, int) and rowcount >= 0 else None})


@guard
def _failed(target: Target, args: tuple[Any, ...], kwargs: Mapping[str, Any], many: bool, error: Exception) -> None:
    target.update("request", _request(parameters(args, kwargs), many))
    target.put("error", {"message": str(error).strip() or type(error).__name__, "type": type(error).__qualname__})
