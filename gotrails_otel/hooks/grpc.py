"""gRPC (grpcio): client calls as integrations, server requests as trails of their own.

Client: the instrumentation's request and response hooks record the request and response messages (as JSON via
protobuf ``json_format``). For ``stub.Method.future()`` the response hook is never called; :func:`install` adds a
done-callback to such futures (holding the trail open until the reply arrives) that records the response and
status. grpc.aio clients get their request message recorded; their response hook receives status details only.
Server-streaming calls get neither hook from the instrumentation and are recorded with method and status only.

Server: :func:`install` wraps ``grpc.server`` so that every server also gets gotrails' interceptor after the
OpenTelemetry one; inside the SERVER span it records the full method, the invocation metadata, the request message,
the response message and the status code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..capture import (
    MASK,
    PROPAGATION_HEADERS,
    SENSITIVE_HEADERS,
    Target,
    current_target,
    guard,
    target_for,
    then_release,
    to_json,
)
from . import _wrap

__all__ = ["install", "instrumentor_kwargs", "uninstall"]

_CLIENT_MODULE = "opentelemetry.instrumentation.grpc._client"
_TRACE_RESULT = "OpenTelemetryClientInterceptor._trace_result"


def instrumentor_kwargs() -> dict[str, Any]:
    """Hook arguments for ``GrpcInstrumentorClient().instrument(...)`` (and the aio client instrumentor)."""
    return {"request_hook": request_hook, "response_hook": response_hook}


def install() -> bool:
    """Add gotrails' server interceptor to every ``grpc.server`` and capture ``.future()`` replies."""
    ok = _wrap.wrap("grpc", "server", _server)
    _wrap.wrap(_CLIENT_MODULE, _TRACE_RESULT, _trace_result)
    return ok


def uninstall() -> None:
    """Remove the wrappers (servers already built keep their interceptor)."""
    _wrap.unwrap("grpc", "server")
    _wrap.unwrap(_CLIENT_MODULE, _TRACE_RESULT)


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


# ------------------------------------------------------------------------------------------------ client


@guard
def request_hook(span: Any, request: Any) -> None:
    """Record the request message of a client call."""
    target = target_for(span)
    if target is not None:
        target.update("request", {"message": to_json(request)})


@guard
def response_hook(span: Any, response: Any) -> None:
    """Record the response message of a unary client call (grpc.aio passes status details: ignored)."""
    if isinstance(response, str):
        return
    target = target_for(span)
    if target is not None:
        target.update("response", {"message": to_json(response)})


def _trace_result(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    span = args[0] if args else kwargs.get("span")
    result = args[2] if len(args) > 2 else kwargs.get("result")
    _watch_future(span, result)
    return wrapped(*args, **kwargs)


@guard
def _watch_future(span: Any, result: Any) -> None:
    import grpc

    if not isinstance(result, grpc.Future):
        return
    target = target_for(span)
    if target is None:
        return
    result.add_done_callback(then_release(target.hold(), lambda future: _future_done(target, future)))


@guard
def _future_done(target: Target, future: Any) -> None:
    if future.cancelled():
        target.update("response", {"status_code": "CANCELLED"})
        return
    error = future.exception()
    if error is None:
        target.update("response", {"status_code": "OK", "message": to_json(future.result())})
        return
    code = error.code() if hasattr(error, "code") else None
    target.update("response", {"status_code": code.name if code is not None else "UNKNOWN"})


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
            return _wrap_handler(handler, details.method)

    return GotrailsServerInterceptor()


def _wrap_handler(handler: Any, method: str) -> Any:
    import grpc

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler  # client-streaming and bidirectional calls: method and status from the span only


def _unary(behavior: Callable[[Any, Any], Any], method: str) -> Callable[[Any, Any], Any]:
    def call(request: Any, context: Any) -> Any:
        target = _server_request(method, request, context)
        try:
            response = behavior(request, context)
        except BaseException:
            _server_status(target, context, failed=True)
            raise
        _server_response(target, context, response)
        return response

    return call


def _streaming(behavior: Callable[[Any, Any], Iterator[Any]], method: str) -> Callable[[Any, Any], Iterator[Any]]:
    def call(request: Any, context: Any) -> Iterator[Any]:
        target = _server_request(method, request, context)
        count = 0
        try:
            for message in behavior(request, context):
                count += 1
                yield message
        except BaseException:
            _server_status(target, context, failed=True)
            raise
        _server_response(target, context, None, count)

    return call


@guard
def _server_request(method: str, request: Any, context: Any) -> Target | None:
    target = current_target()
    if target is None:
        return None
    target.update(
        "request",
        {"method": method, "metadata": metadata_dict(context.invocation_metadata()), "message": to_json(request)},
    )
    return target


@guard
def _server_response(target: Target | None, context: Any, response: Any, streamed: int | None = None) -> None:
    if target is None:
        return
    code = _code(context) or "OK"
    payload: dict[str, Any] = {"status_code": code}
    if streamed is None:
        payload["message"] = to_json(response)
    else:
        payload["messages"] = streamed
    target.update("response", payload)


@guard
def _server_status(target: Target | None, context: Any, failed: bool) -> None:
    if target is None:
        return
    code = _code(context) or ("UNKNOWN" if failed else "OK")
    details = _details(context)
    target.update("response", {"status_code": code, "message": None})
    if failed and code != "OK":
        target.put("error", {"message": details or f"gRPC {code}", "type": code})


def _code(context: Any) -> str | None:
    code = getattr(context, "code", None)
    value = code() if callable(code) else None
    name = getattr(value, "name", None)
    return str(name) if name else None


def _details(context: Any) -> str | None:
    details = getattr(context, "details", None)
    value = details() if callable(details) else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value) if value else None
