"""Incoming HTTP for WSGI apps: Flask (through its instrumentor's hooks) and plain WSGI (through the contrib
``OpenTelemetryMiddleware``): method, path, query, headers, request body, status, response headers and body.

The request body is recorded by a tee around ``wsgi.input`` that copies what the app reads (up to
``max_body_bytes``) and never reads on its own, so the app's parsing is untouched. The response body is recorded as
the server iterates it; nothing is consumed or buffered beyond the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..capture import BodyCapture, Target, guard, header_value, headers_dict, target_for
from . import _wrap

__all__ = ["flask_kwargs", "install", "uninstall"]

_MODULE = "opentelemetry.instrumentation.wsgi"
_NAME = "OpenTelemetryMiddleware.__call__"


def flask_kwargs() -> dict[str, Any]:
    """Hook arguments for ``FlaskInstrumentor().instrument(...)`` / ``instrument_app(app, ...)``."""
    return {"request_hook": flask_request_hook}


def install() -> bool:
    """Observe plain WSGI apps wrapped in the contrib ``OpenTelemetryMiddleware``; ``False`` when it is absent."""
    return _wrap.wrap(_MODULE, _NAME, _call)


def uninstall() -> None:
    """Stop observing plain WSGI apps."""
    _wrap.unwrap(_MODULE, _NAME)


class _TeeInput:
    """``wsgi.input`` that copies what the app reads into a :class:`BodyCapture`."""

    def __init__(self, stream: Any, body: BodyCapture) -> None:
        self._stream = stream
        self._body = body

    def read(self, *args: Any) -> bytes:
        data: bytes = self._stream.read(*args)
        self._body.add(data)
        return data

    def readinto(self, buffer: Any) -> int | None:
        readinto = getattr(self._stream, "readinto", None)
        if readinto is None:  # a server whose input has only read(): behave like io.RawIOBase
            data = self._stream.read(len(buffer))
            memoryview(buffer)[: len(data)] = data
            self._body.add(data)
            return len(data)
        count: int | None = readinto(buffer)
        if count:
            self._body.add(memoryview(buffer)[:count])
        return count

    def readline(self, *args: Any) -> bytes:
        data: bytes = self._stream.readline(*args)
        self._body.add(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(*args)
        for line in lines:
            self._body.add(line)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._body.add(line)
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _request_of(environ: dict[str, Any], limit: int) -> tuple[dict[str, Any], BodyCapture]:
    headers = headers_dict(
        (key[5:].replace("_", "-"), value) for key, value in environ.items() if key.startswith("HTTP_")
    )
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            headers[name] = [str(environ[key])]
    body = BodyCapture(limit, header_value(headers, "content-type"), header_value(headers, "content-encoding"))
    stream = environ.get("wsgi.input")
    if stream is not None and not isinstance(stream, _TeeInput):
        environ["wsgi.input"] = _TeeInput(stream, body)
    request = {
        "method": environ.get("REQUEST_METHOD"),
        "path": environ.get("PATH_INFO") or "/",
        "query": environ.get("QUERY_STRING") or None,
        "headers": headers,
        "body": body,
    }
    return request, body


def _response_of(status: str, pairs: Iterable[tuple[str, str]], limit: int) -> tuple[dict[str, Any], BodyCapture]:
    headers = headers_dict(pairs)
    body = BodyCapture(limit, header_value(headers, "content-type"), header_value(headers, "content-encoding"))
    code = status.split(" ", 1)[0]
    return {"status": int(code) if code.isdigit() else None, "headers": headers, "body": body}, body


# ---------------------------------------------------------------------------------------------- Flask


@guard
def flask_request_hook(span: Any, environ: dict[str, Any]) -> None:
    """Flask ``request_hook``: tee the request body and register an ``after_this_request`` for the response."""
    target = target_for(span)
    if target is None:
        return
    request, _ = _request_of(environ, target.config.max_body_bytes)
    target.update("request", request)
    import flask

    flask.after_this_request(_flask_after(target))


def _flask_after(target: Target) -> Callable[[Any], Any]:
    def after(response: Any) -> Any:
        _flask_response(target, response)
        return response

    return after


@guard
def _flask_response(target: Target, response: Any) -> None:
    captured, body = _response_of(response.status, response.headers.items(), target.config.max_body_bytes)
    target.update("response", captured)
    if response.is_streamed:
        # The span ends before the server iterates a streamed body: tap the chunks and hold the trail meanwhile.
        release = target.hold()
        response.response = _Tap(response.response, body.add, release)
    else:
        body.add(response.get_data())


def _closed(chunk: bytes) -> None:
    """The sink of a closed :class:`_Tap`."""


class _Tap:
    """An iterable response body that hands each chunk to ``sink`` as the server iterates it; ``release`` runs when
    the server closes it, ``on_error`` when iterating it raises."""

    def __init__(
        self,
        iterable: Iterable[bytes],
        sink: Callable[[bytes], None],
        release: Callable[[], None] | None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._iterable = iterable
        self._sink = guard(sink)
        self._release = release
        self._on_error = on_error

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._iterable:
                self._sink(chunk)
                yield chunk
        except BaseException:
            if self._on_error is not None:
                self._on_error()
            raise
        finally:
            self.close()

    def close(self) -> None:
        if self._sink is _closed:
            return
        self._sink = _closed
        close = getattr(self._iterable, "close", None)
        try:
            if callable(close):
                close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


# ------------------------------------------------------------------------------------------ plain WSGI

_EXCHANGE = "gotrails.exchange"


def _call(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 2 or kwargs or not isinstance(args[0], dict):
        return wrapped(*args, **kwargs)
    environ, start_response = args
    exchange = _WsgiExchange.prepare(instance, environ)
    if exchange is None:
        return wrapped(environ, start_response)
    try:
        iterable = wrapped(environ, exchange.wrap_start_response(start_response))
    except BaseException:
        exchange.failed()  # the app raised before returning a body: the server answers 500
        raise
    return _Tap(iterable, exchange.on_chunk, exchange.done, exchange.failed)


def _chain_request_hook(instance: Any) -> None:
    """Make sure the middleware calls :func:`_request_hook` (after the application's own hook, if any)."""
    current = getattr(instance, "request_hook", None)
    if getattr(current, "_gotrails", False):
        return
    if current is None:
        instance.request_hook = _request_hook
        return

    def chained(span: Any, environ: dict[str, Any]) -> None:
        current(span, environ)
        _request_hook(span, environ)

    chained._gotrails = True  # type: ignore[attr-defined]
    instance.request_hook = chained


@guard
def _request_hook(span: Any, environ: dict[str, Any]) -> None:
    """Called by the middleware inside the SERVER span, before the app runs: record the request now."""
    exchange = environ.get(_EXCHANGE)
    if isinstance(exchange, _WsgiExchange):
        exchange.begin(span, environ)


_request_hook._gotrails = True  # type: ignore[attr-defined]


class _WsgiExchange:
    """One request through the contrib WSGI middleware: the request is recorded before the app runs, the status and
    headers when it starts the response, the body as the server iterates it — and a 500 when the app raises (the
    server answers with one). The trail is held open until the server has the whole response."""

    def __init__(self) -> None:
        self._target: Target | None = None
        self._release: Callable[[], None] | None = None
        self._response_body: BodyCapture | None = None
        self._status_recorded = False

    @staticmethod
    @guard
    def prepare(instance: Any, environ: dict[str, Any]) -> _WsgiExchange | None:
        _chain_request_hook(instance)
        exchange = _WsgiExchange()
        environ[_EXCHANGE] = exchange
        return exchange

    def begin(self, span: Any, environ: dict[str, Any]) -> None:
        target = target_for(span)
        if target is None:
            return
        self._target = target
        self._release = target.hold(processing=True)
        request, _ = _request_of(environ, target.config.max_body_bytes)
        target.update("request", request)

    def wrap_start_response(self, start_response: Callable[..., Any]) -> Callable[..., Any]:
        def capture_start_response(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            self._on_start_response(status, headers)
            return start_response(status, headers, *args)

        return capture_start_response

    @guard
    def _on_start_response(self, status: str, headers: list[tuple[str, str]]) -> None:
        target = self._target
        if target is None:
            return
        response, self._response_body = _response_of(status, headers, target.config.max_body_bytes)
        target.update("response", response)
        self._status_recorded = True

    def on_chunk(self, chunk: bytes) -> None:
        if self._response_body is not None:
            self._response_body.add(chunk)

    @guard
    def failed(self) -> None:
        """The app raised: unless a status was sent already, the server answers ``500 Internal Server Error``."""
        target = self._target
        if target is not None and not self._status_recorded:
            target.update("response", {"status": 500, "headers": {}, "body": None})
            self._status_recorded = True
        self.done()

    def done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
