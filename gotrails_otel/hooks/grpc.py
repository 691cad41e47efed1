"""gRPC (grpcio, sync and ``grpc.aio``): client calls as integrations, server requests as trails of their own.

Client: :func:`install` chains gotrails' own client interceptors under OpenTelemetry's, on every channel made with
``grpc.insecure_channel``/``secure_channel`` and their ``grpc.aio`` forms — whichever of the two was installed
first, and whatever the instrumentor's hooks are (the distro constructs the contrib instrumentor again under
``opentelemetry-instrument``, which resets them). Inside the CLIENT span it records the full method, the metadata
sent, the request message(s), the response message(s) and the status, for unary calls (blocking, ``with_call``,
``.future()``), server-streaming, client-streaming and bidirectional calls. Messages are recorded as JSON (protobuf
``json_format``); of a stream, the first 100 messages and the count.

Server: :func:`install` adds gotrails' interceptor after the OpenTelemetry one to every ``grpc.server`` and
``grpc.aio.server``; inside the SERVER span it records the full method, the invocation metadata, the request
message(s), the response message(s) and the status code, for all four call shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ..capture import (
    MASK,
    PROPAGATION_HEADERS,
    SENSITIVE_HEADERS,
    Target,
    current_target,
    guard,
    to_json,
)
from . import _wrap

__all__ = ["install", "instrumentor_kwargs", "uninstall"]

MAX_STREAM_MESSAGES = 100
"""Messages of one stream recorded in the trail (the rest are counted in ``message_count``)."""

_CHANNELS = ("insecure_channel", "secure_channel")


def instrumentor_kwargs() -> dict[str, Any]:
    """Arguments for ``GrpcInstrumentorClient().instrument(...)``: none, the interceptors of :func:`install` capture."""
    return {}


def install() -> bool:
    """Chain gotrails' interceptors to every gRPC channel and server (sync and ``grpc.aio``)."""
    ok = _wrap.wrap("grpc", "server", _server)
    if not ok:
        return False
    for name in _CHANNELS:
        _wrap.wrap_innermost("grpc", name, _channel)
    _wrap.wrap("grpc.aio", "server", _aio_server)
    for name in _CHANNELS:
        _wrap.wrap("grpc.aio", name, _aio_channel)
    return True


def uninstall() -> None:
    """Remove the wrappers (channels and servers already made keep their interceptors)."""
    _wrap.unwrap("grpc", "server")
    _wrap.unwrap("grpc.aio", "server")
    for name in _CHANNELS:
        _wrap.unwrap("grpc", name)
        _wrap.unwrap("grpc.aio", name)


def metadata_dict(metadata: Any) -> dict[str, list[str]]:
    """gRPC metadata as ``{key: [values]}``: binary values summarised, secrets masked, trace context left out."""
    result: dict[str, list[str]] = {}
    for item in metadata or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        name = str(key).lower()
        if name in PROPAGATION_HEADERS:
            continue
        if name in SENSITIVE_HEADERS:
            text = MASK
        elif isinstance(value, bytes):
            text = f"<{len(value)} bytes>"
        else:
            text = str(value)
        result.setdefault(name, []).append(text)
    return result


def _code_name(code: Any) -> str | None:
    name = getattr(code, "name", None)
    return str(name) if name else None


class _Messages:
    """The messages of one side of a stream: the first :data:`MAX_STREAM_MESSAGES` as JSON, and the count."""

    __slots__ = ("count", "kept")

    def __init__(self) -> None:
        self.kept: list[Any] = []
        self.count = 0

    def add(self, message: Any) -> None:
        self.count += 1
        if len(self.kept) < MAX_STREAM_MESSAGES:
            self.kept.append(_json_or_none(message))

    def payload(self) -> dict[str, Any]:
        return {"messages": list(self.kept), "message_count": self.count}


@guard
def _json_or_none(message: Any) -> Any:
    return to_json(message)


