"""requests (with urllib3 under it) and urllib3 alone against a real HTTP server: one integration per call, with
what was sent and received, secrets masked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import urllib3
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gotrails_otel.hooks import requests as requests_hooks
from gotrails_otel.hooks import urllib3 as urllib3_hooks

from .conftest import TrailHarness
from .services import ThreadServer, free_port

SECRETS = ("s3cr3t-token", "hunter2", "4111 1111 1111 1111", "4111111111111111")


async def charge(request: Request) -> Response:
    body = await request.json()
    if body.get("fail"):
        return JSONResponse({"error": "gateway down"}, status_code=503)
    return JSONResponse(
        {"transaction_id": "trx-456", "order_id": body["order_id"], "card_number": "4111111111111111"},
        status_code=201,
        headers={"x-upstream": "1"},
    )


async def stream(request: Request) -> Response:
    async def chunks() -> Any:
        for n in range(3):
            yield f'{{"chunk": {n}}}\n'.encode()

    return StreamingResponse(chunks(), media_type="application/x-ndjson")


async def big(request: Request) -> Response:
    return PlainTextResponse("x" * 10_000)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    app = Starlette(
        routes=[Route("/v2/charge", charge, methods=["POST"]), Route("/stream", stream), Route("/big", big)]
    )
    server = ThreadServer(app, "asgi")
    yield server
    server.close()


@pytest.fixture
def instrumented(semconv: str) -> Iterator[str]:
    RequestsInstrumentor().instrument(**requests_hooks.instrumentor_kwargs())
    URLLib3Instrumentor().instrument(**urllib3_hooks.instrumentor_kwargs())
    yield semconv
    URLLib3Instrumentor().uninstrument()
    RequestsInstrumentor().uninstrument()


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER)


def _no_secrets(trail: dict[str, Any]) -> None:
    text = json.dumps(trail)
    for secret in SECRETS:
        assert secret not in text, secret


@pytest.mark.service
def test_requests_post_is_one_integration_with_bodies(
    make_harness: Any, upstream: ThreadServer, instrumented: str
) -> None:
    h = make_harness(http_names=(("127.0.0.1/v2/charge", "midtrans.charge"),), headers_allow=("x-upstream",))
    with _root(h), requests.Session() as session:
        response = session.post(
            f"{upstream.url}/v2/charge",
            json={"order_id": "ord-789", "password": "hunter2", "card": "4111 1111 1111 1111"},
            headers={"Authorization": "Bearer s3cr3t-token", "X-Request-ID": "req-1"},
        )
        assert response.json()["transaction_id"] == "trx-456"  # the application still reads its response
    trail = h.one()
    (call,) = trail["integrations"]  # urllib3 underneath made no second integration
    assert call["type"] == "http" and call["name"] == "midtrans.charge"
    assert call["request"]["method"] == "POST"
    assert call["request"]["url"] == f"{upstream.url}/v2/charge"
    assert call["request"]["body"]["order_id"] == "ord-789"
    assert call["request"]["body"]["password"] == "***"
    assert call["request"]["headers"]["authorization"] == ["***"]
    assert call["request"]["headers"]["x-request-id"] == ["req-1"]
    assert "traceparent" not in call["request"]["headers"]
    assert call["response"]["status"] == 201
    assert call["response"]["headers"]["x-upstream"] == ["1"]
    assert call["response"]["body"]["transaction_id"] == "trx-456"
    assert call["response"]["body"]["card_number"] == "***"
    assert call["error"] is None
    _no_secrets(trail)


@pytest.mark.service
def test_requests_5xx_and_connection_error(harness: TrailHarness, upstream: ThreadServer, instrumented: str) -> None:
    port = free_port()
    with _root(harness):
        assert requests.post(f"{upstream.url}/v2/charge", json={"fail": True}, timeout=5).status_code == 503
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/nothing", timeout=5)
    trail = harness.one()
    failed, refused = trail["integrations"]
    assert failed["response"]["status"] == 503
    assert failed["response"]["body"] == {"error": "gateway down"}
    assert failed["error"]["message"] == "HTTP 503"
    assert refused["request"]["url"] == f"http://127.0.0.1:{port}/nothing"
    assert refused["error"]["type"].endswith("ConnectionError")
    assert [e["source"] for e in trail["errors"]] == [failed["name"], refused["name"]]


@pytest.mark.service
def test_requests_stream_records_what_the_application_reads(
    harness: TrailHarness, upstream: ThreadServer, instrumented: str
) -> None:
    with _root(harness):
        with requests.get(f"{upstream.url}/stream", stream=True, timeout=5) as response:
            lines = [json.loads(line) for line in response.iter_lines()]
        assert lines == [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}]

        def upload() -> Iterator[bytes]:
            yield b'{"order_id": '
            yield b'"ord-2"}'

        requests.post(f"{upstream.url}/v2/charge", data=upload(), headers={"content-type": "application/json"})
        unread = requests.get(f"{upstream.url}/big", stream=True, timeout=5)
        unread.close()  # never read: the trail does not wait for it
    trail = harness.one()
    streamed, uploaded, closed = trail["integrations"]
    assert streamed["response"]["body"]["$streamed"] is True
    assert streamed["response"]["body"]["read"] == '{"chunk": 0}\n{"chunk": 1}\n{"chunk": 2}\n'
    assert uploaded["request"]["body"] == {"$streamed": True, "size": None}
    assert uploaded["response"]["body"]["order_id"] == "ord-2"
    assert closed["response"]["body"] == {"$streamed": True, "size": None}
    assert trail["complete"] is True


@pytest.mark.service
def test_requests_body_over_the_limit_is_cut(make_harness: Any, upstream: ThreadServer, instrumented: str) -> None:
    h = make_harness(max_body_bytes=100)
    with _root(h):
        assert len(requests.get(f"{upstream.url}/big", timeout=5).text) == 10_000
    (item,) = h.one()["integrations"]
    assert item["response"]["body"] == {"$truncated": {"size": 10_000, "kept": 100, "text": "x" * 100 + "…"}}


@pytest.mark.service
def test_urllib3_alone(harness: TrailHarness, upstream: ThreadServer, instrumented: str) -> None:
    pool = urllib3.PoolManager()
    with _root(harness):
        response = pool.request(
            "POST",
            f"{upstream.url}/v2/charge",
            body=json.dumps({"order_id": "ord-3", "password": "hunter2"}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer s3cr3t-token"},
        )
        assert response.status == 201
        lazy = pool.request("GET", f"{upstream.url}/big", preload_content=False)
        assert len(lazy.read()) == 10_000
        lazy.release_conn()
    trail = harness.one()
    sent, lazy_item = trail["integrations"]
    assert sent["request"]["body"] == {"order_id": "ord-3", "password": "***"}
    assert sent["request"]["headers"]["authorization"] == ["***"]
    assert sent["response"]["status"] == 201
    assert sent["response"]["body"]["order_id"] == "ord-3"
    assert lazy_item["response"]["body"]["$streamed"] is True
    _no_secrets(trail)
    pool.clear()
