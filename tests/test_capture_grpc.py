"""gRPC against a real grpcio server on loopback: client integrations and server trails with messages as JSON."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
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


def import_users(requests: Iterator[Struct], context: grpc.ServicerContext) -> Struct:
    ids = [r["user_id"] for r in requests]
    return _struct(imported=len(ids), last=ids[-1] if ids else None)


def chat(requests: Iterator[Struct], context: grpc.ServicerContext) -> Iterator[Struct]:
    for r in requests:
        yield _struct(echo=r["text"])


HANDLERS = {
    "GetUser": grpc.unary_unary_rpc_method_handler(
        get_user, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
    ),
    "ListUsers": grpc.unary_stream_rpc_method_handler(
        list_users, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
    ),
    "ImportUsers": grpc.stream_unary_rpc_method_handler(
        import_users, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
    ),
    "Chat": grpc.stream_stream_rpc_method_handler(
        chat, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
    ),
}


@pytest.fixture
def grpc_server(semconv: str) -> Iterator[str]:
    GrpcInstrumentorServer().instrument()
    GrpcInstrumentorClient().instrument(**grpc_hooks.instrumentor_kwargs())
    grpc_hooks.install()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
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


def _calls(channel: Any, method: str, shape: str) -> Any:
    kwargs = {"request_serializer": Struct.SerializeToString, "response_deserializer": Struct.FromString}
    return getattr(channel, shape)(f"/{SERVICE}/{method}", **kwargs)


@pytest.mark.service
def test_server_streaming_on_both_sides(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel, _root(harness):
        stream = _calls(channel, "ListUsers", "unary_stream")(_struct(page=1))
        assert [m["user_id"] for m in stream] == ["u-0", "u-1", "u-2"]
    client, (server,) = _split(harness.trails(2))
    listed = [{"user_id": f"u-{n}"} for n in range(3)]
    (call,) = client["integrations"]
    assert call["request"]["message"] == {"page": 1.0}
    assert call["response"] == {"status_code": "OK", "message": None, "messages": listed, "message_count": 3}
    assert server["request"]["message"] == {"page": 1.0}
    assert server["response"] == {"status_code": "OK", "message": None, "messages": listed, "message_count": 3}


@pytest.mark.service
def test_client_streaming_on_both_sides(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel, _root(harness):
        reply = _calls(channel, "ImportUsers", "stream_unary")(iter([_struct(user_id=f"u-{n}") for n in range(4)]))
        assert reply["imported"] == 4
    client, (server,) = _split(harness.trails(2))
    sent = [{"user_id": f"u-{n}"} for n in range(4)]
    (call,) = client["integrations"]
    assert call["request"]["messages"] == sent and call["request"]["message_count"] == 4
    assert call["response"] == {"status_code": "OK", "message": {"imported": 4.0, "last": "u-3"}}
    assert server["request"]["messages"] == sent and server["request"]["method"] == f"/{SERVICE}/ImportUsers"
    assert server["response"] == {"status_code": "OK", "message": {"imported": 4.0, "last": "u-3"}}


@pytest.mark.service
def test_bidirectional_streaming_on_both_sides(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel, _root(harness):
        replies = _calls(channel, "Chat", "stream_stream")(iter([_struct(text="hi"), _struct(text="token=zq7-s3cr3t")]))
        assert [r["echo"] for r in replies] == ["hi", "token=zq7-s3cr3t"]
    client, (server,) = _split(harness.trails(2))
    (call,) = client["integrations"]
    assert call["request"]["messages"] == [{"text": "hi"}, {"text": "token=***"}]
    assert call["response"]["status_code"] == "OK"
    assert call["response"]["messages"] == [{"echo": "hi"}, {"echo": "token=***"}]
    assert server["request"]["messages"] == [{"text": "hi"}, {"text": "token=***"}]
    assert server["response"]["messages"] == [{"echo": "hi"}, {"echo": "token=***"}]
    assert "zq7-s3cr3t" not in str(client) + str(server)


@pytest.mark.service
def test_a_client_that_stops_reading_a_stream_keeps_what_it_read(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel, _root(harness):
        for message in _calls(channel, "ListUsers", "unary_stream")(_struct(page=1)):
            if message["user_id"] == "u-0":
                break
    client, _ = _split(harness.trails(2))
    (call,) = client["integrations"]
    assert call["response"]["messages"][0] == {"user_id": "u-0"}


@pytest.mark.service
def test_unreachable_server_is_an_error(harness: TrailHarness, grpc_server: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{free_port()}") as channel, _root(harness), pytest.raises(grpc.RpcError):
        _stub(channel, "GetUser")(_struct(user_id="u-1"), timeout=2)
    (call,) = harness.one()["integrations"]
    assert call["response"]["status_code"] == "UNAVAILABLE"
    assert call["error"] is not None


@pytest.mark.service
def test_grpc_aio_client_records_requests_and_responses(harness: TrailHarness, grpc_server: str) -> None:
    import asyncio

    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient

    GrpcAioInstrumentorClient().instrument()
    try:

        async def calls() -> tuple[Any, ...]:
            async with grpc.aio.insecure_channel(grpc_server) as channel:
                user = await _calls(channel, "GetUser", "unary_unary")(_struct(user_id="u-aio"))
                listed = [m async for m in _calls(channel, "ListUsers", "unary_stream")(_struct(page=2))]
                imported = await _calls(channel, "ImportUsers", "stream_unary")(
                    iter([_struct(user_id="a"), _struct(user_id="b")])
                )
                chatted = [m async for m in _calls(channel, "Chat", "stream_stream")(iter([_struct(text="x")]))]
                try:
                    await _calls(channel, "GetUser", "unary_unary")(_struct(user_id="missing"))
                except grpc.aio.AioRpcError as error:
                    missing = error.code()
                return user, listed, imported, chatted, missing

        with _root(harness):
            user, listed, imported, chatted, missing = asyncio.run(calls())
        assert user["user_id"] == "u-aio" and len(listed) == 3 and imported["imported"] == 2
        assert chatted[0]["echo"] == "x" and missing == grpc.StatusCode.NOT_FOUND
    finally:
        GrpcAioInstrumentorClient().uninstrument()
    client, servers = _split(harness.trails(6))
    assert len(servers) == 5
    get, stream, upload, chat_call, failed = client["integrations"]
    assert get["request"]["message"] == {"user_id": "u-aio"}
    assert get["response"] == {"status_code": "OK", "message": {"user_id": "u-aio", "email": "user@email.com"}}
    assert stream["response"]["messages"] == [{"user_id": f"u-{n}"} for n in range(3)]
    assert upload["request"]["messages"] == [{"user_id": "a"}, {"user_id": "b"}]
    assert upload["response"]["message"] == {"imported": 2.0, "last": "b"}
    assert chat_call["response"]["messages"] == [{"echo": "x"}]
    assert failed["response"]["status_code"] == "NOT_FOUND" and failed["error"] is not None


async def _aio_get_user(request: Struct, context: Any) -> Struct:
    if request["user_id"] == "missing":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
    with gt.step("LoadUser"):
        pass
    return _struct(user_id=request["user_id"], email="user@email.com")


async def _aio_list_users(request: Struct, context: Any) -> Any:
    for n in range(2):
        yield _struct(user_id=f"u-{n}")


async def _aio_import_users(requests: Any, context: Any) -> Struct:
    ids = [r["user_id"] async for r in requests]
    return _struct(imported=len(ids))


async def _aio_chat(requests: Any, context: Any) -> Any:
    async for r in requests:
        yield _struct(echo=r["text"])


@pytest.mark.service
def test_grpc_aio_server_records_every_call_shape(harness: TrailHarness, semconv: str) -> None:
    import asyncio

    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer

    GrpcAioInstrumentorServer().instrument()
    grpc_hooks.install()
    port = free_port()
    serializers = {"request_deserializer": Struct.FromString, "response_serializer": Struct.SerializeToString}
    handlers = {
        "GetUser": grpc.unary_unary_rpc_method_handler(_aio_get_user, **serializers),
        "ListUsers": grpc.unary_stream_rpc_method_handler(_aio_list_users, **serializers),
        "ImportUsers": grpc.stream_unary_rpc_method_handler(_aio_import_users, **serializers),
        "Chat": grpc.stream_stream_rpc_method_handler(_aio_chat, **serializers),
    }

    async def run() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await _calls(channel, "GetUser", "unary_unary")(
                    _struct(user_id="u-9"), metadata=(("x-request-id", "aio-1"), ("authorization", "Bearer s3cr3t"))
                )
                assert len([m async for m in _calls(channel, "ListUsers", "unary_stream")(_struct(page=1))]) == 2
                await _calls(channel, "ImportUsers", "stream_unary")(iter([_struct(user_id="a")]))
                assert len([m async for m in _calls(channel, "Chat", "stream_stream")(iter([_struct(text="t")]))])
                with pytest.raises(grpc.aio.AioRpcError):
                    await _calls(channel, "GetUser", "unary_unary")(_struct(user_id="missing"))
        finally:
            await server.stop(None)

    try:
        asyncio.run(run())
    finally:
        grpc_hooks.uninstall()
        GrpcAioInstrumentorServer().uninstrument()
    trails = {
        t["entry"]["name"].rsplit("/", 1)[1] + ("!" if t["status"] == "error" else ""): t for t in harness.trails(5)
    }
    get = trails["GetUser"]
    assert get["request"]["message"] == {"user_id": "u-9"}
    assert get["request"]["metadata"]["authorization"] == ["***"] and get["request_id"] == "aio-1"
    assert get["response"] == {"status_code": "OK", "message": {"user_id": "u-9", "email": "user@email.com"}}
    assert [s["name"] for s in get["internal_steps"]] == ["LoadUser"]
    assert trails["ListUsers"]["response"]["messages"] == [{"user_id": "u-0"}, {"user_id": "u-1"}]
    assert trails["ImportUsers"]["request"]["messages"] == [{"user_id": "a"}]
    assert trails["ImportUsers"]["response"]["message"] == {"imported": 1.0}
    assert trails["Chat"]["request"]["messages"] == [{"text": "t"}]
    assert trails["Chat"]["response"]["messages"] == [{"echo": "t"}]
    assert trails["GetUser!"]["response"]["status_code"] == "NOT_FOUND"
    assert "s3cr3t" not in str(trails)


# --------------------------------------------------------------- zero code: opentelemetry-instrument + distro


@pytest.mark.service
@pytest.mark.parametrize("server_kind", ["sync", "aio"])
def test_zero_code_clients_and_servers_record_every_message(tmp_path: Path, server_kind: str) -> None:
    """Under ``opentelemetry-instrument`` with the stock distro (which constructs the contrib instrumentor again,
    resetting its hooks), client calls of every shape, sync and grpc.aio, record their messages."""
    import sys

    import httpx

    from .test_auto import APPS, Service

    users_port, caller_port = free_port(), free_port()
    users = Service(
        [sys.executable, str(APPS / "grpc_shapes.py")],
        users_port,
        tmp_path / "users.jsonl",
        {"GRPC_PORT": str(users_port), "GRPC_AIO": "1" if server_kind == "aio" else "0"},
    )
    caller = Service(
        ["uvicorn", "grpc_caller:app", "--port", str(caller_port), "--log-level", "warning"],
        caller_port,
        tmp_path / "caller.jsonl",
        {"USERS_GRPC": f"127.0.0.1:{users_port}"},
    )
    try:
        for path in ("/sync", "/aio"):
            assert httpx.post(f"{caller.url}{path}", timeout=30).json()["imported"] == 1
        callers = {t["request"]["path"]: t for t in caller.trails(2)}
        served = users.trails(8)
    finally:
        caller.stop()
        users.stop()
    for path, user_id, item, text in (("/sync", "u-1", "a", "hi"), ("/aio", "u-2", "b", "yo")):
        get, listed, imported, chat = callers[path]["integrations"]
        assert get["request"]["message"] == {"user_id": user_id}
        assert get["response"] == {"status_code": "OK", "message": {"user_id": user_id, "email": "user@email.com"}}
        assert listed["response"]["messages"] == [{"user_id": "u-0"}, {"user_id": "u-1"}]
        assert imported["request"]["messages"] == [{"user_id": item}]
        assert imported["response"]["message"] == {"imported": 1.0}
        assert chat["request"]["messages"] == [{"text": text}] and chat["response"]["messages"] == [{"echo": text}]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for trail in served:
        by_method.setdefault(trail["entry"]["name"].rsplit("/", 1)[1], []).append(trail)
    assert sorted(t["request"]["message"]["user_id"] for t in by_method["GetUser"]) == ["u-1", "u-2"]
    assert all(len(t["response"]["messages"]) == 2 for t in by_method["ListUsers"])
    assert sorted(t["request"]["messages"][0]["user_id"] for t in by_method["ImportUsers"]) == ["a", "b"]
    assert sorted(t["response"]["messages"][0]["echo"] for t in by_method["Chat"]) == ["hi", "yo"]


@pytest.mark.service
def test_calls_without_the_grpc_instrumentation_record_nothing_elsewhere(harness: TrailHarness) -> None:
    """gotrails' interceptor only records into OpenTelemetry's span of the call: without the gRPC instrumentation,
    the span that happens to be current (the request's root) is left alone."""
    grpc_hooks.install()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, _root(harness) as root:
            harness.processor.captures.update(root.get_span_context().span_id, "request", {"method": "POST"})
            assert _stub(channel, "GetUser")(_struct(user_id="u-1"))["user_id"] == "u-1"
    finally:
        server.stop(grace=None)
        grpc_hooks.uninstall()
    trail = harness.one()
    assert trail["request"]["method"] == "POST" and "message" not in trail["request"]
    assert trail["integrations"] == []