def _recording(iterator: Any, messages: _Messages) -> Iterator[Any]:
    """Iterate ``iterator`` (a request stream the client or server reads), recording each message."""
    for message in iterator:
        _guarded_add(messages, message)
        yield message


@guard
def _guarded_add(messages: _Messages, message: Any) -> None:
    messages.add(message)


# ------------------------------------------------------------------------------------- client (sync)


def _channel(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import grpc

    channel = wrapped(*args, **kwargs)
    interceptor = _client_interceptor()
    return grpc.intercept_channel(channel, interceptor) if interceptor is not None else channel


_interceptor: Any = None


def _client_interceptor() -> Any:
    global _interceptor
    if _interceptor is None:
        _interceptor = _make_client_interceptor()
    return _interceptor


def _make_client_interceptor() -> Any:
    import grpc

    class GotrailsClientInterceptor(
        grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
        grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
        grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
        grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
    ):
        """Runs inside OpenTelemetry's CLIENT span and records the call into its trail."""

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            call = _ClientCall.start(details, request=request)
            outcome = continuation(details, request)
            if call is not None:
                call.watch_unary(outcome)
            return outcome

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            call = _ClientCall.start(details, request=request)
            outcome = continuation(details, request)
            return outcome if call is None else call.watch_stream(outcome)

        def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
            call = _ClientCall.start(details, streaming_requests=True)
            if call is not None and call.requests is not None:
                request_iterator = _recording(request_iterator, call.requests)
            outcome = continuation(details, request_iterator)
            if call is not None:
                call.watch_unary(outcome)
            return outcome

        def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
            call = _ClientCall.start(details, streaming_requests=True)
            if call is not None and call.requests is not None:
                request_iterator = _recording(request_iterator, call.requests)
            outcome = continuation(details, request_iterator)
            return outcome if call is None else call.watch_stream(outcome)

    return GotrailsClientInterceptor()


class _ClientCall:
    """One client call inside its CLIENT span."""

    __slots__ = ("_release", "requests", "responses", "target")

    def __init__(self, target: Target, streaming_requests: bool) -> None:
        self.target = target
        self.requests = _Messages() if streaming_requests else None
        self.responses: _Messages | None = None
        self._release: Callable[[], None] | None = None

    @staticmethod
    @guard
    def start(details: Any, *, request: Any = None, streaming_requests: bool = False) -> _ClientCall | None:
        method = _method(details)
        target = _span_target(method, "CLIENT")  # OpenTelemetry's CLIENT span, current while its interceptor calls ours
        if target is None:
            return None
        payload: dict[str, Any] = {"method": method, "metadata": metadata_dict(details.metadata)}
        if not streaming_requests:
            payload["message"] = to_json(request)
        target.update("request", payload)
        return _ClientCall(target, streaming_requests)

    @guard
    def respond(self, status_code: str | None, **fields: Any) -> None:
        """Record the response so far (a stream records again when the application has read it all)."""
        response: dict[str, Any] = {"status_code": status_code, **fields}
        if self.responses is not None:
            response.update(self.responses.payload())
        if self.requests is not None:
            self.target.update("request", self.requests.payload())
        self.target.update("response", response)

    def hold(self) -> None:
        self._release = self.target.hold()

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    # unary response: the outcome of a blocking call is done already; a future is done later
    def watch_unary(self, outcome: Any) -> None:
        add = getattr(outcome, "add_done_callback", None)
        if callable(add):
            self.hold()
            add(self._unary_done)

    def _unary_done(self, outcome: Any) -> None:
        try:
            if outcome.cancelled():
                self.respond("CANCELLED")
            elif (error := outcome.exception()) is None:
                self.respond("OK", message=_json_or_none(outcome.result()))
            else:
                self.respond(_error_code(error))
        finally:
            self.release()

    # streamed responses: recorded as the application reads them
    def watch_stream(self, outcome: Any) -> Any:
        self.responses = _Messages()
        self.hold()
        add = getattr(outcome, "add_done_callback", None)
        if callable(add):
            add(self._stream_done)
        return _response_stream(outcome, self)

    def stream_message(self, message: Any) -> None:
        if self.responses is not None:
            _guarded_add(self.responses, message)

    def stream_end(self, error: BaseException | None) -> None:
        self.respond("OK" if error is None else _error_code(error))
        self.release()

    def _stream_done(self, outcome: Any) -> None:
        # The call is over; the application may still be reading buffered messages (recorded again at their end).
        try:
            self.respond(_code_name(outcome.code()) if hasattr(outcome, "code") else None)
        finally:
            self.release()


def _error_code(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return (_code_name(code()) if callable(code) else None) or "UNKNOWN"


_stream_class: Any = None


def _response_stream(outcome: Any, call: _ClientCall) -> Any:
    """The response stream handed to the application: each message it reads is recorded. It is a ``grpc.Call`` and
    ``grpc.Future`` like the call itself, whose methods it forwards (``code()``, ``cancel()``…)."""
    global _stream_class
    if _stream_class is None:
        _stream_class = _make_stream_class()
    return _stream_class(outcome, call)


def _make_stream_class() -> Any:
    import grpc

    class ResponseStream(grpc.Call, grpc.Future):  # type: ignore[misc]
        def __init__(self, outcome: Any, call: _ClientCall) -> None:
            self._outcome = outcome
            self._call = call

        def __iter__(self) -> Any:
            return self

        def __next__(self) -> Any:
            try:
                message = next(self._outcome)
            except StopIteration:
                self._call.stream_end(None)
                raise
            except BaseException as error:
                self._call.stream_end(error)
                raise
            self._call.stream_message(message)
            return message

        def __getattr__(self, name: str) -> Any:
            return getattr(self._outcome, name)

    def forward(name: str) -> Callable[..., Any]:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return getattr(self._outcome, name)(*args, **kwargs)

        method.__name__ = name
        return method

    for name in (
        *("is_active", "time_remaining", "cancel", "add_callback", "initial_metadata", "trailing_metadata"),
        *("code", "details", "cancelled", "running", "done", "result", "exception", "traceback"),
        "add_done_callback",
    ):
        setattr(ResponseStream, name, forward(name))
    ResponseStream.__abstractmethods__ = frozenset()
    return ResponseStream


def _span_target(method: str, kind: str) -> Target | None:
    """The current span's target when it is OpenTelemetry's span of this call (named after the full method), so that
    a call made without the gRPC instrumentation is never recorded into whatever span happens to be current."""
    from opentelemetry import trace

    span = trace.get_current_span()
    span_kind = getattr(span, "kind", None)
    if getattr(span, "name", None) != method or getattr(span_kind, "name", None) != kind:
        return None
    return current_target()


def _method(details: Any) -> str:
    method = getattr(details, "method", "")
    return method.decode() if isinstance(method, bytes) else str(method)


# ------------------------------------------------------------------------------------- client (aio)


def _aio_channel(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    interceptors = list(kwargs.get("interceptors") or ())
    interceptors.extend(_aio_client_interceptors())  # after OpenTelemetry's: inside its CLIENT span
    kwargs["interceptors"] = interceptors
    return wrapped(*args, **kwargs)


_aio_interceptors: list[Any] | None = None


def _aio_client_interceptors() -> list[Any]:
    global _aio_interceptors
    if _aio_interceptors is None:
        _aio_interceptors = _make_aio_client_interceptors()
    return _aio_interceptors


def _make_aio_client_interceptors() -> list[Any]:
    import grpc.aio

    async def unary_response(call: _ClientCall | None, outcome: Any) -> Any:
        if call is None:
            return outcome
        try:
            response = await outcome
        except grpc.aio.AioRpcError as error:
            call.respond(_error_code(error))
            return outcome  # the application gets the error when it awaits the call, as without gotrails
        except BaseException:
            call.respond("CANCELLED" if outcome.cancelled() else "UNKNOWN")
            raise
        call.respond("OK", message=_json_or_none(response))
        return outcome

    async def stream_response(call: _ClientCall, outcome: Any) -> AsyncIterator[Any]:
        call.responses = _Messages()
        try:
            async for message in outcome:
                call.stream_message(message)
                yield message
        except BaseException as error:
            call.stream_end(error)
            raise
        call.stream_end(None)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            call = _ClientCall.start(details, request=request)
            return await unary_response(call, await continuation(details, request))

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            call = _ClientCall.start(details, request=request)
            outcome = await continuation(details, request)
            return outcome if call is None else stream_response(call, outcome)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
            call = _ClientCall.start(details, streaming_requests=True)
            if call is not None and call.requests is not None:
                request_iterator = _recording_any(request_iterator, call.requests)
            return await unary_response(call, await continuation(details, request_iterator))

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
            call = _ClientCall.start(details, streaming_requests=True)
            if call is not None and call.requests is not None:
                request_iterator = _recording_any(request_iterator, call.requests)
            outcome = await continuation(details, request_iterator)
            return outcome if call is None else stream_response(call, outcome)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


def _recording_any(iterator: Any, messages: _Messages) -> Any:
    """Record the messages of a request stream that may be a sync or an async iterator."""
    if hasattr(iterator, "__aiter__"):

        async def recording() -> AsyncIterator[Any]:
            async for message in iterator:
                _guarded_add(messages, message)
                yield message

        return recording()
    return _recording(iterator, messages)


# ------------------------------------------------------------------------------------------------ server


def _server(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    interceptors = list(kwargs.get("interceptors") or ())
    interceptor = _server_interceptor()
    if interceptor is not None:
        interceptors.append(interceptor)
        kwargs["interceptors"] = interceptors
    return wrapped(*args, **kwargs)


def _server_interceptor() -> Any:
    import grpc

    class GotrailsServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
        """Records each request inside the OpenTelemetry SERVER span."""

        def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
            handler = continuation(details)
            if handler is None:
                return None
            return _wrap_handler(handler, details.method, _unary, _streaming)

    return GotrailsServerInterceptor()


def _wrap_handler(
    handler: Any,
    method: str,
    unary: Callable[..., Any],
    streaming: Callable[..., Any],
) -> Any:
    """``handler`` with each method wrapped by ``unary`` (one response) or ``streaming`` (a response stream): the
    sync wrappers, or the grpc.aio ones for an aio server."""
    import grpc

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, method, False), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream, method, False), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary, method, True), **serializers)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream, method, True), **serializers)
    return handler


