"""The demo's payment service (FastAPI), written as a team would write it: a few steps, no logging code.

POST /v1/payments validates the request (a step), inserts the payment into the database, caches its status in
Redis, charges it at the payment gateway over HTTP (httpx), records it in the ledger service (Django, over HTTP with
requests), publishes ``payment.created`` to Kafka and looks the user up in the gRPC UserService. Redis and Kafka
are optional: the demo passes ``None`` when they are not available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gotrails_otel as gt


@dataclass
class Backends:
    """What the service talks to (built after gotrails instrumented the libraries)."""

    engine: Any
    gateway_url: str
    users: Any
    cache: Any = None
    producer: Any = None
    ledger_url: str | None = None


def create_app(b: Backends) -> Any:
    import httpx
    import sqlalchemy as sa
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from google.protobuf.struct_pb2 import Struct

    app = FastAPI(title="payment-service")
    http = httpx.Client(timeout=5)

    @app.post("/v1/payments")
    def create_payment(payload: dict[str, Any]) -> JSONResponse:
        with gt.step("ValidateRequest"):
            amount = payload.get("amount")
            if not isinstance(amount, int) or amount <= 0:
                return JSONResponse({"error": "amount must be a positive integer"}, status_code=422)
        gt.set_metadata(user_id=payload.get("user_id"), merchant_id="m-789")
        payment_id = f"pay-{abs(hash((amount, payload.get('user_id')))) % 100000:05d}"
        with gt.step("CreatePaymentUsecase"):
            with b.engine.begin() as conn:
                conn.execute(
                    sa.text("INSERT INTO payments (id, amount, method) VALUES (:id, :amount, :method)"),
                    {"id": payment_id, "amount": amount, "method": payload.get("payment_method", "bank_transfer")},
                )
            if b.cache is not None:
                b.cache.set(f"payment:{payment_id}", "PENDING", ex=3600)
            charge = http.post(
                f"{b.gateway_url}/v2/charge",
                json={"order_id": payment_id, "gross_amount": amount},
                headers={"Authorization": "Basic ZGVtby1zZXJ2ZXIta2V5Og=="},
                extensions={"gotrails.name": "midtrans.charge"},
            )
            if charge.status_code >= 400:
                gt.record_error("midtrans.charge", f"gateway answered {charge.status_code}")
                return JSONResponse({"payment_id": payment_id, "status": "FAILED"}, status_code=502)
            if b.ledger_url is not None:
                import requests

                requests.post(
                    f"{b.ledger_url}/ledger/entries",
                    json={"payment_id": payment_id, "amount": amount, "user_id": payload.get("user_id")},
                    timeout=5,
                ).raise_for_status()
            if b.producer is not None:
                b.producer.send(
                    "payment.created", key=payment_id.encode(), value=f'{{"payment_id": "{payment_id}"}}'.encode()
                )
            request = Struct()
            request.update({"user_id": str(payload.get("user_id", "u-0"))})
            user = b.users(request, timeout=5)
        return JSONResponse({"payment_id": payment_id, "status": "PENDING", "email": user["email"]}, status_code=201)

    return app


def create_gateway() -> Any:
    """The payment gateway stand-in: charges succeed, except amounts ending in 13, which it refuses (503)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def charge(request: Request) -> JSONResponse:
        body = await request.json()
        if int(body.get("gross_amount", 0)) % 100 == 13:
            return JSONResponse({"status_message": "acquirer unavailable"}, status_code=503)
        return JSONResponse(
            {"transaction_id": "trx-456", "transaction_status": "pending", "order_id": body.get("order_id")},
            status_code=201,
        )

    return Starlette(routes=[Route("/v2/charge", charge, methods=["POST"])])


def user_service_handler() -> Any:
    """The gRPC UserService.GetUser handler (messages are ``google.protobuf.Struct``)."""
    import grpc
    from google.protobuf.struct_pb2 import Struct

    def get_user(request: Struct, context: Any) -> Struct:
        reply = Struct()
        reply.update({"user_id": request["user_id"], "email": f"{request['user_id']}@example.com"})
        return reply

    handler = grpc.unary_unary_rpc_method_handler(
        get_user, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
    )
    return grpc.method_handlers_generic_handler("users.v1.UserService", {"GetUser": handler})
