"""The seed's payment example end to end: one FastAPI request and one Flask request that validate (step), insert
into PostgreSQL, SET in Redis, POST to an HTTP upstream, produce to Kafka and call a gRPC UserService — each gives
one trail holding all of it with the real values, valid against the schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import orjson
import pytest
import redis
import sqlalchemy as sa
from google.protobuf.struct_pb2 import Struct
from kafka import KafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import gotrails_otel as gt
from gotrails_otel.hooks import instrument_libraries, uninstrument_libraries

from .conftest import TrailHarness
from .services import ThreadServer, free_port

USER_SERVICE = "users.v1.UserService"


async def gateway_charge(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse(
        {"transaction_id": "trx-456", "transaction_status": "pending", "order_id": body["order_id"]}, status_code=201
    )


def get_user(request: Struct, context: grpc.ServicerContext) -> Struct:
    reply = Struct()
    reply.update({"user_id": request["user_id"], "email": "user@email.com"})
    return reply


@dataclass
class Backends:
    engine: sa.Engine
    cache: redis.Redis
    gateway: str
    producer: KafkaProducer
    users: Any
    topic: str


@pytest.fixture
def backends(postgres_service: Any, redis_service: Any, kafka_service: Any, semconv: str) -> Iterator[Backends]:
    assert set(instrument_libraries()) >= {
        "fastapi",
        "flask",
        "httpx",
        "sqlalchemy",
        "redis",
        "grpc_client",
        "grpc_server",
        "kafka",
    }
    gateway = ThreadServer(Starlette(routes=[Route("/v2/charge", gateway_charge, methods=["POST"])]), "asgi")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(
        get_user, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(USER_SERVICE, {"GetUser": handler}),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    engine = sa.create_engine(postgres_service.url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS payments"))
        conn.execute(sa.text("CREATE TABLE payments (id VARCHAR(20) PRIMARY KEY, amount INTEGER, method TEXT)"))
    backends = Backends(
        engine=engine,
        cache=redis.Redis.from_url(redis_service.url),
        gateway=gateway.url,
        producer=KafkaProducer(bootstrap_servers=kafka_service.url),
        users=channel.unary_unary(
            f"/{USER_SERVICE}/GetUser",
            request_serializer=Struct.SerializeToString,
            response_deserializer=Struct.FromString,
        ),
        topic=f"payment.created.{uuid.uuid4().hex[:6]}",
    )
    yield backends
    backends.producer.close()
    backends.cache.close()
    engine.dispose()
    channel.close()
    server.stop(grace=None)
    gateway.close()
    uninstrument_libraries()


def create_payment(b: Backends, payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The seed's payment use case, written as a service would write it: no logging code."""
    with gt.step("ValidateRequest"):
        if payload.get("amount", 0) <= 0:
            return {"error": "amount must be positive"}, 422
    gt.set_metadata(user_id=payload["user_id"], merchant_id="m-789", order_id="ord-789")
    with gt.step("CreatePaymentUsecase"):
        with b.engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO payments (id, amount, method) VALUES (:id, :amount, :method)"),
                {"id": "pay-123", "amount": payload["amount"], "method": payload["payment_method"]},
            )
        b.cache.set("payment:pay-123", "PENDING")
        with httpx.Client() as client:
            client.post(
                f"{b.gateway}/v2/charge",
                json={"order_id": "ord-789", "gross_amount": payload["amount"]},
                headers={"Authorization": "Basic bWlkdHJhbnM6c2VjcmV0"},
                extensions={"gotrails.name": "midtrans.charge"},
            )
        b.producer.send(b.topic, key=b"pay-123", value=b'{"payment_id": "pay-123", "status": "PENDING"}')
        request = Struct()
        request.update({"user_id": payload["user_id"]})
        user = b.users(request)
    return {"payment_id": "pay-123", "status": "PENDING", "email": user["email"]}, 201