def _unary(behavior: Callable[[Any, Any], Any], method: str, streaming_requests: bool) -> Callable[[Any, Any], Any]:
    def call(request: Any, context: Any) -> Any:
        server_call = _ServerCall.start(method, context, request, streaming_requests)
        if server_call is not None and server_call.requests is not None:
            request = _recording(request, server_call.requests)
        try:
            response = behavior(request, context)
        except BaseException:
            _ServerCall.failed(server_call, context)
            raise
        _ServerCall.succeeded(server_call, context, response)
        return response

    return call


def _streaming(
    behavior: Callable[[Any, Any], Iterator[Any]], method: str, streaming_requests: bool
) -> Callable[[Any, Any], Iterator[Any]]:
    def call(request: Any, context: Any) -> Iterator[Any]:
        server_call = _ServerCall.start(method, context, request, streaming_requests)
        if server_call is not None and server_call.requests is not None:
            request = _recording(request, server_call.requests)
        responses = _Messages()
        try:
            for message in behavior(request, context):
                _guarded_add(responses, message)
                yield message
        except BaseException:
            _ServerCall.failed(server_call, context, responses)
            raise
        _ServerCall.succeeded(server_call, context, None, responses)

    return call


class _ServerCall:
    """One request inside its SERVER span."""

    __slots__ = ("requests", "target")

    def __init__(self, target: Target, requests: _Messages | None) -> None:
        self.target = target
        self.requests = requests

    @staticmethod
    @guard
    def start(method: str, context: Any, request: Any, streaming_requests: bool) -> _ServerCall | None:
        target = _span_target(method, "SERVER")
        if target is None:
            return None
        payload: dict[str, Any] = {"method": method, "metadata": metadata_dict(context.invocation_metadata())}
        if not streaming_requests:
            payload["message"] = to_json(request)
        target.update("request", payload)
        return _ServerCall(target, _Messages() if streaming_requests else None)

    @staticmethod
    @guard
    def succeeded(call: _ServerCall | None, context: Any, response: Any, responses: _Messages | None = None) -> None:
        if call is None:
            return
        call._requests_done()
        payload: dict[str, Any] = {"status_code": _code(context) or "OK"}
        if responses is None:
            payload["message"] = to_json(response)
        else:
            payload.update(responses.payload())
        call.target.update("response", payload)

    @staticmethod
    @guard
    def failed(call: _ServerCall | None, context: Any, responses: _Messages | None = None) -> None:
        if call is None:
            return
        call._requests_done()
        code = _code(context) or "UNKNOWN"
        payload: dict[str, Any] = {"status_code": code, "message": None}
        if responses is not None:
            payload.update(responses.payload())
        call.target.update("response", payload)
        if code != "OK":
            call.target.put("error", {"message": _details(context) or f"gRPC {code}", "type": code})

    def _requests_done(self) -> None:
        if self.requests is not None:
            self.target.update("request", self.requests.payload())


