"""httpx Client and AsyncClient against a real HTTP server: the trail holds what was sent and received."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gotrails_otel.hooks import httpx as httpx_hooks

from .conftest import TrailHarness
from .services import ThreadServer, free_port


async def charge(request: Request) -> Response:
    body = await request.json()
    if body.get("fail"):
        return JSONResponse({"error": "gateway down"}, status_code=503)
    return JSONResponse(
        {"transaction_id": "trx-456", "order_id": body["order_id"]}, status_code=201, headers={"x-upstream": "1"}
    )


async def stream(request: Request) -> Response:
    async def chunks() -> Any:
        for n in range(3):
            yield f"chunk-{n};".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def big(request: Request) -> Response:
    return PlainTextResponse("x" * 10_000)


async def moved(request: Request) -> Response:
    return Response(status_code=307, headers={"location": "/v2/charge"})


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    app = Starlette(
        routes=[
            Route("/v2/charge", charge, methods=["POST"]),
            Route("/stream", stream),
            Route("/big", big),
            Route("/moved", moved, methods=["POST"]),
        ]
    )
    server = ThreadServer(app, "asgi")
    yield server
    server.close()


@pytest.fixture
def instrumented(semconv: str) -> Iterator[str]:
    HTTPXClientInstrumentor().instrument(**httpx_hooks.instrumentor_kwargs())
    httpx_hooks.install()
    yield semconv
    HTTPXClientInstrumentor().uninstrument()
    httpx_hooks.uninstall()


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER)


@pytest.mark.service
def test_sync_client_request_and_response(make_harness: Any, upstream: ThreadServer, instrumented: str) -> None:
    h = make_harness(http_names=(("127.0.0.1/v2/charge", "midtrans.charge"),), headers_allow=("x-upstream",))
    with _root(h), httpx.Client() as client:
        response = client.post(
            f"{upstream.url}/v2/charge",
            json={"order_id": "ord-789", "gross_amount": 150000},
            headers={"Authorization": "Bearer s3cr3t-token", "X-Request-ID": "req-1"},
        )
        assert response.json()["transaction_id"] == "trx-456"  # the application still reads its response
    trail = h.one()
    (call,) = trail["integrations"]
    assert call["type"] == "http" and call["name"] == "midtrans.charge"
    assert call["request"]["method"] == "POST"
    assert call["request"]["url"] == f"{upstream.url}/v2/charge"
    assert call["request"]["body"] == {"order_id": "ord-789", "gross_amount": 150000}
    assert call["request"]["headers"]["authorization"] == ["***"]
    assert call["request"]["headers"]["x-request-id"] == ["req-1"]
    assert "traceparent" not in call["request"]["headers"]
    assert call["response"]["status"] == 201
    assert call["response"]["headers"]["x-upstream"] == ["1"]
    assert call["response"]["body"] == {"transaction_id": "trx-456", "order_id": "ord-789"}
    assert call["error"] is None
    assert "s3cr3t-token" not in str(trail)


@pytest.mark.service
def test_each_redirect_hop_has_the_headers_it_sent(
    harness: TrailHarness, upstream: ThreadServer, instrumented: str
) -> None:
    with _root(harness), httpx.Client(follow_redirects=True) as client:
        response = client.post(
            f"{upstream.url}/moved",
            json={"order_id": "ord-9"},
            headers={"Authorization": "Bearer s3cr3t-hop", "X-Request-ID": "req-9"},
        )
        assert response.status_code == 201 and len(response.history) == 1
    trail = harness.one()
    hops = trail["integrations"]
    assert [hop["response"]["status"] for hop in hops] == [307, 201]
    for hop in hops:
        assert hop["request"]["headers"]["x-request-id"] == ["req-9"]
        assert hop["request"]["headers"]["authorization"] == ["***"]
    assert hops[1]["response"]["body"] == {"transaction_id": "trx-456", "order_id": "ord-9"}
    assert "s3cr3t-hop" not in str(trail)


@pytest.mark.service
def test_async_client_and_per_request_name(harness: TrailHarness, upstream: ThreadServer, instrumented: str) -> None:
    async def call() -> None:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{upstream.url}/v2/charge",
                content=b'{"order_id": "ord-1"}',
                headers={"content-type": "application/json"},
                extensions={"gotrails.name": "partner.charge"},
            )
            assert response.status_code == 201

    with _root(harness):
        asyncio.run(call())
    (item,) = harness.one()["integrations"]
    assert item["name"] == "partner.charge"
    assert item["request"]["body"] == {"order_id": "ord-1"}
    assert item["response"]["body"] == {"transaction_id": "trx-456", "order_id": "ord-1"}


@pytest.mark.service
def test_http_5xx_is_an_error(harness: TrailHarness, upstream: ThreadServer, instrumented: str) -> None:
    with _root(harness), httpx.Client() as client:
        assert client.post(f"{upstream.url}/v2/charge", json={"fail": True}).status_code == 503
    trail = harness.one()
    (item,) = trail["integrations"]
    assert item["response"]["status"] == 503
    assert item["response"]["body"] == {"error": "gateway down"}
    assert item["error"]["message"] == "HTTP 503"
    assert [e["source"] for e in trail["errors"]] == [item["name"]]


@pytest.mark.service
def test_connection_refused_is_an_error(harness: TrailHarness, instrumented: str) -> None:
    port = free_port()
    with _root(harness), httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/nothing")
    trail = harness.one()
    (item,) = trail["integrations"]
    assert item["request"]["url"] == f"http://127.0.0.1:{port}/nothing"
    assert item["error"]["type"].endswith("ConnectError")
    assert item["response"]["body"] is None
    assert trail["errors"][0]["source"] == item["name"]
    assert trail["complete"] is True  # the hold was released although send raised


@pytest.mark.service
def test_streamed_response_is_marked_not_consumed(
    harness: TrailHarness, upstream: ThreadServer, instrumented: str
) -> None:
    with _root(harness), httpx.Client() as client:
        with client.stream("GET", f"{upstream.url}/stream") as response:
            assert b"".join(response.iter_bytes()) == b"chunk-0;chunk-1;chunk-2;"

        def upload() -> Any:
            yield b"part-1"
            yield b"part-2"

        client.post(f"{upstream.url}/v2/charge", content=upload(), headers={"content-type": "application/json"})
    trail = harness.one()
    streamed, uploaded = trail["integrations"]
    assert streamed["response"]["body"]["$streamed"] is True
    assert uploaded["request"]["body"]["$streamed"] is True


@pytest.mark.service
def test_body_over_the_limit_is_cut_at_capture(make_harness: Any, upstream: ThreadServer, instrumented: str) -> None:
    h = make_harness(max_body_bytes=100)
    with _root(h), httpx.Client() as client:
        assert len(client.get(f"{upstream.url}/big").text) == 10_000
    (item,) = h.one()["integrations"]
    assert item["response"]["body"] == {"$truncated": {"size": 10_000, "kept": 100, "text": "x" * 100 + "…"}}


@pytest.mark.service
def test_outside_a_trail_nothing_is_held(harness: TrailHarness, upstream: ThreadServer, instrumented: str) -> None:
    with httpx.Client() as client:
        assert client.get(f"{upstream.url}/big").status_code == 200
    harness.settle(0.01)
    assert harness.exporter.get_finished_trails() == []