def assert_payment_trail(trail: dict[str, Any], b: Backends) -> None:
    assert trail["request"]["method"] == "POST" and trail["request"]["path"] == "/v1/payments"
    assert trail["request"]["body"] == {"amount": 150000, "payment_method": "bank_transfer", "user_id": "u-123"}
    assert trail["response"]["status"] == 201
    assert trail["response"]["body"] == {"payment_id": "pay-123", "status": "PENDING", "email": "user@email.com"}
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest", "CreatePaymentUsecase"]
    assert trail["metadata"] == {"user_id": "u-123", "merchant_id": "m-789", "order_id": "ord-789"}
    assert trail["errors"] == [] and trail["status"] == "ok" and trail["complete"] is True
    by_type = {i["type"]: i for i in trail["integrations"]}
    assert [i["type"] for i in trail["integrations"]] == ["database", "cache", "http", "kafka", "grpc"]
    db = by_type["database"]
    assert db["name"] == "postgres.payments.insert"
    assert db["request"]["args"] == {"id": "pay-123", "amount": 150000, "method": "bank_transfer"}
    assert db["response"] == {"rows_affected": 1}
    assert by_type["cache"]["name"] == "redis.set"
    assert by_type["cache"]["request"] == {"command": "SET", "key": "payment:pay-123"}
    assert by_type["cache"]["response"] == {"status": "OK"}
    http = by_type["http"]
    assert http["name"] == "midtrans.charge"
    assert http["request"]["body"] == {"order_id": "ord-789", "gross_amount": 150000}
    assert http["request"]["headers"]["authorization"] == ["***"]
    assert http["response"]["status"] == 201
    assert http["response"]["body"]["transaction_id"] == "trx-456"
    kafka = by_type["kafka"]
    assert kafka["name"] == b.topic
    assert kafka["request"]["key"] == "pay-123"
    assert kafka["request"]["value"] == {"payment_id": "pay-123", "status": "PENDING"}
    assert kafka["response"]["offset"] is not None and kafka["response"]["partition"] is not None
    grpc_call = by_type["grpc"]
    assert grpc_call["name"] == "UserService.GetUser"
    assert grpc_call["request"]["message"] == {"user_id": "u-123"}
    assert grpc_call["response"]["message"] == {"user_id": "u-123", "email": "user@email.com"}
    for item in trail["integrations"]:
        assert item["latency_ms"] >= 0 and item["start_offset_ms"] >= 0
    assert "bWlkdHJhbnM6c2VjcmV0" not in str(trail)


def _payment_trail(h: TrailHarness) -> dict[str, Any]:
    trails = h.trails(2, timeout=10)  # the payment request and the gRPC server's own trail
    (trail,) = [t for t in trails if t["entry"]["kind"] == "http"]
    (server,) = [t for t in trails if t["entry"]["kind"] == "grpc"]
    assert server["otel"]["trace_id"] == trail["otel"]["trace_id"]
    return trail


PAYLOAD = {"amount": 150000, "payment_method": "bank_transfer", "user_id": "u-123"}


@pytest.mark.service
def test_fastapi_payment_request(harness: TrailHarness, backends: Backends) -> None:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse as FastJSON

    app = FastAPI()  # created after instrument_libraries(), as under opentelemetry-instrument

    @app.post("/v1/payments")
    def payments(payload: dict[str, Any]) -> FastJSON:
        body, status = create_payment(backends, payload)
        return FastJSON(body, status_code=status)

    server = ThreadServer(app, "asgi")
    try:
        response = httpx.post(f"{server.url}/v1/payments", json=PAYLOAD, headers={"X-Trace-ID": "pay-flow-1"})
        assert response.status_code == 201
    finally:
        server.close()
    trail = _payment_trail(harness)
    assert trail["trace_id"] == "pay-flow-1"
    assert trail["request"]["route"] == "/v1/payments"
    assert_payment_trail(trail, backends)


@pytest.mark.service
def test_flask_payment_request(harness: TrailHarness, backends: Backends) -> None:
    from flask import Flask, jsonify, request

    app = Flask("payments")  # created after instrument_libraries()

    @app.post("/v1/payments")
    def payments() -> Any:
        body, status = create_payment(backends, request.get_json())
        return jsonify(body), status

    server = ThreadServer(app, "wsgi")
    try:
        assert httpx.post(f"{server.url}/v1/payments", json=PAYLOAD).status_code == 201
    finally:
        server.close()
    assert_payment_trail(_payment_trail(harness), backends)


