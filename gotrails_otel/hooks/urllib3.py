"""Outgoing HTTP with urllib3 used directly (``PoolManager.request``, ``HTTPConnectionPool.urlopen``).

Calls made through requests are recorded by :mod:`gotrails_otel.hooks.requests`: the requests instrumentation
suppresses the urllib3 instrumentation underneath it, so each call is one integration.

The request hook records method, URL, headers and an in-memory body; the response hook records status, headers and
the body when urllib3 preloaded it (the default). A response opened with ``preload_content=False`` is marked
streamed and never read by gotrails.
"""

from __future__ import annotations

from typing import Any

from ..capture import BodyCapture, guard, header_value, headers_dict, target_for
from .httpx import safe_url
from .requests import request_body

__all__ = ["install", "instrumentor_kwargs", "uninstall"]


def instrumentor_kwargs() -> dict[str, Any]:
    """Hook arguments for ``URLLib3Instrumentor().instrument(...)``."""
    return {"request_hook": request_hook, "response_hook": response_hook}


def install() -> bool:
    """Nothing to wrap."""
    return True


def uninstall() -> None:
    """Nothing to remove."""


@guard
def request_hook(span: Any, pool: Any, info: Any) -> None:
    """Record method, URL, headers and body of a ``urlopen`` call."""
    target = target_for(span)
    if target is None:
        return
    headers = headers_dict((info.headers or {}).items())
    body = request_body(info.body, target.config.max_body_bytes, header_value(headers, "content-type"))
    target.update("request", {"method": info.method, "url": safe_url(info.url), "headers": headers, "body": body})


@guard
def response_hook(span: Any, pool: Any, response: Any) -> None:
    """Record status, headers and the preloaded body."""
    target = target_for(span)
    if target is None:
        return
    headers = headers_dict(response.headers.items())
    body = BodyCapture(target.config.max_body_bytes, header_value(headers, "content-type"))
    preloaded = getattr(response, "_body", None)  # set when urllib3 read the body (preload_content=True)
    if isinstance(preloaded, bytes):
        body.add(preloaded)
    else:
        body.streamed = True
    target.update("response", {"status": int(response.status), "headers": headers, "body": body})
