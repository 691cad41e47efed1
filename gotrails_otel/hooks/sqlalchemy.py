"""Database calls through SQLAlchemy (sync engines and ``AsyncEngine``): statement arguments, row counts, errors.

The contrib instrumentation records the statement text but never its arguments or row count. :func:`install` adds
class-level ``Engine`` listeners, which SQLAlchemy runs before the instrumentation's per-engine listeners, i.e.
while the statement's CLIENT span is still open: ``after_cursor_execute`` records the arguments and
``cursor.rowcount``, ``handle_error`` the arguments and the exception. ``AsyncEngine`` runs on a sync ``Engine``, so
both are covered.

SQLAlchemy 2.1: the 0.66 contrib instrumentation declares ``sqlalchemy < 2.1`` but works on 2.1 when ``greenlet`` is
installed (it wraps ``create_async_engine``). :func:`instrumentor_kwargs` therefore asks for ``skip_dep_check`` on
2.1 when ``greenlet`` imports, and :func:`support_problem` says, in one sentence, why it cannot be used otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from ..capture import guard, target_for

__all__ = ["MAX_ROWS_OF_ARGS", "install", "instrumentor_kwargs", "support_problem", "uninstall"]

_log = logging.getLogger("gotrails_otel")
MAX_ROWS_OF_ARGS = 50
"""``executemany`` argument sets kept per statement; the rest are counted."""

_installed = False


def _version() -> tuple[int, ...]:
    try:
        raw = metadata.version("sqlalchemy")
    except metadata.PackageNotFoundError:
        return ()
    parts = []
    for piece in raw.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def support_problem() -> str | None:
    """Why the SQLAlchemy instrumentation cannot run here, or ``None`` when it can."""
    version = _version()
    if not version:
        return "SQLAlchemy is not installed"
    if version >= (2, 1) and importlib.util.find_spec("greenlet") is None:
        return (
            "SQLAlchemy 2.1 needs the 'greenlet' package for the OpenTelemetry SQLAlchemy instrumentation "
            "(pip install greenlet, or gotrails-otel[sqlalchemy]); database calls are not traced"
        )
    return None


def instrumentor_kwargs() -> dict[str, Any]:
    """Arguments for ``SQLAlchemyInstrumentor().instrument(...)``: ``skip_dep_check`` on SQLAlchemy 2.1."""
    if _version() >= (2, 1) and support_problem() is None:
        return {"skip_dep_check": True}
    return {}


def install() -> bool:
    """Add the class-level ``Engine`` listeners; ``False`` when SQLAlchemy is not installed."""
    global _installed
    if _installed:
        return True
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        return False
    event.listen(Engine, "after_cursor_execute", _after_cursor_execute)
    event.listen(Engine, "handle_error", _handle_error)
    _installed = True
    return True


def uninstall() -> None:
    """Remove the listeners."""
    global _installed
    if not _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.remove(Engine, "after_cursor_execute", _after_cursor_execute)
    event.remove(Engine, "handle_error", _handle_error)
    _installed = False


def _args(parameters: Any, executemany: bool) -> Any:
    if executemany and isinstance(parameters, Sequence) and not isinstance(parameters, (str, bytes)):
        rows = [_one(row) for row in parameters[:MAX_ROWS_OF_ARGS]]
        if len(parameters) > MAX_ROWS_OF_ARGS:
            rows.append({"$more_rows": len(parameters) - MAX_ROWS_OF_ARGS})
        return rows
    return _one(parameters)


def _request(parameters: Any, executemany: bool) -> dict[str, Any]:
    """The arguments; ``executemany`` marked, so that masking reads a list of lists as rows, not as one row of array
    arguments."""
    request: dict[str, Any] = {"args": _args(parameters, executemany)}
    if executemany:
        request["executemany"] = True
    return request


def _one(parameters: Any) -> Any:
    if parameters is None:
        return None
    if isinstance(parameters, Mapping):
        return dict(parameters)
    if isinstance(parameters, Sequence) and not isinstance(parameters, (str, bytes)):
        return list(parameters)
    return parameters


@guard
def _after_cursor_execute(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    target = target_for(getattr(context, "_otel_span", None))
    if target is None:
        return
    rowcount = getattr(cursor, "rowcount", -1)
    target.update_many(
        {
            "request": _request(parameters, executemany),
            "response": {"rows_affected": rowcount if isinstance(rowcount, int) and rowcount >= 0 else None},
        }
    )


@guard
def _handle_error(exception_context: Any) -> None:
    execution = getattr(exception_context, "execution_context", None)
    target = target_for(getattr(execution, "_otel_span", None))
    if target is None:
        return
    target.update("request", _request(exception_context.parameters, bool(getattr(execution, "executemany", False))))
    error = exception_context.original_exception
    target.put("error", {"message": str(error).strip(), "type": type(error).__qualname__})
