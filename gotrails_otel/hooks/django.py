"""Incoming HTTP for Django (WSGI and ASGI): method, path, route, query, headers, request body; status, headers,
response body — through the contrib Django instrumentation's request and response hooks.

Reading the request body must not change the application: gotrails never touches ``request.body``,
``request.POST`` or ``request.FILES`` itself. The request hook tees the request's input stream, so whatever the view
(or Django's form and multipart parsers) reads is copied up to ``max_body_bytes``; ``request.body`` read before
``request.FILES``, ``request.FILES`` read before ``request.body`` (Django's ``RawPostDataException``) and views that
never read the body all behave exactly as without gotrails. A multipart upload is not copied byte by byte: the
trail shows its form fields and, per file, the field, file name, content type and size, as Django parsed them.

Streaming and file responses (``StreamingHttpResponse``, ``FileResponse``) are marked ``{"$streamed": true}`` and
never consumed; other responses are recorded from ``response.content``.

The database calls of Django's ORM come from the DB-API driver instrumentations (psycopg, psycopg2, sqlite3), with
their arguments and row counts (see :mod:`gotrails_otel.hooks.dbapi`).

The contrib instrumentation adds its middleware to ``settings.MIDDLEWARE`` when it is instrumented, so Django's
settings must be importable then: under ``opentelemetry-instrument``, export ``DJANGO_SETTINGS_MODULE`` (and use
``runserver --noreload``). :func:`applies` keeps gotrails from instrumenting Django in a process that has no Django
settings (a FastAPI service that merely has Django installed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ..capture import BodyCapture, guard, header_value, headers_dict, target_for

__all__ = ["applies", "install", "instrumentor_kwargs", "uninstall"]

_MULTIPART = "multipart/form-data"


def instrumentor_kwargs() -> dict[str, Any]:
    """Hook arguments for ``DjangoInstrumentor().instrument(...)``."""
    return {"request_hook": request_hook, "response_hook": response_hook}


def applies() -> bool:
    """Whether this process runs a Django project (``DJANGO_SETTINGS_MODULE`` set, or settings configured)."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return True
    try:
        from django.conf import settings
    except ImportError:
        return False
    return bool(settings.configured)


def install() -> bool:
    """Nothing to wrap: the hooks see every request and response."""
    return True


def uninstall() -> None:
    """Nothing to remove."""


class _TeeStream:
    """The request's input stream, copying what Django reads into a :class:`BodyCapture`."""

    def __init__(self, stream: Any, body: BodyCapture) -> None:
        self._stream = stream
        self._body = body

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._stream.read(*args, **kwargs)
        self._body.add(data)
        return data

    def readline(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._stream.readline(*args, **kwargs)
        self._body.add(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._body.add(line)
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _headers(meta: dict[str, Any]) -> dict[str, list[str]]:
    headers = headers_dict((key[5:].replace("_", "-"), value) for key, value in meta.items() if key.startswith("HTTP_"))
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if meta.get(key):
            headers[name] = [str(meta[key])]
    return headers


@guard
def request_hook(span: Any, request: Any) -> None:
    """Record method, path, query and headers; tee the input stream (multipart uploads are summarised later)."""
    target = target_for(span)
    if target is None:
        return
    meta = request.META
    headers = _headers(meta)
    content_type = header_value(headers, "content-type")
    captured: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query": meta.get("QUERY_STRING") or None,
        "headers": headers,
    }
    if not (content_type or "").lower().startswith(_MULTIPART):
        body = BodyCapture(target.config.max_body_bytes, content_type, header_value(headers, "content-encoding"))
        stream = getattr(request, "_stream", None)  # what HttpRequest.read() reads: LimitedStream / ASGI body file
        if stream is not None and not hasattr(request, "_body"):
            request._stream = _TeeStream(stream, body)
        elif isinstance(getattr(request, "_body", None), bytes):
            body.add(request._body)
        captured["body"] = body
    target.update("request", captured)


@guard
def response_hook(span: Any, request: Any, response: Any) -> None:
    """Record status, headers and body (streaming and file responses marked, never consumed)."""
    target = target_for(span)
    if target is None:
        return
    limit = target.config.max_body_bytes
    headers = headers_dict(response.items())
    body = BodyCapture(limit, header_value(headers, "content-type"), header_value(headers, "content-encoding"))
    if getattr(response, "streaming", False):
        body.streamed = True
        length = header_value(headers, "content-length")
        body.total = int(length) if length and length.isdigit() else 0
    else:
        body.add(response.content)
    target.update("response", {"status": int(response.status_code), "headers": headers, "body": body})
    upload = _multipart(request)
    if upload is not None:
        target.update("request", {"body": upload})


def _multipart(request: Any) -> dict[str, Any] | None:
    """Form fields and file summaries of a multipart request, as Django parsed them (never parsed here)."""
    if not str(request.META.get("CONTENT_TYPE", "")).lower().startswith(_MULTIPART):
        return None
    files = getattr(request, "_files", None)
    fields = getattr(request, "_post", None)
    if files is None and fields is None:
        return {"$multipart": {"read": False}}  # the view never parsed it: nothing was read, nothing is kept
    summary: dict[str, Any] = {"fields": {}, "files": []}
    if fields is not None:
        summary["fields"] = {key: values if len(values) > 1 else values[0] for key, values in fields.lists()}
    if files is not None:
        summary["files"] = [
            {"field": field, "name": item.name, "content_type": item.content_type, "size": item.size}
            for field, items in files.lists()
            for item in items
        ]
    return summary