def _code(context: Any) -> str | None:
    code = getattr(context, "code", None)
    value = code() if callable(code) else None
    return _code_name(value)


def _details(context: Any) -> str | None:
    details = getattr(context, "details", None)
    value = details() if callable(details) else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value) if value else None


# -------------------------------------------------------------------------------------------- aio server


def _aio_server(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    interceptors = list(kwargs.get("interceptors") or ())
    interceptors.append(_aio_server_interceptor())  # after OpenTelemetry's: inside its SERVER span
    kwargs["interceptors"] = interceptors
    return wrapped(*args, **kwargs)


def _aio_server_interceptor() -> Any:
    import grpc.aio

    class GotrailsAioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
        """Records each request inside the OpenTelemetry SERVER span (grpc.aio)."""

        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            if handler is None:
                return None
            return _wrap_handler(handler, details.method, _aio_unary, _aio_streaming)

    return GotrailsAioServerInterceptor()


def _aio_unary(behavior: Callable[..., Any], method: str, streaming_requests: bool) -> Callable[..., Any]:
    async def call(request: Any, context: Any) -> Any:
        server_call = _ServerCall.start(method, context, request, streaming_requests)
        if server_call is not None and server_call.requests is not None:
            request = _recording_any(request, server_call.requests)
        try:
            response = await behavior(request, context)
        except BaseException:
            _ServerCall.failed(server_call, context)
            raise
        _ServerCall.succeeded(server_call, context, response)
        return response

    return call


def _aio_streaming(behavior: Callable[..., Any], method: str, streaming_requests: bool) -> Callable[..., Any]:
    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        server_call = _ServerCall.start(method, context, request, streaming_requests)
        if server_call is not None and server_call.requests is not None:
            request = _recording_any(request, server_call.requests)
        responses = _Messages()
        try:
            async for message in behavior(request, context):
                _guarded_add(responses, message)
                yield message
        except BaseException:
            _ServerCall.failed(server_call, context, responses)
            raise
        _ServerCall.succeeded(server_call, context, None, responses)

    return call
