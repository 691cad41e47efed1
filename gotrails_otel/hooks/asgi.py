"""Incoming HTTP for ASGI apps (FastAPI, Starlette, plain ASGI): request and response, bodies included.

:func:`install` wraps the contrib ``OpenTelemetryMiddleware`` (which FastAPI's and Starlette's instrumentors
insert, and which plain ASGI apps are wrapped in) so that each request's ``receive`` and ``send`` are observed
— independently of the instrumentation's own receive/send spans and hooks, so it also works with
``exclude_spans=["receive", "send"]``. Body chunks are copied up to ``max_body_bytes``; streaming responses are
recorded up to the limit and marked beyond it. Nothing is consumed: every message reaches the app and the server
unchanged. The request is over when the app returns, so background tasks that run after the response belong to the
request that queued them (within the age limit); the grace period for stray spans starts then.

The lifespan of the app is observed too: before the app's ``lifespan.shutdown.complete`` (or ``.failed``) reaches the
server, every live trail processor is flushed (:func:`~gotrails_otel.registry.flush_all`). A server that ends the
process right after its lifespan shutdown — uvicorn re-raises ``SIGTERM`` with its default action, which runs no
``atexit`` handler — then still has the trails of every answered request written, also when gotrails was set up
after the server had installed its signal handlers (an app factory, a startup handler), where gotrails' own
``SIGTERM`` handler cannot be installed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from opentelemetry import trace

from ..capture import BodyCapture, Target, guard, header_value, headers_dict, target_for
from ..registry import flush_all

__all__ = ["install", "instrumentor_kwargs", "uninstall"]

_PLUMBING_SUFFIXES = (" http receive", " http send")
_SHUTDOWN_DONE = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})
_NO_CHUNK: Any = object()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def instrumentor_kwargs() -> dict[str, Any]:
    """Hook arguments for ``FastAPIInstrumentor``/``OpenTelemetryMiddleware``: none are needed (see :func:`install`)."""
    return {}


_original: Callable[..., Awaitable[Any]] | None = None


def install() -> bool:
    """Observe every request that passes the OTel ASGI middleware; ``False`` when it is not installed.

    The middleware's ``__call__`` is replaced by a real coroutine function (not a proxy object), so servers that
    detect ASGI 3 apps with ``inspect.iscoroutinefunction`` (uvicorn) still do.
    """
    global _original
    if _original is not None:
        return True
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    except ImportError:
        return False
    original = OpenTelemetryMiddleware.__call__

    @functools.wraps(original)
    async def __call__(self: Any, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope.get("type") if isinstance(scope, MutableMapping) else None
        if kind != "http":
            if kind == "lifespan":
                send = _flush_before_shutdown_complete(send)
            return await original(self, scope, receive, send)
        exchange = _Exchange(scope)
        try:
            return await original(self, scope, exchange.wrap_receive(receive), exchange.wrap_send(send))
        finally:
            exchange.done()

    OpenTelemetryMiddleware.__call__ = __call__  # type: ignore[method-assign]
    _original = original
    return True


def uninstall() -> None:
    """Stop observing ASGI requests."""
    global _original
    if _original is None:
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    OpenTelemetryMiddleware.__call__ = _original  # type: ignore[method-assign,assignment]
    _original = None


def _flush_before_shutdown_complete(send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
    """``send`` of a lifespan scope: the trail processors are flushed before the app reports its shutdown done."""

    async def send_after_flush(message: Message) -> None:
        if isinstance(message, Mapping) and message.get("type") in _SHUTDOWN_DONE:
            # Blocking, bounded by each processor's shutdown timeout: the server serves no request any more, and the
            # flush needs nothing from the event loop (the flush and export threads do the work).
            flush_all()
        await send(message)

    return send_after_flush


def _server_target() -> Target | None:
    """The SERVER span of this request: the current span, or the parent of the receive/send span we are in."""
    span = trace.get_current_span()
    name = getattr(span, "name", "")
    parent = getattr(span, "parent", None)
    if parent is not None and isinstance(name, str) and name.endswith(_PLUMBING_SUFFIXES):
        target = target_for(span)
        if target is None:
            return None
        return Target(target.store, parent.span_id)
    return target_for(span)


def _body(target: Target, headers: Mapping[str, list[str]]) -> BodyCapture:
    """A body of the request or the response whose headers are ``headers``."""
    return BodyCapture(
        target.config.max_body_bytes, header_value(headers, "content-type"), header_value(headers, "content-encoding")
    )


class _Exchange:
    """One HTTP request/response as seen by the ASGI app."""

    __slots__ = ("_release", "_request_body", "_response", "_response_body", "_scope", "_target")

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._target: Target | None = None
        self._release: Callable[[], None] | None = None
        self._request_body: BodyCapture | None = None
        self._response_body: BodyCapture | None = None
        self._response: dict[str, Any] | None = None  # status and headers, written with the first body chunk

    def _ensure_target(self, chunk: Any = _NO_CHUNK) -> Target | None:
        """The request's target; the first time, the request is recorded (with its body when ``chunk``, the
        body's first chunk, is given)."""
        if self._target is None:
            target = _server_target()
            if target is None:
                return None
            self._target = target
            # The SERVER span ends with the last body chunk, but the app may still run background tasks or
            # watch for a disconnect: the request is being processed until the app returns (within the age limit;
            # the grace period for stray spans starts then).
            scope = self._scope
            query = scope.get("query_string") or b""
            headers = headers_dict(scope.get("headers") or ())
            request: dict[str, Any] = {
                "method": scope.get("method"),
                "path": scope.get("path"),
                "query": query.decode("latin-1") if isinstance(query, bytes) and query else None,
                "headers": headers,
            }
            if chunk is not _NO_CHUNK:
                body = self._request_body = _body(target, headers)
                body.add(chunk)  # kept before the write, which charges it: one write for the request
                request["body"] = body
            self._release = target.update_and_hold("request", request, processing=True)
        return self._target

    def done(self) -> None:
        """The app returned: let the trail flush once its spans have ended."""
        self._write_response()
        release, self._release = self._release, None
        if release is not None:
            release()

    def wrap_receive(self, receive: Callable[[], Awaitable[Message]]) -> Callable[[], Awaitable[Message]]:
        async def capture_receive() -> Message:
            message = await receive()
            self._on_receive(message)
            return message

        return capture_receive

    def wrap_send(self, send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        async def capture_send(message: Message) -> None:
            self._on_send(message)
            await send(message)

        return capture_send

    @guard
    def _on_receive(self, message: Message) -> None:
        if message.get("type") != "http.request":
            return
        chunk = message.get("body")
        if self._target is None:
            self._ensure_target(chunk)  # records the request with the body's first chunk
            return
        target = self._target
        if self._request_body is None:  # the request was recorded before its body came (the app answered first)
            headers = headers_dict(self._scope.get("headers") or ())
            self._request_body = _body(target, headers)
            target.update("request", {"body": self._request_body})
        self._request_body.add(chunk)

    @guard
    def _on_send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            target = self._ensure_target()
            if target is None:
                return
            headers = headers_dict(message.get("headers") or ())
            self._response_body = body = _body(target, headers)
            self._write_response()  # a response started before
            self._response = {"status": message.get("status"), "headers": headers, "body": body}
        elif kind == "http.response.body" and self._response_body is not None:
            self._response_body.add(message.get("body"))
            self._write_response()

    @guard
    def _write_response(self) -> None:
        """Record the response once its first body chunk is kept (one write, which charges the chunk too)."""
        response, self._response = self._response, None
        if response is not None and self._target is not None:
            self._target.update("response", response)
