"""Trails for the viewer tests, made by the real pipeline (spans as the instrumentations emit them → processor →
fold → masking), and the kinds of lines a trail file can hold besides trails."""

from __future__ import annotations

import time
from typing import Any

import orjson

import gotrails_otel as gt

from .conftest import TrailHarness

HOSTILE = '</script><script>window.__pwned=1;alert(1)</script><img src=x onerror="window.__pwned=2">'


def make_trails(harness: TrailHarness) -> list[dict[str, Any]]:
    """Five trails in start order: a payment with every integration type, a failed payment, a slow health check,
    a gRPC server call and a Kafka record."""
    inst = harness.instrumented("old")
    with inst.fastapi_request("POST", "/v1/payments", "/v1/payments", 201):
        gt.set_metadata(user_id="u-123", merchant_id="m-789")
        with gt.step("ValidateRequest") as validate:
            validate.set_request({"amount": 150000})
        with gt.step("CreatePaymentUsecase"):
            inst.sqlalchemy("INSERT INTO payments (id, amount) VALUES (%(id)s, %(amount)s)")
            inst.redis("SET ? ?")
            inst.httpx("POST", "https://api.midtrans.com/v2/charge", 201)
            inst.kafka_send("payment.created", 3)
            inst.grpc_client("users.v1.UserService", "GetUser")
    harness.trails(1)
    with inst.fastapi_request("POST", "/v1/payments", "/v1/payments", 502):
        with gt.step("CreatePaymentUsecase"):
            inst.httpx("POST", "https://api.midtrans.com/v2/charge", 503)
        gt.record_error("midtrans.charge", "gateway answered 503")
    harness.trails(2)
    with inst.fastapi_request("GET", "/health", "/health", 200):
        time.sleep(0.03)
    harness.trails(3)
    with inst.grpc_server("users.v1.UserService", "GetUser"):
        pass
    harness.trails(4)
    with inst.kafka_consumer("payment.created", 2), gt.step("HandlePaymentCreated"):
        pass
    return harness.trails(5)


def hostile_trail(trail: dict[str, Any]) -> dict[str, Any]:
    """``trail`` with script, markup and terminal escapes planted in the values a viewer shows."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(trail))
    copy["trace_id"] = "hostile-trail-0001"
    copy["request_id"] = "hostile-trail-0001"
    copy["request"]["body"] = {"note": HOSTILE, "markup": "[bold red]not markup[/]"}
    copy["internal_steps"][0]["name"] = "Validate\x1b[2J\x1b]0;pwned\x07" + HOSTILE
    copy["metadata"] = {HOSTILE: "\u202ereversed", "ansi": "\x1b[31mred\x1b[0m"}
    copy["errors"] = [{"source": "<b>x</b>", "message": HOSTILE}]
    return copy


def junk_lines() -> list[bytes]:
    """Lines a trail file can hold besides version-1 trails, one per kind a viewer must report and skip."""
    return [
        b"INFO:     127.0.0.1:50514 - POST /v1/payments 201",
        b"[1, 2, 3]",
        b'{"chain":"5b0d0f8e6f2a4c1e9d3b7a6c5e4f3a2b","record":"gotrails.checkpoint","seq":7,"version":1}',
        b'{"version": 2, "timestamp": "2030-01-01T00:00:00.000Z", "trace_id": "future"}',
        b'{"version": 1, "trace_id": "half"}',
        b'{"level": "info", "message": "started"}',
    ]
