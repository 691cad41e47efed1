"""A gRPC UserService run under ``opentelemetry-instrument`` by the tests (port from GRPC_PORT)."""

import os
import signal
from concurrent import futures

import grpc
from google.protobuf.struct_pb2 import Struct


def get_user(request: Struct, context: grpc.ServicerContext) -> Struct:
    reply = Struct()
    reply.update({"user_id": request["user_id"], "email": "user@email.com"})
    return reply


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(
        get_user, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("users.v1.UserService", {"GetUser": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{os.environ['GRPC_PORT']}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=1))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
