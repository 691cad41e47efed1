"""aiohttp: the client (``ClientSession``) against a real HTTP server, an ``aiohttp.web`` application as trail
root in this process, and a service under ``opentelemetry-instrument`` (aiohttp server, aiohttp client, asyncpg)."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest
from aiohttp import web
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gotrails_otel.hooks import aiohttp_client as client_hooks
from gotrails_otel.hooks import aiohttp_server as server_hooks

from .conftest import TrailHarness
from .processes import APPS, AppProcess, start_apps
from .services import ThreadServer, free_port, wait_port

SECRETS = ("hunter2", "s3cr3t-token", "upstream-s3cret", "4111111111111111")


async def charge(request: Request) -> Response:
    body = await request.json()
    if body.get("fail"):
        return JSONResponse({"error": "gateway down"}, status_code=503)
    return JSONResponse({"transaction_id": "trx-9", "order_id": body["order_id"]}, status_code=201)


async def stream(request: Request) -> Response:
    async def chunks() -> Any:
        for n in range(3):
            yield f"part-{n};".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def big(request: Request) -> Response:
    return PlainTextResponse("y" * 5000)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    app = Starlette(
        routes=[Route("/v2/charge", charge, methods=["POST"]), Route("/stream", stream), Route("/big", big)]
    )
    server = ThreadServer(app, "asgi")
    yield server
    server.close()


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    yield from start_apps(tmp_path)


@pytest.fixture
def client(semconv: str) -> Iterator[str]:
    AioHttpClientInstrumentor().instrument(**client_hooks.instrumentor_kwargs())
    client_hooks.install()
    yield semconv
    client_hooks.uninstall()
    AioHttpClientInstrumentor().uninstrument()


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER)


def _no_secrets(trails: list[dict[str, Any]]) -> None:
    text = json.dumps(trails)
    for secret in SECRETS:
        assert secret not in text, secret


@pytest.mark.service
def test_client_request_and_response_bodies(harness: TrailHarness, upstream: ThreadServer, client: str) -> None:
    async def calls() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{upstream.url}/v2/charge",
                json={"order_id": "ord-1", "password": "hunter2", "card": "4111111111111111"},
                headers={"Authorization": "Bearer s3cr3t-token", "X-Request-ID": "req-a"},
            ) as response:
                assert (await response.json())["transaction_id"] == "trx-9"
            async with session.post(f"{upstream.url}/v2/charge", json={"fail": True}) as response:
                assert response.status == 503
                assert await response.text() == '{"error":"gateway down"}'
            async with session.get(f"{upstream.url}/stream") as response:
                assert [chunk async for chunk in response.content.iter_any()] != []
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://127.0.0.1:{free_port()}/nothing")

    with _root(harness):
        asyncio.run(calls())
    trail = harness.one()
    sent, failed, streamed, refused = trail["integrations"]
    assert sent["type"] == "http" and sent["request"]["method"] == "POST"
    assert sent["request"]["url"] == f"{upstream.url}/v2/charge"
    assert sent["request"]["body"] == {"order_id": "ord-1", "password": "***", "card": "***"}
    assert sent["request"]["headers"]["authorization"] == ["***"]
    assert sent["request"]["headers"]["x-request-id"] == ["req-a"]
    assert "traceparent" not in sent["request"]["headers"]
    assert sent["response"]["status"] == 201
    assert sent["response"]["body"] == {"transaction_id": "trx-9", "order_id": "ord-1"}
    assert failed["response"]["body"] == {"error": "gateway down"} and failed["error"]["message"] == "HTTP 503"
    assert streamed["response"]["body"]["$streamed"] is True
    assert refused["error"] is not None and refused["request"]["url"].endswith("/nothing")
    assert trail["complete"] is True
    _no_secrets([trail])


class AppThread:
    """An aiohttp.web application served by AppRunner on its own event loop in a thread."""

    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._stopped = threading.Event()
        self.runner: web.AppRunner | None = None

        async def start() -> None:
            self.runner = web.AppRunner(make_app())
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        self.loop.run_until_complete(start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        wait_port(self.port)

    def close(self) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def _shop_app() -> web.Application:
    async def order(request: web.Request) -> web.Response:
        payload = await request.json()
        if payload.get("amount", 0) <= 0:
            raise web.HTTPBadRequest(text="amount must be positive")
        return web.json_response({"order_id": request.match_info["oid"], "amount": payload["amount"]}, status=201)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/plain"})
        await response.prepare(request)
        for n in range(3):
            await response.write(f"line-{n}\n".encode())
        await response.write_eof()
        return response

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("token=s3cr3t-token leaked into an error")

    app = web.Application()
    app.router.add_post("/api/orders/{oid}", order)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/crash", crash)
    return app


@pytest.mark.service
def test_server_requests_are_trails(harness: TrailHarness, semconv: str) -> None:
    AioHttpServerInstrumentor().instrument()
    server_hooks.install()
    try:
        app = AppThread(_shop_app)  # the app is built after instrument(), as under opentelemetry-instrument
        try:
            created = httpx.post(
                f"{app.url}/api/orders/o-1?channel=web",
                json={"amount": 7, "password": "hunter2"},
                headers={"Authorization": "Bearer s3cr3t-token"},
            )
            assert created.status_code == 201
            assert httpx.post(f"{app.url}/api/orders/o-2", json={"amount": 0}).status_code == 400
            assert httpx.get(f"{app.url}/api/stream").text == "line-0\nline-1\nline-2\n"
            assert httpx.get(f"{app.url}/api/crash").status_code == 500
            trails = {(t["request"]["method"], t["request"]["path"]): t for t in harness.trails(4)}
        finally:
            app.close()
    finally:
        server_hooks.uninstall()
        AioHttpServerInstrumentor().uninstrument()
    ok = trails[("POST", "/api/orders/o-1")]
    assert ok["entry"]["kind"] == "http"
    assert ok["request"]["query"] == "channel=web"
    assert ok["request"]["route"] == "/api/orders/{oid}"
    assert ok["request"]["headers"]["authorization"] == ["***"]
    assert ok["request"]["body"] == {"amount": 7, "password": "***"}
    assert ok["response"]["status"] == 201
    assert ok["response"]["body"] == {"order_id": "o-1", "amount": 7}
    rejected = trails[("POST", "/api/orders/o-2")]
    assert rejected["response"]["status"] == 400 and rejected["response"]["body"] == "amount must be positive"
    assert trails[("GET", "/api/stream")]["response"]["body"]["$streamed"] is True
    crashed = trails[("GET", "/api/crash")]
    assert crashed["status"] == "error" and crashed["errors"][0]["type"] == "RuntimeError"
    _no_secrets(list(trails.values()))


@pytest.mark.service
@pytest.mark.parametrize("mode", ["old", "new"])
def test_service_under_opentelemetry_instrument(
    apps: Callable[..., AppProcess], upstream: ThreadServer, postgres_service: Any, mode: str
) -> None:
    port = free_port()
    env = {
        "PORT": str(port),
        "UPSTREAM_URL": upstream.url,
        "PG_PORT": str(urlsplit(postgres_service.url).port),
    }
    if mode == "new":
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http,database"
    service = apps([sys.executable, str(APPS / "aiohttp_service.py")], env, name="aiohttp", port=port)
    oid = f"o-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{service.url}/api/orders/{oid}",
        json={"amount": 12, "card": "4111111111111111"},
        headers={"Authorization": "Bearer s3cr3t-token"},
        timeout=30,
    )
    assert response.status_code == 201, service.log_text()
    (trail,) = service.trails(1)
    assert trail["request"]["route"] == "/api/orders/{oid}"
    assert trail["request"]["body"] == {"amount": 12, "card": "***"}
    assert trail["response"]["body"]["charge"] == {"transaction_id": "trx-9", "order_id": oid}
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateOrder"]
    insert = next(i for i in trail["integrations"] if i["name"] == "postgres.orders.insert")
    assert insert["request"]["args"] == [oid, 12, "***"]
    assert insert["response"] == {"rows_affected": 1}
    (call,) = [i for i in trail["integrations"] if i["type"] == "http"]
    assert call["request"]["body"] == {"order_id": oid, "card_number": "***"}
    assert call["request"]["headers"]["authorization"] == ["***"]
    assert call["response"]["body"] == {"transaction_id": "trx-9", "order_id": oid}
    _no_secrets([trail])
