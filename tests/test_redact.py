"""Masking, size limits and hostile input: secrets never leave the process, bad input never breaks a trail."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gotrails_otel as gt
from gotrails_otel.body import decode_body
from gotrails_otel.capture import BodyCapture, headers_dict
from gotrails_otel.redact import Policy, luhn_valid

from .conftest import TrailHarness

CARD = "4111 1111 1111 1111"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEyMyJ9.c2lnbmF0dXJlLXZhbHVl"


def _trail(h: TrailHarness, request: dict[str, Any] | None = None, **captures: Any) -> dict[str, Any]:
    with h.instrumented().fastapi_request("POST", "/v1/payments", "/v1/payments", 201) as root:
        span_id = root.get_span_context().span_id
        if request is not None:
            h.processor.captures.update(span_id, "request", request)
        for key, value in captures.items():
            if key == "metadata":
                h.processor.add_metadata(span_id, value)  # what set_metadata() does
            else:
                h.processor.captures.update(span_id, key, value)
    return h.one()


def _no_secret(trail: dict[str, Any], *secrets: str) -> None:
    raw = orjson.dumps(trail)
    for secret in secrets:
        assert secret.encode() not in raw, f"{secret!r} leaked"


# ------------------------------------------------------------------------------------------ the defaults


def test_default_policy_masks_keys_everywhere(harness: TrailHarness) -> None:
    trail = _trail(
        harness,
        {
            "headers": {
                "authorization": [f"Bearer {JWT}"],
                "cookie": ["sid=abc"],
                "x-request-id": ["r-1"],
                "x-internal-debug": ["dropped-by-allow-list"],
            },
            "query": "user=ann&access_token=tok-q1&Password=pw-q2",
            "body": {
                "user": "ann",
                "Pass-Word": "pw-b1",
                "profile": {"contact": [{"API_KEY": "ak-b2", "phone": "555"}]},
                "card": {"cardNumber": "5500005555555559", "cvv": "123", "expiry": "12/30"},
                "client_secret": "cs-b3",
                "refresh-token": "rt-b4",
                "pin": "9876",
            },
        },
        response={"body": {"session": "s-r1", "id_token": "it-r2", "status": "ok"}},
    )
    request = trail["request"]
    assert request["headers"]["authorization"] == ["***"]
    assert request["headers"]["cookie"] == ["***"]
    assert request["headers"]["x-request-id"] == ["r-1"]
    assert "x-internal-debug" not in request["headers"]
    assert trail["dropped"]["headers"] == 1
    assert request["query"] == "user=ann&access_token=***&Password=***"
    body = request["body"]
    assert body["user"] == "ann" and body["profile"]["contact"][0]["phone"] == "555"
    assert body["card"]["expiry"] == "12/30"
    assert trail["response"]["body"] == {"session": "***", "id_token": "***", "status": "ok"}
    _no_secret(
        trail, "pw-b1", "ak-b2", "5500005555555559", "cs-b3", "rt-b4", "9876", "tok-q1", "pw-q2", "s-r1", "it-r2"
    )
    _no_secret(trail, "sid=abc", JWT)


def test_value_patterns_whatever_the_key(harness: TrailHarness) -> None:
    trail = _trail(
        harness,
        {
            "body": {
                "note": f"customer paid with {CARD} yesterday",
                "header_dump": f"Authorization: Bearer tok-{'z' * 20}",
                "idp_note": f"got {JWT} from idp",
                "basic": "Basic dXNlcjpwYXNzd29yZA==",
                "callback": "https://bob:hunter2@partner.example/cb",
                "order_number": "4111111111111112",  # not Luhn-valid: an ordinary number
                "epoch_ms": "1732770000000",
            }
        },
    )
    body = trail["request"]["body"]
    assert body["note"] == "customer paid with *** yesterday"
    assert body["header_dump"] == "Authorization: ***"
    assert body["idp_note"] == "got *** from idp"
    assert body["basic"] == "***"
    assert body["callback"] == "https://***@partner.example/cb"
    assert body["order_number"] == "4111111111111112"
    assert body["epoch_ms"] == "1732770000000"
    _no_secret(trail, "1111 1111 1111", "z" * 20, "dXNlcjpwYXNzd29yZA", "hunter2", JWT)


def test_sql_arguments_bound_to_sensitive_columns(harness: TrailHarness) -> None:
    inst = harness.instrumented()
    store = harness.processor.captures
    with inst.fastapi_request("POST", "/signup", "/signup", 201):
        for statement, args in (
            ("INSERT INTO users (email, password_hash, card_no) VALUES (?, ?, ?)", ["a@b.c", "h-1", "c-1"]),
            ("UPDATE users SET api_key = %s WHERE id = %s", ["k-2", 7]),
            ("UPDATE users SET pin = :pin_value WHERE id = :id", {"pin_value": "p-3", "id": 7}),
            ("INSERT INTO tokens (owner, secret) VALUES ($1, $2)", [["o", "s-4"], ["o", "s-5"]]),
        ):
            span = inst.sqlalchemy(statement)
            store.update(span.get_span_context().span_id, "request", {"args": args})
    trail = harness.one()
    args = [i["request"]["args"] for i in trail["integrations"]]
    assert args == [
        ["a@b.c", "***", "***"],
        ["***", 7],
        {"pin_value": "***", "id": 7},
        [["o", "***"], ["o", "***"]],
    ]
    _no_secret(trail, "h-1", "c-1", "k-2", "p-3", "s-4", "s-5")


def test_metadata_errors_and_step_payloads_are_masked(harness: TrailHarness) -> None:
    with harness.instrumented().fastapi_request("POST", "/", "/", 200):
        gt.set_metadata(user_id="u-1", auth_token="mt-1")
        with gt.step("Login") as s:
            s.set_request({"username": "ann", "password": "st-2"})
        gt.record_error("login", f"rejected credentials password=st-3 for card {CARD}")
    trail = harness.one()
    assert trail["metadata"] == {"user_id": "u-1", "auth_token": "***"}
    _no_secret(trail, "mt-1", "st-2", "st-3", "1111 1111 1111")


def test_configured_keys_patterns_and_field_rule(make_harness: Any) -> None:
    def rule(path: tuple[str, ...], value: Any) -> Any:
        if path[-1:] == ("email",) and isinstance(value, str):
            return value.split("@")[0][:1] + "…@" + value.split("@")[-1]
        if path[-1:] == ("explode",):
            raise RuntimeError("rule bug")
        return value

    h = make_harness(
        mask_keys=("tax_id", "-session"),
        mask_patterns=(r"EMP-\d{6}", "-card"),
        mask_field_rule=rule,
    )
    trail = _trail(
        h,
        {
            "body": {
                "TaxId": "t-123",
                "session": "visible-session",
                "employee": "badge EMP-123456",
                "card": CARD,
                "email": "ann@example.com",
                "explode": "fails closed",
            }
        },
    )
    body = trail["request"]["body"]
    assert body["TaxId"] == "***" and body["session"] == "visible-session"
    assert body["employee"] == "badge ***"
    assert body["card"] == CARD  # the card pattern was removed on purpose
    assert body["email"] == "a…@example.com"
    assert body["explode"] == "***"


def test_policy_from_environment_and_bad_patterns() -> None:
    config = gt.TrailConfig.from_env(
        {
            "GOTRAILS_MASK_KEYS": "national_id, -pin",
            "GOTRAILS_MASK_PATTERNS": '["ORD-\\\\d+", "-jwt"]',
            "GOTRAILS_HEADERS_ALLOW": "x-tenant",
            "GOTRAILS_HEADERS_DENY": "user-agent",
        }
    )
    policy = config.policy()
    assert policy.is_sensitive("National-ID") and not policy.is_sensitive("pin")
    assert policy.mask_text("order ORD-991 shipped") == "order *** shipped"
    assert JWT in policy.mask_text(f"token {JWT}")
    assert "x-tenant" in (policy.allowed_headers or ()) and "user-agent" in policy.denied_headers
    with pytest.raises(gt.ConfigError, match="GOTRAILS_MASK_PATTERNS"):
        gt.TrailConfig.from_env({"GOTRAILS_MASK_PATTERNS": "(unclosed"})
    with pytest.raises(gt.ConfigError, match="mask_patterns"):
        gt.TrailConfig(mask_patterns=("[bad",))


def test_all_headers_kept_with_star(make_harness: Any) -> None:
    h = make_harness(headers_allow=("*",))
    trail = _trail(h, {"headers": {"x-anything": ["1"], "authorization": ["Basic abcdefgh123"]}})
    assert trail["request"]["headers"] == {"x-anything": ["1"], "authorization": ["***"]}


# ----------------------------------------------------------------------------------------- size limits


def test_depth_items_and_string_limits(make_harness: Any) -> None:
    h = make_harness(max_depth=6, max_items=16, max_string_length=20)
    nested: Any = "bottom"
    for _ in range(50):
        nested = {"down": nested}
    trail = _trail(h, {"body": {"deep": nested, "many": list(range(23)), "long": "x" * 100}})
    body = trail["request"]["body"]
    assert body["many"] == [*range(16), {"$more_items": 7}]
    assert body["long"] == "x" * 20 + "…[+80 chars]"
    assert "[gotrails: nested too deep]" in json.dumps(body["deep"])
    assert trail["dropped"]["items"] == 7 and trail["dropped"]["string_chars"] == 80


def test_total_trail_size_trims_the_largest_payloads_first(make_harness: Any) -> None:
    h = make_harness(max_trail_bytes=10_000, max_string_length=100_000)
    inst = h.instrumented()
    with inst.fastapi_request("POST", "/", "/", 200) as root:
        store = h.processor.captures
        store.update(root.get_span_context().span_id, "request", {"body": {"blob": "a" * 15_000}})
        store.update(root.get_span_context().span_id, "response", {"body": {"blob": "b" * 9_000}})
        small = inst.httpx("POST", "https://partner.example/x", 200)
        store.update(small.get_span_context().span_id, "request", {"body": {"small": "kept"}})
    trail = h.one()
    assert len(orjson.dumps(trail)) <= 10_000
    assert trail["request"]["body"] == {"$trimmed": {"size": len(orjson.dumps({"blob": "a" * 15_000}))}}
    assert trail["response"]["body"] == {"$trimmed": {"size": len(orjson.dumps({"blob": "b" * 9_000}))}}
    assert trail["integrations"][0]["request"]["body"] == {"small": "kept"}
    assert trail["dropped"]["trimmed_payloads"] == 2


def test_a_huge_body_costs_no_memory_at_capture() -> None:
    body = BodyCapture(limit=65_536, content_type="application/json")
    chunk = b"z" * (1 << 20)
    tracemalloc.start()
    for _ in range(256):  # 256 MiB streamed through the capture
        body.add(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * (1 << 20)
    assert body.total == 256 << 20 and len(body.data()) == 65_536
    value = body.__gotrails_json__()
    assert value["$truncated"]["size"] == 256 << 20 and value["$truncated"]["kept"] == 65_536


# ------------------------------------------------------------------------------------------ body decoding


@pytest.mark.parametrize(
    ("raw", "content_type", "encoding", "expected"),
    [
        (b'{"a": 1}', "application/json", None, {"a": 1}),
        (b'{"a": 1}', "application/problem+json; charset=utf-8", None, {"a": 1}),
        (b"a=1&b=x+y&a=2", "application/x-www-form-urlencoded", None, {"a": ["1", "2"], "b": "x y"}),
        ("caf\u00e9".encode("latin-1"), "text/plain; charset=latin-1", None, "caf\u00e9"),
        (gzip.compress(b'{"z": true}'), "application/json", "gzip", {"z": True}),
        (zlib.compress(b"plain deflated"), "text/plain", "deflate", "plain deflated"),
        (b"not json {", "application/json", None, "not json {"),
        (b"", "application/json", None, None),
    ],
)
def test_body_decoding(raw: bytes, content_type: str, encoding: str | None, expected: Any) -> None:
    assert decode_body(raw, content_type, encoding, len(raw)) == expected


def test_binary_invalid_utf8_and_cut_json() -> None:
    binary = decode_body(b"\x89PNG\r\n\x1a\n\x00\xff", "image/png", None, 10)
    assert binary["$binary"]["size"] == 10 and len(binary["$binary"]["sha256"]) == 64
    assert "$binary" in decode_body(b"\xff\xfe\xfa", "text/plain", None, 3)
    cut = decode_body(b'{"user": "ann", "password": "hunter2", "no', "application/json", None, 500)
    assert cut["$truncated"]["kept"] == 42 and cut["$truncated"]["size"] == 500
    assert cut["$truncated"]["value"] == {"user": "ann", "password": "hunter2"}  # masked by key at flush
    assert "$undecodable" in decode_body(b"not gzip at all", "text/plain", "gzip", 15)


@given(st.binary(max_size=2048), st.sampled_from(["application/json", "text/plain", "", "x/y; charset=bogus"]))
@settings(max_examples=200, deadline=None)
def test_any_bytes_decode_without_error(raw: bytes, content_type: str) -> None:
    value = decode_body(raw, content_type, None, len(raw) + (len(raw) % 3))
    orjson.dumps(value)


def test_deeply_nested_input_is_bounded(harness: TrailHarness) -> None:
    deep_text = b"[" * 100_000 + b"]" * 100_000
    deep_object: Any = []
    for _ in range(100_000):
        deep_object = [deep_object]
    started = time.monotonic()
    body = BodyCapture(limit=1 << 20, content_type="application/json")
    body.add(deep_text)
    trail = _trail(harness, {"body": body}, metadata={"deep": deep_object})
    assert time.monotonic() - started < 5
    assert isinstance(trail["request"]["body"], str)  # too deep for JSON: kept as (cut) text
    assert "[gotrails: nested too deep]" in orjson.dumps(trail["metadata"]).decode()


# --------------------------------------------------------------------------------------- hostile input


def test_hostile_identifiers_and_header_values(harness: TrailHarness) -> None:
    headers = headers_dict([(b"X-Note", b"line1\r\nSet-Cookie: evil=1"), (b"X-Request-ID", b"\x00bad")])
    assert headers["x-note"] == ["line1\\x0d\\x0aSet-Cookie: evil=1"]

    class Weird:
        def __repr__(self) -> str:
            return "Weird()\r\nforged log line"

    trail = _trail(
        harness,
        {"headers": {"x-trace-id": ["t" * 500], "x-request-id": ["ok\nforged"]}},
        metadata={"obj": Weird(), 7: {1, 2}},
    )
    assert trail["trace_id"] == trail["otel"]["trace_id"]  # the oversize id was refused
    assert trail["request_id"] == trail["trace_id"]  # the CR/LF id was refused
    assert "\n" not in orjson.dumps(trail).decode().replace("\\n", "")


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("5500005555555559")
    assert not luhn_valid("4111111111111112")


# ------------------------------------------------------------------------------------ property-based

_KEY_SPELLINGS = [
    "password",
    "Password",
    "PASSWORD",
    "pass_word",
    "pass-word",
    "user_password",
    "passwd",
    "api_key",
    "Api-Key",
    "X-API-KEY",
    "apiKey",
    "access_token",
    "refreshToken",
    "client-secret",
    "Authorization",
    "card_number",
    "CardNumber",
    "cvv",
    "CVC",
    "ssn",
    "private_key",
    "session_id",
]
_plain_keys = st.text(alphabet="abcdefghijklmnoqrsuvwxyz", min_size=1, max_size=8).filter(
    lambda k: not Policy().is_sensitive(k)
)
_secrets = st.from_regex(r"S3cr3t[A-Za-z0-9]{12}", fullmatch=True)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(alphabet="abc xyz", max_size=10))


@st.composite
def planted(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """Arbitrary nested JSON with secrets planted at random depths under random key spellings."""
    secrets: list[str] = []

    def build(depth: int) -> Any:
        if depth == 0 or draw(st.integers(0, 3)) == 0:
            return draw(_scalars)
        if draw(st.booleans()):
            return [build(depth - 1) for _ in range(draw(st.integers(0, 3)))]
        node = {draw(_plain_keys): build(depth - 1) for _ in range(draw(st.integers(0, 3)))}
        if draw(st.integers(0, 2)) == 0:
            secret = draw(_secrets)
            secrets.append(secret)
            node[draw(st.sampled_from(_KEY_SPELLINGS))] = secret
        return node

    root = {draw(st.sampled_from(_KEY_SPELLINGS)): draw(_secrets), "data": build(draw(st.integers(1, 8)))}
    secrets.append(next(iter(root.values())))
    return root, secrets


@given(planted())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_planted_secret_survives_json(harness: TrailHarness, case: tuple[Any, list[str]]) -> None:
    document, secrets = case
    harness.exporter.clear()
    form = "&".join(f"{k}={v}" for k, v in document.items() if isinstance(v, str))
    body = BodyCapture(65_536, "application/json")
    body.add(orjson.dumps(document))
    trail = _trail(
        harness,
        {"body": body, "query": form, "headers": {k.lower(): [v] for k, v in document.items() if isinstance(v, str)}},
        response={"body": document},
        metadata={"echo": document},
    )
    _no_secret(trail, *secrets)


@given(
    st.lists(st.tuples(st.sampled_from(_KEY_SPELLINGS), _secrets), min_size=1, max_size=5),
    st.lists(st.tuples(_plain_keys, st.text(alphabet="abc123", max_size=6)), max_size=5),
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_planted_secret_survives_form_or_truncation(
    harness: TrailHarness, sensitive: list[tuple[str, str]], plain: list[tuple[str, str]]
) -> None:
    harness.exporter.clear()
    text = "&".join(f"{k}={v}" for k, v in [*plain, *sensitive])
    form = BodyCapture(65_536, "application/x-www-form-urlencoded")
    form.add(text.encode())
    cut = BodyCapture(len(text) // 2 + 1, "application/json")
    cut.add(orjson.dumps(dict(sensitive)))
    trail = _trail(harness, {"body": form}, response={"body": cut})
    _no_secret(trail, *(v for _, v in sensitive))
