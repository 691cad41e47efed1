"""Outgoing HTTP with requests: method, URL, headers, bodies, status — one integration per call.

The contrib requests instrumentation makes one CLIENT span per ``Session.send`` and suppresses the urllib3
instrumentation underneath it, so a call through requests is one integration even when urllib3 is instrumented
too. Its request hook records the request (the body when it is in memory; a generator or file upload is marked
streamed, never read), its response hook the status, the headers as sent (after the propagators) and the response
body, which requests has already read unless the call was made with ``stream=True``.

With ``stream=True`` gotrails never reads the body itself: it tees what the application reads (``iter_content``,
``iter_lines``, ``.content``, ``.text``, ``.json()``), up to ``max_body_bytes``, and the trail marks the body
``{"$streamed": true, "size": …, "read": …}``. The trail waits (within the grace period) until the application has
read the body or closed the response.

Logical names come from ``GOTRAILS_HTTP_NAMES`` (``host/path`` glob patterns), as for httpx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..capture import BodyCapture, Target, guard, header_value, headers_dict, target_for
from .httpx import safe_url

__all__ = ["StreamedBody", "install", "instrumentor_kwargs", "uninstall"]


def instrumentor_kwargs() -> dict[str, Any]:
    """Hook arguments for ``RequestsInstrumentor().instrument(...)``."""
    return {"request_hook": request_hook, "response_hook": response_hook}


def install() -> bool:
    """Nothing to wrap: the hooks see everything (``stream=True`` bodies are teed per response)."""
    return True


def uninstall() -> None:
    """Nothing to remove."""


class StreamedBody(BodyCapture):
    """A streamed body that gotrails did not read: what the application read of it is kept and shown."""

    __slots__ = ()

    def __init__(self, limit: int, content_type: str | None = None, content_encoding: str | None = None) -> None:
        super().__init__(limit, content_type, content_encoding)
        self.streamed = True

    def __gotrails_json__(self) -> Any:
        from ..body import decode_body

        marked: dict[str, Any] = {"$streamed": True, "size": self.total or None}
        data = self.data()
        if data:
            marked["read"] = decode_body(data, self.content_type, self.content_encoding, self.total)
        return marked


def request_body(body: Any, limit: int, content_type: str | None) -> BodyCapture:
    """A request body as sent: bytes or text in memory are kept; a generator or file is marked, never read."""
    capture = BodyCapture(limit, content_type)
    if body is None:
        return capture
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        capture.add(body)
    else:
        capture.streamed = True
    return capture


@guard
def request_hook(span: Any, request: Any) -> None:
    """Record the prepared request (method, URL without passwords, headers, body)."""
    target = target_for(span)
    if target is None:
        return
    headers = headers_dict((request.headers or {}).items())
    body = request_body(request.body, target.config.max_body_bytes, header_value(headers, "content-type"))
    target.update(
        "request", {"method": str(request.method), "url": safe_url(request.url), "headers": headers, "body": body}
    )


@guard
def response_hook(span: Any, request: Any, response: Any) -> None:
    """Record status, headers and body (read by requests already, or teed as the application reads it)."""
    target = target_for(span)
    if target is None:
        return
    # The headers as sent: the request hook ran before the propagators injected theirs.
    target.update("request", {"headers": headers_dict((request.headers or {}).items())})
    headers = response.headers
    limit = target.config.max_body_bytes
    content_type = headers.get("content-type")
    captured: dict[str, Any] = {"status": int(response.status_code), "headers": headers_dict(headers.items())}
    if getattr(response, "_content_consumed", False) and isinstance(getattr(response, "_content", None), bytes):
        body = BodyCapture(limit, content_type)  # requests has decoded Content-Encoding already
        body.add(response.content)
        captured["body"] = body
    else:
        streamed = StreamedBody(limit, content_type)
        captured["body"] = streamed
        _tee(response, streamed, target)
    target.update("response", captured)


def _tee(response: Any, body: StreamedBody, target: Target) -> None:
    """Copy what the application reads of a ``stream=True`` response; hold the trail until it is read or closed."""
    release = target.hold()
    state: dict[str, Callable[[], None] | None] = {"release": release}

    def done() -> None:
        pending, state["release"] = state["release"], None
        if pending is not None:
            pending()

    iter_content = response.iter_content
    close = response.close
    add = guard(body.add)

    def tee_iter_content(chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator[Any]:
        try:
            for chunk in iter_content(chunk_size, decode_unicode):
                add(chunk)
                yield chunk
        finally:
            done()

    def tee_close() -> None:
        try:
            close()
        finally:
            done()

    # Instance attributes shadow the methods: ``.content``, ``.text``, ``.json()`` and ``iter_lines`` go through
    # ``self.iter_content``; ``with response:`` and ``Session`` clean-up call ``self.close``.
    response.iter_content = tee_iter_content
    response.close = tee_close
