"""Outgoing HTTP with aiohttp's ``ClientSession``: method, URL, headers, bodies, status.

The contrib instrumentation adds a ``TraceConfig`` to every session that opens the CLIENT span when the request
starts and ends it when the response headers arrive — before the application reads the body. gotrails passes its
own ``TraceConfig`` through the instrumentation's ``trace_configs`` argument; aiohttp's tracing signals then give:

* ``on_request_chunk_sent``: the request body as aiohttp writes it (inside the span);
* ``on_request_end`` / ``on_request_exception``: method, URL, the headers as sent, status and response headers
  (gotrails' config runs before the instrumentation's, so the span is still open);
* ``on_response_chunk_received``: the response body when the application reads it with ``read()``, ``text()`` or
  ``json()``. The trail waits for it (within the grace period); a body that the application streams through
  ``response.content`` is marked ``{"$streamed": true}`` when the response is released, never read by gotrails.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from ..capture import BodyCapture, Target, current_target, guard, header_value, headers_dict
from . import _wrap
from .httpx import safe_url

__all__ = ["install", "instrumentor_kwargs", "trace_config", "uninstall"]

_STATE = "_gotrails_capture"


def instrumentor_kwargs() -> dict[str, Any]:
    """Arguments for ``AioHttpClientInstrumentor().instrument(...)``: gotrails' ``TraceConfig``."""
    return {"trace_configs": [trace_config()]}


def install() -> bool:
    """Mark streamed bodies when a response is released; ``False`` when aiohttp is not installed."""
    ok = _wrap.wrap("aiohttp", "ClientResponse.release", _released)
    _wrap.wrap("aiohttp", "ClientResponse.close", _released)
    return ok


def uninstall() -> None:
    """Remove the wrappers."""
    _wrap.unwrap("aiohttp", "ClientResponse.release")
    _wrap.unwrap("aiohttp", "ClientResponse.close")


class _Call:
    """What gotrails keeps of one request while it runs (in its trace-config context)."""

    __slots__ = ("release", "request_body", "response_body", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.request_body: BodyCapture | None = None
        self.response_body: BodyCapture | None = None
        self.release: Callable[[], None] | None = None

    def done(self) -> None:
        release, self.release = self.release, None
        if release is not None:
            release()


_configs: list[Any] = []


def trace_config() -> Any:
    """gotrails' ``aiohttp.TraceConfig`` (one per process; add it to sessions the instrumentation does not see)."""
    if _configs:
        return _configs[0]
    import aiohttp

    config = aiohttp.TraceConfig()
    config.on_request_chunk_sent.append(_on_chunk_sent)
    config.on_request_end.append(_on_request_end)
    config.on_request_exception.append(_on_request_exception)
    config.on_response_chunk_received.append(_on_chunk_received)
    _configs.append(config)
    return config


def _call(ctx: types.SimpleNamespace) -> _Call | None:
    call: _Call | None = getattr(ctx, "gotrails", None)
    if call is None:
        target = current_target()  # the instrumentation's CLIENT span, current while the request runs
        if target is None:
            return None
        call = _Call(target)
        ctx.gotrails = call
    return call


def _request(call: _Call, params: Any) -> None:
    headers = headers_dict(params.headers.items())
    request: dict[str, Any] = {"method": params.method, "url": safe_url(params.url), "headers": headers}
    request["body"] = call.request_body or BodyCapture(call.target.config.max_body_bytes)
    call.target.update("request", request)


async def _on_chunk_sent(session: Any, ctx: types.SimpleNamespace, params: Any) -> None:
    _chunk_sent(ctx, params)


@guard
def _chunk_sent(ctx: types.SimpleNamespace, params: Any) -> None:
    call = _call(ctx)
    if call is None:
        return
    if call.request_body is None:
        call.request_body = BodyCapture(call.target.config.max_body_bytes)
    call.request_body.add(params.chunk)


async def _on_request_end(session: Any, ctx: types.SimpleNamespace, params: Any) -> None:
    _request_end(ctx, params)


@guard
def _request_end(ctx: types.SimpleNamespace, params: Any) -> None:
    call = _call(ctx)
    if call is None:
        return
    if call.request_body is not None:
        call.request_body.content_type = params.headers.get("content-type")
    _request(call, params)
    response = params.response
    headers = headers_dict(response.headers.items())
    call.response_body = BodyCapture(call.target.config.max_body_bytes, header_value(headers, "content-type"))
    call.target.update("response", {"status": int(response.status), "headers": headers, "body": call.response_body})
    call.release = call.target.hold()  # the body arrives when the application reads it
    setattr(response, _STATE, call)


async def _on_request_exception(session: Any, ctx: types.SimpleNamespace, params: Any) -> None:
    _request_exception(ctx, params)


@guard
def _request_exception(ctx: types.SimpleNamespace, params: Any) -> None:
    call = _call(ctx)
    if call is not None:
        _request(call, params)


async def _on_chunk_received(session: Any, ctx: types.SimpleNamespace, params: Any) -> None:
    _chunk_received(ctx, params)


@guard
def _chunk_received(ctx: types.SimpleNamespace, params: Any) -> None:
    call: _Call | None = getattr(ctx, "gotrails", None)
    if call is None or call.response_body is None:
        return
    call.response_body.add(params.chunk)  # ``read()`` reports the whole body at once
    call.done()


def _released(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        _finish(instance)


@guard
def _finish(response: Any) -> None:
    call: _Call | None = getattr(response, _STATE, None)
    if call is None:
        return
    setattr(response, _STATE, None)
    if call.release is not None and call.response_body is not None and not call.response_body.total:
        call.response_body.streamed = True  # released without ``read()``: streamed by the application, or unread
    call.done()
