"""A gRPC server with all four call shapes, run under ``opentelemetry-instrument`` by the tests (port GRPC_PORT);
with GRPC_AIO=1 it is a ``grpc.aio`` server."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from concurrent import futures

import grpc
from google.protobuf.struct_pb2 import Struct

SERVICE = "users.v1.UserService"


def _struct(**fields: object) -> Struct:
    message = Struct()
    message.update(fields)
    return message


def get_user(request: Struct, context: grpc.ServicerContext) -> Struct:
    return _struct(user_id=request["user_id"], email="user@email.com")


def list_users(request: Struct, context: grpc.ServicerContext) -> Iterator[Struct]:
    for n in range(2):
        yield _struct(user_id=f"u-{n}")


def import_users(requests: Iterator[Struct], context: grpc.ServicerContext) -> Struct:
    return _struct(imported=len(list(requests)))


def chat(requests: Iterator[Struct], context: grpc.ServicerContext) -> Iterator[Struct]:
    for r in requests:
        yield _struct(echo=r["text"])


async def aio_get_user(request: Struct, context: object) -> Struct:
    return get_user(request, context)  # type: ignore[arg-type]


async def aio_list_users(request: Struct, context: object) -> AsyncIterator[Struct]:
    for message in list_users(request, context):  # type: ignore[arg-type]
        yield message


async def aio_import_users(requests: AsyncIterator[Struct], context: object) -> Struct:
    return _struct(imported=len([r async for r in requests]))


async def aio_chat(requests: AsyncIterator[Struct], context: object) -> AsyncIterator[Struct]:
    async for r in requests:
        yield _struct(echo=r["text"])


def handlers(aio: bool) -> object:
    serializers = {"request_deserializer": Struct.FromString, "response_serializer": Struct.SerializeToString}
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "GetUser": grpc.unary_unary_rpc_method_handler(aio_get_user if aio else get_user, **serializers),
            "ListUsers": grpc.unary_stream_rpc_method_handler(aio_list_users if aio else list_users, **serializers),
            "ImportUsers": grpc.stream_unary_rpc_method_handler(
                aio_import_users if aio else import_users, **serializers
            ),
            "Chat": grpc.stream_stream_rpc_method_handler(aio_chat if aio else chat, **serializers),
        },
    )


async def serve_aio(address: str) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers(True),))
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    address = f"127.0.0.1:{os.environ['GRPC_PORT']}"
    if os.environ.get("GRPC_AIO") == "1":
        asyncio.run(serve_aio(address))
        return
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handlers(False),))
    server.add_insecure_port(address)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=1))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
