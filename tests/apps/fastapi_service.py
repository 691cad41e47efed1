"""A FastAPI service run under ``opentelemetry-instrument`` by the tests (no gotrails code but a step).

Optional downstreams from the environment: DOWNSTREAM_URL (HTTP), USERS_GRPC (gRPC UserService), KAFKA (topic
payment.created).
"""

import os

import httpx
from fastapi import FastAPI, Request

import gotrails_otel as gt

app = FastAPI()
DOWNSTREAM = os.environ.get("DOWNSTREAM_URL")
USERS_GRPC = os.environ.get("USERS_GRPC")
KAFKA = os.environ.get("KAFKA")
_producer = None


def producer():  # created lazily, after auto-instrumentation
    global _producer
    if _producer is None:
        from kafka import KafkaProducer

        _producer = KafkaProducer(bootstrap_servers=KAFKA)
    return _producer


@app.post("/v1/payments")
def create(payload: dict) -> dict:
    with gt.step("ValidateRequest"):
        amount = int(payload["amount"])
    result = {"payment_id": "pay-123", "amount": amount}
    if DOWNSTREAM:
        with httpx.Client() as client:
            result["downstream"] = client.get(f"{DOWNSTREAM}/v1/users/u-1").json()
    if USERS_GRPC:
        import grpc
        from google.protobuf.struct_pb2 import Struct

        with grpc.insecure_channel(USERS_GRPC) as channel:
            stub = channel.unary_unary(
                "/users.v1.UserService/GetUser",
                request_serializer=Struct.SerializeToString,
                response_deserializer=Struct.FromString,
            )
            request = Struct()
            request.update({"user_id": "u-1"})
            result["user"] = dict(stub(request))
    if KAFKA:
        producer().send("payment.created", key=b"pay-123", value=b'{"payment_id": "pay-123"}').get(timeout=10)
    return result


@app.get("/v1/users/{uid}")
def user(uid: str) -> dict:
    return {"user_id": uid, "email": "user@email.com"}


@app.post("/v1/upload")
async def upload(request: Request) -> dict:
    form = await request.form()
    return {"user": form["user"], "size": len(await form["avatar"].read())}


@app.post("/v1/fail")
def fail(payload: dict) -> dict:
    raise RuntimeError(f"charge refused for card {payload['card']}. [parameters: ('u-1', '{payload['password']}')]")
