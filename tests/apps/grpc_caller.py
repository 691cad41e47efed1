"""A FastAPI service that calls the gRPC UserService (USERS_GRPC) in every call shape, sync and grpc.aio; run under
``opentelemetry-instrument`` by the tests. No gotrails code."""

import os

import grpc
from fastapi import FastAPI
from google.protobuf.struct_pb2 import Struct

app = FastAPI()
TARGET = os.environ["USERS_GRPC"]
SERVICE = "users.v1.UserService"
KWARGS = {"request_serializer": Struct.SerializeToString, "response_deserializer": Struct.FromString}


def _struct(**fields: object) -> Struct:
    message = Struct()
    message.update(fields)
    return message


@app.post("/sync")
def sync_calls() -> dict:
    with grpc.insecure_channel(TARGET) as channel:
        user = channel.unary_unary(f"/{SERVICE}/GetUser", **KWARGS)(_struct(user_id="u-1"))
        listed = list(channel.unary_stream(f"/{SERVICE}/ListUsers", **KWARGS)(_struct(page=1)))
        imported = channel.stream_unary(f"/{SERVICE}/ImportUsers", **KWARGS)(iter([_struct(user_id="a")]))
        chatted = list(channel.stream_stream(f"/{SERVICE}/Chat", **KWARGS)(iter([_struct(text="hi")])))
    return {"user": user["user_id"], "listed": len(listed), "imported": imported["imported"], "chat": len(chatted)}


@app.post("/aio")
async def aio_calls() -> dict:
    async with grpc.aio.insecure_channel(TARGET) as channel:
        user = await channel.unary_unary(f"/{SERVICE}/GetUser", **KWARGS)(_struct(user_id="u-2"))
        listed = [m async for m in channel.unary_stream(f"/{SERVICE}/ListUsers", **KWARGS)(_struct(page=1))]
        imported = await channel.stream_unary(f"/{SERVICE}/ImportUsers", **KWARGS)(iter([_struct(user_id="b")]))
        chatted = [m async for m in channel.stream_stream(f"/{SERVICE}/Chat", **KWARGS)(iter([_struct(text="yo")]))]
    return {"user": user["user_id"], "listed": len(listed), "imported": imported["imported"], "chat": len(chatted)}
