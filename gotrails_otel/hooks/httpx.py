"""Outgoing HTTP with httpx (``Client`` and ``AsyncClient``): method, URL, headers, bodies, status.

The request side comes from the instrumentation's request hook. The response body only exists after the CLIENT
span ended (the client reads it after the transport returns), so :func:`install` wraps ``Client.send`` /
``AsyncClient.send``: the request hook marks the request with its span and holds the trail open, and the ``send``
wrapper adds the body and releases the hold. Streamed uploads and downloads are marked, never consumed.

A logical name for one request: ``client.post(url, extensions={"gotrails.name": "midtrans.charge"})``; by
configuration: ``GOTRAILS_HTTP_NAMES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..capture import BodyCapture, Target, guard, headers_dict, target_for
from ..urls import redact_url
from . import _wrap

__all__ = ["EXTENSION_NAME", "install", "instrumentor_kwargs", "uninstall"]

EXTENSION_NAME = "gotrails.name"
_EXT_TARGET = "gotrails.target"
_EXT_RELEASE = "gotrails.release"


def instrumentor_kwargs() -> dict[str, Any]:
    """Hook arguments for ``HTTPXClientInstrumentor().instrument(...)`` (or ``instrument_client``)."""
    return {
        "request_hook": request_hook,
        "response_hook": response_hook,
        "async_request_hook": async_request_hook,
        "async_response_hook": async_response_hook,
    }


def install() -> bool:
    """Wrap ``Client.send``/``AsyncClient.send`` for response bodies; ``False`` when httpx is not installed."""
    return _wrap.wrap("httpx", "Client.send", _send) and _wrap.wrap("httpx", "AsyncClient.send", _send_async)


def uninstall() -> None:
    """Remove the ``send`` wrappers."""
    _wrap.unwrap("httpx", "Client.send")
    _wrap.unwrap("httpx", "AsyncClient.send")


def safe_url(url: Any) -> str:
    """The URL as text, redacted at least as OpenTelemetry redacts ``url.full``: userinfo and the signature query
    keys (the policy masks sensitive query parameters on top of it)."""
    return redact_url(url)


@guard
def request_hook(span: Any, request: Any) -> None:
    """Record the outgoing request; mark it so the ``send`` wrapper can add the response body later."""
    target = target_for(span)
    if target is None:
        return
    import httpx

    wrapped = _wrap.installed("httpx", "Client.send")
    body = BodyCapture(target.config.max_body_bytes, request.headers.get("content-type"))
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        body.add(b"".join(stream))  # an in-memory body: re-iterable, reading it consumes nothing
    else:
        body.streamed = True
    method = request.method.decode("ascii", "replace") if isinstance(request.method, bytes) else str(request.method)
    captured: dict[str, Any] = {"method": method, "url": safe_url(request.url), "body": body}
    if not wrapped:  # else the send wrapper records the headers as sent
        captured["headers"] = headers_dict(request.headers.raw)
    extensions = request.extensions
    name = extensions.get(EXTENSION_NAME)
    if isinstance(name, str) and name:
        target.put("name", name)
    extensions[_EXT_TARGET] = target
    if wrapped:
        release = target.update_and_hold("request", captured)
        if release is not None:
            extensions.setdefault(_EXT_RELEASE, []).append(release)
    else:
        target.update("request", captured)


@guard
def response_hook(span: Any, request: Any, response: Any) -> None:
    """Record status and headers (the body follows in the ``send`` wrapper)."""
    target = target_for(span)
    if target is None:
        return
    headers = headers_dict(response.headers.raw)
    target.update("response", {"status": int(response.status_code), "headers": headers})


async def async_request_hook(span: Any, request: Any) -> None:
    request_hook(span, request)


async def async_response_hook(span: Any, request: Any, response: Any) -> None:
    response_hook(span, request, response)


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("request")


def _send(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    response = None
    try:
        response = wrapped(*args, **kwargs)
        return response
    finally:
        _after_send(request, response, bool(kwargs.get("stream", False)))


async def _send_async(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    response = None
    try:
        response = await wrapped(*args, **kwargs)
        return response
    finally:
        _after_send(request, response, bool(kwargs.get("stream", False)))


@guard
def _after_send(request: Any, response: Any, streamed: bool) -> None:
    releases: list[Callable[[], None]] = []
    try:
        extensions = getattr(request, "extensions", None)
        if isinstance(extensions, dict):
            releases = extensions.pop(_EXT_RELEASE, [])
        if response is None:  # the send failed: the request's headers as they were prepared
            sent: Target | None = extensions.get(_EXT_TARGET) if isinstance(extensions, dict) else None
            if sent is not None:
                sent.update("request", {"headers": headers_dict(request.headers.raw)})
            return
        for hop in getattr(response, "history", None) or ():  # redirects: each hop's request as it was sent
            sent = (getattr(hop.request, "extensions", None) or {}).get(_EXT_TARGET)
            if sent is not None:
                sent.update("request", {"headers": headers_dict(hop.request.headers.raw)})
        final = getattr(response.request, "extensions", None) or {}
        target: Target | None = final.get(_EXT_TARGET)
        if target is None:
            return
        headers = response.headers
        body = BodyCapture(
            target.config.max_body_bytes, headers.get("content-type"), None
        )  # httpx has decoded Content-Encoding already
        if streamed and not response.is_stream_consumed:
            body.streamed = True
            length = headers.get("content-length")
            body.total = int(length) if length and length.isdigit() else 0
        else:
            body.add(response.content)
        # The headers as sent: the request hook ran before the propagators injected theirs (X-Trace-ID…).
        target.update_many(
            {"request": {"headers": headers_dict(response.request.headers.raw)}, "response": {"body": body}}
        )
    finally:
        for release in releases:
            release()
