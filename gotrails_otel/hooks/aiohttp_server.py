"""Incoming HTTP for ``aiohttp.web`` applications: method, path, route, query, headers, request body; status,
headers, response body.

The contrib instrumentation replaces ``aiohttp.web.Application`` by a subclass that puts its tracing middleware
first. :func:`install` wraps ``Application.__init__`` so that gotrails' middleware comes right after it, inside the
SERVER span. The middleware never reads the request body itself (a handler may stream ``request.content``): after
the handler returned it records the body the handler read (``read()``, ``text()``, ``json()``, ``post()``). A
``web.Response`` body is recorded; a ``StreamResponse`` (a prepared, streamed or file response) is marked
``{"$streamed": true}``. ``web.HTTPException`` responses are recorded with their status and text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..capture import BodyCapture, Target, current_target, guard, header_value, headers_dict
from . import _wrap

__all__ = ["install", "instrumentor_kwargs", "middleware", "uninstall"]

_OTEL_MODULE = "opentelemetry.instrumentation.aiohttp_server"


def instrumentor_kwargs() -> dict[str, Any]:
    """Arguments for ``AioHttpServerInstrumentor().instrument(...)``: none are needed."""
    return {}


def install() -> bool:
    """Add gotrails' middleware after the instrumentation's in every new application."""
    return _wrap.wrap("aiohttp.web_app", "Application.__init__", _init)


def uninstall() -> None:
    """Stop adding the middleware (applications already built keep it)."""
    _wrap.unwrap("aiohttp.web_app", "Application.__init__")


def _is_otel(item: Any) -> bool:
    return getattr(item, "__module__", "") == _OTEL_MODULE


def _init(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    middlewares = kwargs.get("middlewares")
    if middlewares is not None:
        items = list(middlewares)
        positions = [n for n, item in enumerate(items) if _is_otel(item)]
        if positions and middleware not in items:
            items.insert(positions[0] + 1, middleware)
            kwargs["middlewares"] = items
    return wrapped(*args, **kwargs)


@web.middleware
async def middleware(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
    """gotrails' aiohttp middleware (added by :func:`install`; add it yourself after the OpenTelemetry one
    when you build the middleware list by hand)."""
    target = _request(request)
    if target is None:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _response(target, request, exc)
        raise
    except BaseException:
        _request_body(target, request)
        raise
    _response(target, request, response)
    return response


@guard
def _request(request: Any) -> Target | None:
    target = current_target()  # the instrumentation's SERVER span
    if target is None:
        return None
    info = request.match_info.route.resource
    route = getattr(info, "canonical", None) if info is not None else None
    target.update(
        "request",
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string or None,
            "route": route,
            "headers": headers_dict(request.headers.items()),
        },
    )
    return target


@guard
def _request_body(target: Target, request: Any) -> None:
    limit = target.config.max_body_bytes
    headers = request.headers
    body = BodyCapture(limit, headers.get("content-type"), headers.get("content-encoding"))
    read = getattr(request, "_read_bytes", None)  # cached by read()/text()/json()/post()
    if isinstance(read, bytes):
        body.add(read)
    elif request.body_exists and request.content_length != 0:
        body.streamed = True  # the handler streamed request.content, or never read the body
    target.update("request", {"body": body})


@guard
def _response(target: Target, request: Any, response: Any) -> None:
    _request_body(target, request)
    headers = headers_dict(response.headers.items())
    body = BodyCapture(target.config.max_body_bytes, header_value(headers, "content-type"))
    if isinstance(response, web.Response):
        raw = response.body
        if isinstance(raw, (bytes, bytearray)):
            body.add(raw)
        elif raw is not None:
            body.streamed = True  # a payload object (a file, a stream): sent by aiohttp, not read here
    else:
        body.streamed = True  # a StreamResponse or FileResponse, written by the handler or aiohttp
    target.update("response", {"status": int(response.status), "headers": headers, "body": body})
