"""The leak classes of the attack review, planted through the real capture paths: FastAPI and Flask on loopback,
PostgreSQL, Redis, Kafka, gRPC and an HTTP upstream, with the default masking settings. One request per body shape
per framework; every planted secret is looked for in every exported trail, also decoded (base64, percent)."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
import uuid
from typing import Any

import httpx
import orjson
import pytest
import redis
import sqlalchemy as sa
from google.protobuf.struct_pb2 import Struct
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .services import ThreadServer
from .test_end_to_end import Backends, backends  # noqa: F401  (the fixture)

CARD = "4111111111111111"
CARD_2 = "5500005555555559"
FULL_WIDTH_CARD = "".join(chr(0xFF10 + int(d)) for d in "4012888888881881")
GH = "ghp_" + "AtTaCk0" * 5 + "x"
TELEGRAM = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDatk1"
SLACK_PATH = "T0ATTACK1/B0ATTACK2/atkSlackWebhookSecret01"
ACL_PW = "atk-acl-pw"

SECRETS = (
    "atk-path-token",  # route parameter
    "atk-state-pw",  # percent-encoded JSON in the query
    "atk-next-pw",  # a URL encoded twice in the query
    "atk-inner-pw",  # a URL inside a URL without encoding
    CARD,
    CARD_2,
    "4012888888881881",
    GH,
    "atk-b64-pw",
    "atk-pct-pw",
    "atk-escaped-pw",
    "atk-csv-key",
    SLACK_PATH,
    TELEGRAM,
    "atk-soap-pw",
    "atk-utf16-pw",
    "atk-gql-pw",
    "atk-mp-pw",
    "atk-csrf-token",
    "atk-meta-token",
    "atk-sql-select",
    "atk-sql-alias",
    "atk-sql-case",
    "atk-sql-array",
    "atk-sql-portal",
    "atk-redis-masterauth",
    ACL_PW,
    hashlib.sha256(ACL_PW.encode()).hexdigest(),
    "atk-redis-mset",
    "atk-redis-sadd",
    "atk-redis-otp",
    "atk-redis-eval",
    "atk-redis-xadd",
    "atk-kafka-b64",
)


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def _reset_body() -> dict[str, Any]:
    return {
        "user": "ann",
        "wallet": {CARD: {"label": "main"}, CARD_2: True},  # keys that are card numbers
        "note": f"card {FULL_WIDTH_CARD} typed on a phone",  # full-width digits
        "push": {"message": {"data": _b64({"password": "atk-b64-pw"})}},  # a Pub/Sub push message
        "cookie_state": urllib.parse.quote(json.dumps({"password": "atk-pct-pw"})),
        "log": 'upstream said {\\"password\\": \\"atk-escaped-pw\\"}',  # JSON inside a JSON string in text
        "export": f"id,card,key\n1,{CARD},x\n2,3,api_key=atk-csv-key\n",
        "hooks": [f"https://hooks.slack.com/services/{SLACK_PATH}"],
        "deploy_key": {GH: "ci"},
    }


def attack_integrations(b: Backends, gateway: str, token: str) -> str:
    """What a handler does with what it received: every integration, with the secrets in the shapes of the review."""
    suffix = uuid.uuid4().hex[:6]
    with b.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO atk_users (email, password) SELECT :e, :p"),
            {"e": f"a-{suffix}", "p": "atk-sql-select"},
        )
        conn.execute(sa.text("SELECT :p AS password"), {"p": "atk-sql-alias"})
        conn.execute(
            sa.text("UPDATE atk_users SET password = CASE WHEN email = :e THEN :p ELSE password END"),
            {"e": f"a-{suffix}", "p": "atk-sql-case"},
        )
        conn.exec_driver_sql("INSERT INTO atk_arrays (tags, tokens) VALUES (%s, %s)", (["x"], ["atk-sql-array"]))
    try:
        with b.engine.begin() as conn:
            conn.execute(sa.text("SET log_parameter_max_length_on_error = -1"))
            conn.execute(sa.text("SELECT CAST(:p AS integer) AS pin"), {"p": "atk-sql-portal"})
    except sa.exc.DataError:
        pass
    kwargs = b.cache.connection_pool.connection_kwargs
    admin = redis.Redis(host=kwargs["host"], port=kwargs["port"])
    admin.config_set("masterauth", "atk-redis-masterauth")
    admin.config_get("masterauth")
    # redis-py's helpers send "ACL SETUSER", "CONFIG SET" … as one command name
    admin.acl_setuser(f"atk-{suffix}", enabled=True, passwords=[f"+{ACL_PW}"], keys=["*"], commands=["+@all"])
    admin.acl_getuser(f"atk-{suffix}")
    admin.acl_list()
    admin.acl_deluser(f"atk-{suffix}")
    admin.mset({f"user:{suffix}:token": "atk-redis-mset", f"user:{suffix}:name": "ann"})
    admin.sadd(f"user:{suffix}:tokens", "atk-redis-sadd")
    admin.set(f"otp:{suffix}", "atk-redis-otp")
    admin.getdel(f"otp:{suffix}")
    admin.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, f"u:{suffix}:api_key", "atk-redis-eval")
    admin.xadd(f"logins:{suffix}", {"user": "ann", "otp": "atk-redis-xadd"})
    admin.xrange(f"logins:{suffix}")
    admin.close()
    nested = urllib.parse.quote(urllib.parse.quote("https://u:atk-next-pw@idp.example/x", safe=""), safe="")
    with httpx.Client() as client:
        client.post(
            f"{gateway}/bot{TELEGRAM}/sendMessage?next={nested}&back=https://u:atk-inner-pw@idp.example/cb",
            json={"chat_id": 1, "text": "hello"},
        )
    b.producer.send(b.topic, key=CARD.encode(), value=_b64({"password": "atk-kafka-b64"}).encode())
    request = Struct()
    request.update({"user_id": "u-1", "cards": {CARD: "primary"}})
    b.users(request)
    return (
        '<html><head><meta name="csrf-token" content="atk-meta-token"></head><body><form>'
        f'<input type="hidden" name="csrf_token" value="atk-csrf-token"><input name="t" value="{token[:3]}">'
        "</form></body></html>"
    )


SOAP = (
    b'<?xml version="1.0"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Header>'
    b"<wsse:Security><wsse:UsernameToken><wsse:Username>ann</wsse:Username>"
    b'<wsse:Password Type="PasswordText">atk-soap-pw</wsse:Password></wsse:UsernameToken></wsse:Security>'
    b"</soap:Header><soap:Body><Charge><Amount>10</Amount></Charge></soap:Body></soap:Envelope>"
)
GRAPHQL = {
    "query": "mutation Login($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
    "variables": {"e": "a@b.c", "p": "atk-gql-pw"},
}
MULTIPART = (
    b"--AtkB0undary\r\nContent-Disposition: form-data; name*=UTF-8''pass%77ord\r\n\r\natk-mp-pw\r\n"
    b'--AtkB0undary\r\nContent-Disposition: form-data; name="user"\r\n\r\nann\r\n--AtkB0undary--\r\n'
)
MAX_BODY = 4096


def _cut_through_a_card() -> bytes:
    """A JSON body whose capture limit falls in the middle of a card number, under a key that is not sensitive."""
    prefix, suffix = b'{"order": "o-1", "pad": "', b'", "ref": "'
    head = prefix + b"x" * (MAX_BODY - 9 - len(prefix) - len(suffix)) + suffix  # the cut keeps 9 of its digits
    body = head + CARD_2.encode() + b'", "tail": "' + b"y" * 500 + b'"}'
    assert len(head) < MAX_BODY < len(head) + len(CARD_2)
    return body


@pytest.mark.service
def test_attack_review_leak_classes_end_to_end(make_harness: Any, backends: Backends) -> None:  # noqa: F811
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
    from flask import Flask
    from flask import request as flask_request

    with backends.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS atk_users"))
        conn.execute(sa.text("DROP TABLE IF EXISTS atk_arrays"))
        conn.execute(sa.text("CREATE TABLE atk_users (email TEXT, password TEXT)"))
        conn.execute(sa.text("CREATE TABLE atk_arrays (tags TEXT[], tokens TEXT[])"))

    async def bot(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    upstream = ThreadServer(Starlette(routes=[Route("/{path:path}", bot, methods=["POST"])]), "asgi")
    h = make_harness(capture_cache_values=True, max_body_bytes=MAX_BODY)

    fastapi_app = FastAPI()

    @fastapi_app.post("/v1/reset/{token}")
    def fastapi_reset(token: str, payload: dict[str, Any]) -> HTMLResponse:
        return HTMLResponse(attack_integrations(backends, upstream.url, token))

    @fastapi_app.post("/v1/raw")
    async def fastapi_raw(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    flask_app = Flask("attacks")

    @flask_app.post("/v1/reset/<token>")
    def flask_reset(token: str) -> Any:
        flask_request.get_json()
        return attack_integrations(backends, upstream.url, token), 200, {"content-type": "text/html"}

    @flask_app.post("/v1/raw")
    def flask_raw() -> Any:
        return {"size": len(flask_request.get_data())}

    state = urllib.parse.quote(json.dumps({"password": "atk-state-pw"}))
    try:
        for app, kind in ((fastapi_app, "asgi"), (flask_app, "wsgi")):
            server = ThreadServer(app, kind)
            try:
                reply = httpx.post(
                    f"{server.url}/v1/reset/atk-path-token?state={state}",
                    json=_reset_body(),
                    headers={"X-Request-ID": CARD_2},  # a client that sends a card number as its request id
                )
                assert "atk-csrf-token" in reply.text  # the application itself is untouched
                raw = f"{server.url}/v1/raw"
                for content, content_type in (
                    (SOAP, "text/xml"),
                    (json.dumps({"user": "ann", "password": "atk-utf16-pw"}).encode("utf-16"), "application/json"),
                    (orjson.dumps(GRAPHQL), "application/json"),
                    (MULTIPART, "multipart/form-data; boundary=AtkB0undary"),
                    (_cut_through_a_card(), "application/json"),
                ):
                    assert httpx.post(raw, content=content, headers={"content-type": content_type}).status_code == 200
            finally:
                server.close()
    finally:
        upstream.close()
    trails = h.trails(14, timeout=20)  # per framework: the reset request, its gRPC server trail, five raw bodies
    raw_trails = orjson.dumps(trails).decode()
    for secret in SECRETS:
        for form in _readable_forms(raw_trails):
            assert secret not in form, f"{secret} leaked: {_debug_where(form, secret)}"
    resets = [t for t in trails if str(t["request"].get("path", "")).startswith("/v1/reset/")]
    assert len(resets) == 2
    for trail in resets:
        assert trail["request"]["path"] == "/v1/reset/***"
        redacted = trail["redacted"]
        for kind in ("path_parameter", "card", "markup", "redis_credential", "sql_argument", "driver_message"):
            assert redacted.get(kind), (kind, redacted)
        body = trail["request"]["body"]
        assert body["user"] == "ann" and set(body["wallet"]) == {"***", "*** (2)"}
    cut = [t for t in trails if "$truncated" in orjson.dumps(t["request"].get("body")).decode()]
    assert len(cut) == 2 and all(t["redacted"].get("cut") for t in cut)


def _readable_forms(text: str) -> list[str]:
    """The exported text, and what an attacker reads out of it: percent-decoded (twice) and its base64 strings."""
    forms = [text, urllib.parse.unquote(text), urllib.parse.unquote(urllib.parse.unquote(text))]
    for word in text.replace('"', " ").replace("\\", " ").split():
        if len(word) >= 16 and word[:3] in ("eyJ", "W3s", "WyJ"):
            try:
                forms.append(base64.b64decode(word + "==").decode("utf-8", "replace"))
            except ValueError:
                continue
    return forms


def _debug_where(text: str, secret: str) -> str:
    """Where a leaked secret sits in the exported text (for the failure message)."""
    at = text.find(secret)
    return text[max(0, at - 400) : at + 100]
