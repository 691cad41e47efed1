"""gRPC against a real grpcio server on loopback: client integrations and server trails with messages as JSON."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer
from opentelemetry.trace import SpanKind

import gotrails_otel as gt
from gotrails_otel.hooks import grpc as grpc_hooks

from .conftest import TrailHarness
from .services import free_port

SERVICE = "users.v1.UserService"


def _struct(**fields: Any) -> Struct:
    message = Struct()
    message.update(fields)
    return message


def get_user(request: Struct, context: grpc.ServicerContext) -> Struct:
    user_id = request["user_id"]
    if user_id == "missing":
        context.abort(grpc.StatusCode.NOT_FOUND, f"user {user_id} not found")
    with gt.step("LoadUser"):
        pass
    return _struct(user_id=user_id, email="user@email.com")


def list_users(request: Struct, context: grpc.ServicerContext) -> Iterator[Struct]:
    for n in range(3):
        yield _struct(user_id=f"u-{n}")


@pytest.fixture
def grpc_server(semconv: str) -> Iterator[str]:
    GrpcInstrumentorServer().instrument()
    GrpcInstrumentorClient().instrument(**grpc_hooks.instrumentor_kwargs())
    grpc_hooks.install()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        "GetUser": grpc.unary_unary_rpc_method_handler(
            get_user, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
        ),
        "ListUsers": grpc.unary_stream_rpc_method_handler(
            list_users, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)
    grpc_hooks.uninstall()
    GrpcInstrumentorClient().uninstrument()
    GrpcInstrumentorServer().uninstrument()


def _stub(channel: grpc.Channel, method: str) -> Any:
    return channel.unary_unary(
        f"/{SERVICE}/{method}", request_serializer=Struct.SerializeToString, response_deserializer=Struct.FromString
    )


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER)


def _split(trails: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    client = [t for t in trails if t["entry"]["kind"] != "grpc"]
    servers = [t for t in trails if t["entry"]["kind"] == "grpc"]
    assert len(client) == 1
    return client[0], servers


@pytest.mark.service
def test_unary_call_client_and_server(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel, _root(harness):
        reply = _stub(channel, "GetUser")(
            _struct(user_id="u-123"), metadata=(("x-request-id", "req-9"), ("authorization", "Bearer t0k3n"))
        )
        assert reply["email"] == "user@email.com"
    client, (server,) = _split(harness.trails(2))
    (call,) = client["integrations"]
    assert call["type"] == "grpc" and call["name"] == "UserService.GetUser"
    assert call["request"]["method"] == f"/{SERVICE}/GetUser"
    assert call["request"]["message"] == {"user_id": "u-123"}
    assert call["response"] == {"status_code": "OK", "message": {"user_id": "u-123", "email": "user@email.com"}}
    assert server["entry"]["name"] == f"/{SERVICE}/GetUser"
    assert server["request"]["message"] == {"user_id": "u-123"}
    assert server["request"]["metadata"]["x-request-id"] == ["req-9"]
    assert server["request"]["metadata"]["authorization"] == ["***"]
    assert "traceparent" not in server["request"]["metadata"]
    assert server["request_id"] == "req-9"
    assert server["response"] == {"status_code": "OK", "message": {"user_id": "u-123", "email": "user@email.com"}}
    assert [s["name"] for s in server["internal_steps"]] == ["LoadUser"]
    # One flow: the server's trail links to the client's span, and shares its trace.
    assert server["otel"]["trace_id"] == client["otel"]["trace_id"]
    assert server["otel"]["parent_span_id"] == call["span_id"]
    assert "t0k3n" not in str(server)


@pytest.mark.service
def test_non_ok_status_on_both_sides(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel, _root(harness), pytest.raises(grpc.RpcError) as info:
        _stub(channel, "GetUser")(_struct(user_id="missing"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    client, (server,) = _split(harness.trails(2))
    (call,) = client["integrations"]
    assert call["response"]["status_code"] == "NOT_FOUND"
    assert "user missing not found" in call["error"]["message"]
    assert client["errors"][0]["source"] == "UserService.GetUser"
    assert server["response"]["status_code"] == "NOT_FOUND"
    assert server["errors"][0]["message"] == "user missing not found"


@pytest.mark.service
def test_future_call_reply_reaches_the_trail(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel:
        with _root(harness):
            future = _stub(channel, "GetUser").future(_struct(user_id="u-7"))
        # The request's root span has ended; the reply arrives later and still reaches its trail.
        assert future.result()["user_id"] == "u-7"
    client, _ = _split(harness.trails(2))
    (call,) = client["integrations"]
    assert call["response"] == {"status_code": "OK", "message": {"user_id": "u-7", "email": "user@email.com"}}


@pytest.mark.service
def test_server_streaming_records_method_and_status(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel, _root(harness):
        stream = channel.unary_stream(
            f"/{SERVICE}/ListUsers",
            request_serializer=Struct.SerializeToString,
            response_deserializer=Struct.FromString,
        )
        assert [m["user_id"] for m in stream(_struct(page=1))] == ["u-0", "u-1", "u-2"]
    _, (server,) = _split(harness.trails(2))
    assert server["request"]["message"] == {"page": 1.0}
    assert server["response"] == {"status_code": "OK", "message": None, "messages": 3}


@pytest.mark.service
def test_unreachable_server_is_an_error(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{free_port()}") as channel, _root(harness), pytest.raises(grpc.RpcError):
        _stub(channel, "GetUser")(_struct(user_id="u-1"), timeout=2)
    (call,) = harness.one()["integrations"]
    assert call["response"]["status_code"] == "UNAVAILABLE"
    assert call["error"] is not None


@pytest.mark.service
def test_grpc_aio_client_records_the_request(harness: TrailHarness, grpc_server: str) -> None:
    import asyncio

    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient

    GrpcAioInstrumentorClient().instrument(**grpc_hooks.instrumentor_kwargs())
    try:

        async def call() -> Any:
            async with grpc.aio.insecure_channel(grpc_server) as channel:
                stub = channel.unary_unary(
                    f"/{SERVICE}/GetUser",
                    request_serializer=Struct.SerializeToString,
                    response_deserializer=Struct.FromString,
                )
                return await stub(_struct(user_id="u-aio"))

        with _root(harness):
            reply = asyncio.run(call())
        assert reply["user_id"] == "u-aio"
    finally:
        GrpcAioInstrumentorClient().uninstrument()
    client, (server,) = _split(harness.trails(2))
    (call_item,) = client["integrations"]
    assert call_item["request"]["message"] == {"user_id": "u-aio"}
    assert server["response"]["message"] == {"user_id": "u-aio", "email": "user@email.com"}