PASSWORD = "Pw-9f8e7d6c5b4a"
TOKEN = "tok_4c1d2e3f4a5b6c7d8e9f"
CARD_NUMBER = "4111 1111 1111 1111"
SECRET_PAYLOAD = {"user_id": "u-123", "password": PASSWORD, "card_number": CARD_NUMBER, "note": f"Bearer {TOKEN}"}


def leak_everywhere(b: Backends, payload: dict[str, Any]) -> dict[str, Any]:
    """A handler that sends the secrets it received through every integration."""
    with b.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO payments (id, amount, method) VALUES (:id, :amount, :method)"),
            {"id": f"pay-{uuid.uuid4().hex[:6]}", "amount": 1, "method": f"card {payload['card_number']}"},
        )
    b.cache.set("login:u-123", json.dumps({"password": payload["password"]}))
    with httpx.Client() as client:
        client.post(
            f"{b.gateway}/v2/charge",
            json={"order_id": "ord-1", "card_number": payload["card_number"], "password": payload["password"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    b.producer.send(b.topic, key=b"u-123", value=json.dumps({"password": payload["password"]}).encode())
    request = Struct()
    request.update({"user_id": "u-123", "password": payload["password"], "note": f"card {payload['card_number']}"})
    b.users(request, metadata=(("authorization", f"Bearer {TOKEN}"),))
    return {"access_token": TOKEN, "card": payload["card_number"]}


def _assert_no_secret(trails: list[dict[str, Any]]) -> None:
    raw = orjson.dumps(trails)
    for secret in (PASSWORD, TOKEN, CARD_NUMBER, CARD_NUMBER.replace(" ", "")):
        assert secret.encode() not in raw, f"{secret} leaked"


@pytest.mark.service
def test_secrets_never_leave_through_any_capture_path(make_harness: Any, backends: Backends) -> None:
    from fastapi import FastAPI
    from flask import Flask, jsonify, request

    h = make_harness(capture_cache_values=True)
    fastapi_app = FastAPI()

    @fastapi_app.post("/v1/login")
    def fastapi_login(payload: dict[str, Any]) -> dict[str, Any]:
        return leak_everywhere(backends, payload)

    flask_app = Flask("login")

    @flask_app.post("/v1/login")
    def flask_login() -> Any:
        return jsonify(leak_everywhere(backends, request.get_json()))

    for app, kind in ((fastapi_app, "asgi"), (flask_app, "wsgi")):
        server = ThreadServer(app, kind)
        try:
            response = httpx.post(
                f"{server.url}/v1/login?password={PASSWORD}",
                json=SECRET_PAYLOAD,
                headers={"Authorization": f"Bearer {TOKEN}", "Cookie": f"session={TOKEN}"},
            )
            assert response.json()["access_token"] == TOKEN  # the application itself is untouched
        finally:
            server.close()
    trails = h.trails(4, timeout=10)  # two login requests, two gRPC server requests
    logins = [t for t in trails if t["entry"]["kind"] == "http"]
    assert len(logins) == 2
    for trail in logins:
        assert trail["request"]["body"]["password"] == "***"
        assert [i["type"] for i in trail["integrations"]] == ["database", "cache", "http", "kafka", "grpc"]
    _assert_no_secret(trails)


# ----------------------------------------------------------------- round two: every leak path, end to end

GH_TOKEN = "ghp_" + "E2eToKeN0" * 4
AWS_KEY = "AKIAE2EQWERTYUIOPASD"
SLACK = "xoxb-2468013579-e2eslacktokenvalue"
STRIPE = "sk_live_E2eStripeSecret01234"
GOOGLE = "AIzaSyE2E-9tSrke72PouQMnMX-a7eZSW0jkFMx"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCE2E"
PHRASE = "correct horse battery staple"
API_KEY = "key-e2e-7f6e5d4c"
ROUND_TWO = {
    "user": "ann",
    "note": (
        f"deploy with {GH_TOKEN}, aws {AWS_KEY}, slack {SLACK}, stripe {STRIPE}, maps {GOOGLE}; "
        f"Authorization: token {API_KEY}-hdr; login password={PHRASE}, card {CARD_NUMBER}."
    ),
    "pem": f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----",
    "card": {"number": 4111111111111111, "card_cvv": "cvv-e2e-987", "PHPSESSID": "sess-e2e-1"},
    "links": ["redis://:redis-pw-e2e@cache:6379/0", "https://gh-user-token-e2e@github.example/x.git"],
    "event": json.dumps({"kind": "login", "credentials": {"password": "nested-pw-e2e"}}),
}
ROUND_TWO_SECRETS = (
    GH_TOKEN,
    AWS_KEY,
    SLACK,
    STRIPE,
    GOOGLE,
    PEM_BODY,
    "horse battery",
    API_KEY,
    "4111111111111111",
    "cvv-e2e-987",
    "sess-e2e-1",
    "redis-pw-e2e",
    "gh-user-token-e2e",
    "nested-pw-e2e",
    "q-pw-e2e",
    "q-tok-e2e",
    "url-pw-e2e",
    "url-sig-e2e",
    "url-goog-e2e",
    "url-key-e2e",
    "sql-pw-e2e",
    "sql-lit-e2e",
    "dup-key-e2e",
    "dup-pw-e2e",
    "redis-auth-e2e",
    "redis-hset-e2e",
    "redis-conf-e2e",
    "kafka-pw-e2e",
    "grpc-tok-e2e",
    "mp-pw-e2e",
    "mp-file-e2e",
    "cut-key-e2e",
    "cut-tok-e2e",
)


def leak_round_two(b: Backends, payload: dict[str, Any]) -> dict[str, Any]:
    """Sends what it received, and more secrets, through every capture path and error path."""
    suffix = uuid.uuid4().hex[:6]
    with b.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO e2e_users (email, password, api_key) VALUES (:e, md5(:p), :k)"),
            {"e": f"a-{suffix}@b.c", "p": "sql-pw-e2e", "k": f"k-{suffix}"},
        )
        conn.execute(sa.text(f"UPDATE e2e_users SET password = 'sql-lit-e2e' WHERE email = 'a-{suffix}@b.c'"))
    try:
        with gt.step("Signup"), b.engine.begin() as conn:  # the step fails: its exception text names the values
            for _ in range(2):
                conn.execute(
                    sa.text("INSERT INTO e2e_users (email, password, api_key) VALUES (:e, :p, :k)"),
                    {"e": f"d-{suffix}@b.c", "p": "dup-pw-e2e", "k": "dup-key-e2e"},
                )
    except sa.exc.IntegrityError:
        pass
    admin = redis.Redis(
        host=b.cache.connection_pool.connection_kwargs["host"], port=b.cache.connection_pool.connection_kwargs["port"]
    )
    admin.execute_command("ACL", "SETUSER", "e2e", "on", ">redis-auth-e2e", "~*", "&*", "+@all")
    admin.execute_command("AUTH", "e2e", "redis-auth-e2e")
    admin.hset("user:1", mapping={"email": "a@b.c", "password": "redis-hset-e2e"})
    admin.execute_command("CONFIG", "SET", "masterauth", "redis-conf-e2e")
    admin.close()
    with httpx.Client() as client:
        host = b.gateway.removeprefix("http://")
        client.post(
            f"http://url-user:url-pw-e2e@{host}/v2/charge?sig=url-sig-e2e&X-Goog-Signature=url-goog-e2e"
            "&api_key=url-key-e2e&page=1",
            json={"order_id": "ord-1", **payload},
        )
    b.producer.send(b.topic, key=b"u-1", value=json.dumps({"event": json.dumps({"password": "kafka-pw-e2e"})}).encode())
    request = Struct()
    request.update({"user_id": "u-123", "note": "Authorization: Bearer grpc-tok-e2e-0123"})
    b.users(request)
    return {"ok": True, "echo": payload}


def _client_upload() -> dict[str, Any]:
    return {
        "data": {"user": "ann", "password": "mp-pw-e2e"},
        "files": {"avatar": ("me.txt", b"mp-file-e2e " * 20, "text/plain")},
    }


def _cut_body() -> dict[str, Any]:
    return {"credentials": {"key": "cut-key-e2e", "tokens": ["cut-tok-e2e"]}, "padding": "x" * 8192}


@pytest.mark.service
def test_round_two_leak_paths_end_to_end(make_harness: Any, backends: Backends) -> None:
    from fastapi import FastAPI
    from flask import Flask, jsonify, request

    with backends.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS e2e_users"))
        conn.execute(sa.text("CREATE TABLE e2e_users (email TEXT, password TEXT, api_key TEXT UNIQUE)"))
    h = make_harness(capture_cache_values=True, max_body_bytes=4096)
    fastapi_app = FastAPI()

    @fastapi_app.post("/v1/signup")
    def fastapi_signup(payload: dict[str, Any]) -> dict[str, Any]:
        return leak_round_two(backends, payload)

    @fastapi_app.post("/v1/upload")
    async def fastapi_upload(request: Request) -> dict[str, Any]:
        form = await request.form()
        avatar = form["avatar"]
        size = len(await avatar.read())  # type: ignore[union-attr]
        return {"user": form["user"], "size": size}

    @fastapi_app.post("/v1/import")
    async def fastapi_import(request: Request) -> dict[str, Any]:
        return {"size": len(await request.body())}

    flask_app = Flask("signup")

    @flask_app.post("/v1/signup")
    def flask_signup() -> Any:
        return jsonify(leak_round_two(backends, request.get_json()))

    @flask_app.post("/v1/upload")
    def flask_upload() -> Any:
        return jsonify(user=request.form["user"], size=len(request.files["avatar"].read()))

    @flask_app.post("/v1/import")
    def flask_import() -> Any:
        return jsonify(size=len(request.get_data()))

    for app, kind in ((fastapi_app, "asgi"), (flask_app, "wsgi")):
        server = ThreadServer(app, kind)
        try:
            query = "user[password]=q-pw-e2e&user%5Btoken%5D=q-tok-e2e&page=1"
            response = httpx.post(f"{server.url}/v1/signup?{query}", json=ROUND_TWO)
            assert response.json()["echo"]["links"][0].startswith("redis://:redis-pw-e2e")  # the app is untouched
            upload = httpx.post(f"{server.url}/v1/upload", **_client_upload())
            assert upload.json() == {"user": "ann", "size": 240}
            assert httpx.post(f"{server.url}/v1/import", json=_cut_body()).json()["size"] > 8192
        finally:
            server.close()
    trails = h.trails(8, timeout=15)  # per framework: signup, upload, import, and the gRPC server's trail
    by_path: dict[str, list[dict[str, Any]]] = {}
    for trail in trails:
        by_path.setdefault(str(trail["request"].get("path") or trail["entry"]["kind"]), []).append(trail)
    for signup in by_path["/v1/signup"]:
        assert [i["type"] for i in signup["integrations"]][:3] == ["database", "database", "database"]
        assert any("[parameters: ***]" in e["message"] for e in signup["errors"]), signup["errors"]
        assert signup["request"]["query"] == "user[password]=***&user%5Btoken%5D=***&page=1"
        redacted = signup["redacted"]
        for kind in ("key", "github", "aws_access_key_id", "slack", "stripe", "google_api_key", "private_key"):
            assert redacted.get(kind), (kind, redacted)
        for kind in ("card", "url_userinfo", "url_query", "sql_argument", "sql_literal", "driver_message"):
            assert redacted.get(kind), (kind, redacted)
        assert redacted.get("redis_credential", 0) >= 3
    for upload in by_path["/v1/upload"]:
        body = upload["request"]["body"]
        assert body["password"] == "***" and body["user"] == "ann"
        assert body["avatar"] == {"filename": "me.txt", "content_type": "text/plain", "size": 240}
    for cut in by_path["/v1/import"]:
        value = cut["request"]["body"]["$truncated"]["value"]
        assert value["credentials"] == "***"
    raw = orjson.dumps(trails)
    for secret in ROUND_TWO_SECRETS:
        assert secret.encode() not in raw, f"{secret} leaked"
