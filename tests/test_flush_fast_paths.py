"""The flush side's fast paths give exactly what the slow, obvious ways give: the canonical form without the
reference implementation, the one walk that converts, masks and limits captured values."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from gotrails_otel import integrity
from gotrails_otel.fold import FoldInput, fold
from gotrails_otel.integrity import canonical
from gotrails_otel.redact import Policy
from gotrails_otel.store import BodyCapture

# Text that looks like what the canonical check looks for: hex ids (a UUID's "9b0e-2a6f"), exponents and integral
# floats inside strings, characters outside the Basic Multilingual Plane and in the private use area.
_LOOKALIKE = st.sampled_from(
    [
        "7b6d7e3c-0f5e-4b7b-9b0e-2a6f4c1d9e11",
        "1e+16",
        ":1e-7",
        "[2.0]",
        "a,1.0,",
        "version 1.0",
        ":1234567890123456789",
        "\U0001f600",
        "\ue000",
        'q"\\:',
        "x\U0001f600y",
    ]
)
_TEXT = st.text() | _LOOKALIKE | st.lists(_LOOKALIKE, max_size=3).map("".join)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=30,
)


@given(_JSON)
@settings(max_examples=1500, deadline=None)
def test_canonical_equals_the_reference_with_lookalikes(value: Any) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "document",
    [
        {"transaction_id": "7b6d7e3c-0f5e-4b7b-9b0e-2a6f4c1d9e11", "latency_ms": 12.345},
        {"note": "v1.0, then 2.0", "items": ["1e+16", "x-1e-7", "-2.0"]},
        {"text": "\U0001f600 in a value", "\ue000": 1, "a": [0.5, -3, "e+"]},
        {"hash": "0e+0e-9e" * 8, "ids": ["00000000000000000000"]},
    ],
)
def test_canonical_skips_the_reference_for_lookalikes_inside_strings(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = rfc8785.dumps(document)

    def refused(value: Any) -> bytes:
        raise AssertionError("the reference implementation was used")

    monkeypatch.setattr(integrity, "_reference", refused)
    assert canonical(document) == expected


@pytest.mark.parametrize(
    "document",
    [
        {"a": 1.0},
        {"a": [-0.0]},
        {"a": {"b": 1e16}},
        {"a": [1, 2, 1.5e-7]},
        {"a": 9007199254740991},
        {"\U0001f600": 1, "\ue000": 2},
        {"a": "x", 'k\U0001f600\\"': 1, "\ue000": 2},
    ],
)
def test_canonical_uses_the_reference_where_orjson_differs(document: dict[str, Any]) -> None:
    assert integrity._differs(integrity.orjson.dumps(document, option=integrity.orjson.OPT_SORT_KEYS))
    assert canonical(document) == rfc8785.dumps(document)


# ------------------------------------------------------------------------- the one walk over raw payloads


class _Text(str):
    """A ``str`` subclass (a StrEnum, markup text …) as a captured value."""


def _spans() -> list[ReadableSpan]:
    ended: list[ReadableSpan] = []

    class Keep(SimpleSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ended.append(span)

    provider = TracerProvider()
    provider.add_span_processor(Keep(ConsoleSpanExporter()))
    server = provider.get_tracer("opentelemetry.instrumentation.asgi")
    client = provider.get_tracer("opentelemetry.instrumentation.httpx")
    app = provider.get_tracer("app")
    attributes = {"http.method": "POST", "http.target": "/v1/pay?token=abc123&x=1", "http.route": "/v1/pay"}
    with server.start_as_current_span("POST /v1/pay", kind=SpanKind.SERVER, attributes=attributes):
        with app.start_as_current_span("Validate", attributes={"tags": ("a", "b"), "n": 3}):
            pass
        url = "https://user:pw@api.example.com/v2/charge?api_key=k1234567"
        with client.start_as_current_span(
            "POST", kind=SpanKind.CLIENT, attributes={"http.method": "POST", "http.url": url}
        ):
            pass
    return ended


_SPANS = _spans()
_SECRETS = st.sampled_from(
    [
        "4111111111111111",
        "card 4111 1111 1111 1111",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        "password=hunter2&user=bob",
        '{"password": "hunter2", "x": 1}',
        "https://bob:hunter2@db.example.com/x",
        "AKIAIOSFODNN7EXAMPLE",
        "plain words",
    ]
)
_KEYS = st.sampled_from(["password", "note", "token", "authorization", "items", "data", "id", "x-api-key"]) | st.text(
    max_size=8
)
_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.just(4111111111111111)
    | st.floats()
    | st.text(max_size=20)
    | _SECRETS
    | _SECRETS.map(_Text)
    | _SECRETS.map(str.encode)
    | st.binary(max_size=8)
)


def _body(value: Any) -> BodyCapture:
    body = BodyCapture(1 << 16, "application/json")
    body.add(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    return body


_PLAIN_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20) | _SECRETS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)
_VALUE = st.recursive(
    _LEAF | _PLAIN_JSON.map(_body),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        # Integer keys whose text no generated string key has: keys that collide once converted (1 and "1") keep
        # the same last value in both paths, but the one walk may count a secret under the key that is then
        # overwritten, which the conversion pass never sees; the trails are the same, their `redacted` counts not.
        | st.dictionaries(_KEYS | st.integers(10**9, 10**9 + 3), inner, max_size=4)
    ),
    max_leaves=20,
)
_SECTION = st.dictionaries(st.sampled_from(["body", "headers", "query", "message", "args", "value", "key"]), _VALUE)


@given(
    request=_SECTION,
    response=_SECTION,
    step=_SECTION,
    call=_SECTION,
    metadata=st.dictionaries(_KEYS, _VALUE, max_size=4),
)
@example(  # masked twice (the query string, then the request walked): counted once, however warm the caches are
    request={"query": "password=hunter2&user=bob"}, response={}, step={}, call={}, metadata={}
)
@settings(max_examples=300, deadline=None)
def test_a_raw_fold_masked_by_the_one_walk_equals_the_converted_fold_masked(
    request: dict[str, Any], response: dict[str, Any], step: dict[str, Any], call: dict[str, Any], metadata: Any
) -> None:
    root = next(s for s in _SPANS if s.parent is None)
    child = {s.name: s for s in _SPANS if s.parent is not None}
    assert root.context is not None
    captures = {
        root.context.span_id: {"request": request, "response": response},
        child["Validate"].context.span_id: {"request": step, "metadata": call},  # type: ignore[union-attr]
        child["POST"].context.span_id: {"request": call, "response": step},  # type: ignore[union-attr]
    }
    policy = Policy()
    trails = []
    for raw in (False, True):
        data = FoldInput(
            root=root,
            spans=[s for s in _SPANS if s is not root],
            captures=captures,
            metadata=metadata,
            now_ns=root.end_time or 0,
            raw=raw,
        )
        trails.append(orjson.dumps(policy.apply(fold(data))))  # JSON types only: orjson accepts no other
    assert trails[0] == trails[1]
    for secret in (b"hunter2", b"4111111111111111", b"4111 1111 1111 1111", b"AKIAIOSFODNN7EXAMPLE", b"c2lnbmF0"):
        assert secret not in trails[1]


def test_the_walk_masks_str_subclasses_tuples_and_bytes_as_text() -> None:
    card = "4111 1111 1111 1111"
    trail = Policy().apply(
        {"request": {"body": {"note": _Text(card), "list": (_Text(card), card.encode()), 1: {card.encode()}}}}
    )
    assert card not in orjson.dumps(trail).decode()
    assert trail["request"]["body"]["1"] == ["***"]


# ------------------------------------------------------------------------------ the total size, at the seal


@pytest.mark.parametrize("integrity", [True, False])
def test_the_total_size_is_fitted_with_the_one_serialisation_of_the_seal(make_harness: Any, integrity: bool) -> None:
    h = make_harness(max_trail_bytes=10_000, max_string_length=100_000, integrity=integrity)
    inst = h.instrumented()
    with inst.fastapi_request("POST", "/", "/", 200) as root:
        store = h.processor.captures
        store.update(root.get_span_context().span_id, "request", {"body": {"blob": "a" * 15_000, "pin": "1234"}})
        store.update(root.get_span_context().span_id, "response", {"body": {"blob": "b" * 500}})
    trail = h.one()
    (line,) = [r for r in h.exporter.get_finished_records() if "integrity" in r or not integrity]
    assert len(orjson.dumps(line)) <= 10_000
    assert trail["request"]["body"] == {"$trimmed": {"size": len(orjson.dumps({"blob": "a" * 15_000, "pin": "***"}))}}
    assert trail["response"]["body"] == {"blob": "b" * 500}
    assert trail["dropped"]["trimmed_payloads"] == 1
    assert trail["redacted"]["key"] == 1
    assert ("integrity" in trail) is integrity
    if integrity:
        assert verify_records([line])


def verify_records(records: list[Any]) -> bool:
    """Whether the one stamped trail's hash covers it as exported (its canonical form without the hash)."""
    trail = dict(records[0])
    block = dict(trail["integrity"])
    expected = block.pop("hash")
    trail["integrity"] = block
    return bool(integrity.digest(rfc8785.dumps(trail), None) == expected)


@given(st.text(max_size=30) | st.sampled_from(["x-api-key", "PassWord", "userPin", "card_no", "sessionid", "tokens"]))
@settings(max_examples=500, deadline=None)
def test_one_search_finds_a_sensitive_substring_as_each_search_would(key: str) -> None:
    policy = Policy(keys=Policy().keys | {"tenantsecret", "ab"})
    norm = key.lower()
    substrings: tuple[str, ...] = policy._substring  # type: ignore[attr-defined]
    assert policy._substring_search(norm) == any(k in norm for k in substrings)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "document",
    [
        {"sum": 0.30000000000000004, "lat": -6.175392041015625, "text": "1234567890123456789"},
        {"ids": ["a-1234567890123456789", "9b0e-2a6f"], "n": 123456789012345},
    ],
)
def test_canonical_keeps_long_fractions_and_digit_strings_on_the_fast_path(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = rfc8785.dumps(document)
    monkeypatch.setattr(integrity, "_reference", lambda value: pytest.fail("the reference implementation was used"))
    assert canonical(document) == expected
