"""Database calls with asyncpg: statement arguments, rows, errors.

The contrib asyncpg instrumentation wraps ``Connection.execute``, ``executemany``, ``fetch``, ``fetchval`` and
``fetchrow`` and records the statement (its ``capture_parameters`` option would put the arguments, as one string,
into a span attribute that also goes to the tracing backend). :func:`install` places a second wrapper *inside* the
instrumentation's, around the driver method itself, so it runs while the statement's span is current and records
the arguments, the row count (from the command status of ``execute``, or the rows fetched) and any error into the
trail only.

Call :func:`install` after ``AsyncPGInstrumentor().instrument()`` (``gotrails_otel.instrument()`` and the
auto-instrumentation do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..capture import Target, current_target, guard
from . import _wrap
from .sqlalchemy import _args

__all__ = ["install", "instrumentor_kwargs", "uninstall"]

_MODULE = "asyncpg.connection"
_METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow")


def instrumentor_kwargs() -> dict[str, Any]:
    """Arguments for ``AsyncPGInstrumentor().instrument(...)``: none are needed."""
    return {}


def install() -> bool:
    """Wrap the driver methods inside the instrumentation's wrappers; ``False`` when they are not instrumented."""
    results = [_wrap.wrap_inner(_MODULE, f"Connection.{method}", _wrapper(method)) for method in _METHODS]
    return all(results)


def uninstall() -> None:
    """Remove the inner wrappers."""
    for method in _METHODS:
        _wrap.unwrap(_MODULE, f"Connection.{method}")


def _wrapper(method: str) -> Callable[..., Any]:
    async def call(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = current_target()  # the statement's span, opened by the instrumentation
        if target is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            _failed(target, method, args, kwargs, exc)
            raise
        _done(target, method, args, kwargs, result)
        return result

    return call


def _arguments(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if method == "executemany":
        rows = args[1] if len(args) > 1 else kwargs.get("args")
        return _args(rows, True) if isinstance(rows, (list, tuple)) else None  # an iterator is the driver's
    return list(args[1:]) if len(args) > 1 else None


def _request(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments; ``executemany`` marked, so that masking reads a list of lists as rows."""
    request: dict[str, Any] = {"args": _arguments(method, args, kwargs)}
    if method == "executemany":
        request["executemany"] = True
    return request


def _rows(method: str, result: Any) -> int | None:
    if method == "execute" and isinstance(result, str):
        last = result.rsplit(" ", 1)[-1]  # command status: "INSERT 0 1", "UPDATE 2", "SELECT 3"
        return int(last) if last.isdigit() else None
    if method == "fetch" and isinstance(result, list):
        return len(result)
    if method in ("fetchrow", "fetchval"):
        return 0 if result is None else 1
    return None


@guard
def _done(target: Target, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
    target.update("request", _request(method, args, kwargs))
    target.update("response", {"rows_affected": _rows(method, result)})


@guard
def _failed(target: Target, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], error: Exception) -> None:
    target.update("request", _request(method, args, kwargs))
    target.put("error", {"message": str(error).strip() or type(error).__name__, "type": type(error).__qualname__})
