"""Incoming HTTP through ASGI (FastAPI, plain ASGI) served by a real uvicorn server."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

import gotrails_otel as gt
from gotrails_otel.hooks import asgi as asgi_hooks

from .conftest import TrailHarness
from .services import ThreadServer


def payment_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/payments")
    async def create(request: Request) -> JSONResponse:
        body = await request.json()
        with gt.step("ValidateRequest"):
            if body.get("amount", 0) <= 0:
                return JSONResponse({"error": "amount must be positive"}, status_code=422)
        return JSONResponse({"payment_id": "pay-123", "status": "PENDING"}, status_code=201)

    @app.get("/v1/payments/{pid}")
    def read(pid: str, verbose: int = 0) -> dict[str, Any]:
        return {"payment_id": pid, "verbose": verbose}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> Any:
            for n in range(5):
                yield f"line-{n}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/gzip")
    async def gz() -> Response:
        return Response(
            gzip.compress(b'{"zipped": true}'), media_type="application/json", headers={"content-encoding": "gzip"}
        )

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("database on fire")

    @app.post("/later")
    async def later(tasks: BackgroundTasks) -> dict[str, str]:
        def audit() -> None:
            with gt.step("AuditInBackground"):
                pass

        tasks.add_task(audit)
        return {"queued": "yes"}

    return app


@pytest.fixture
def fastapi_server(semconv: str) -> Iterator[ThreadServer]:
    asgi_hooks.install()
    app = payment_app()
    FastAPIInstrumentor.instrument_app(app, **asgi_hooks.instrumentor_kwargs())
    server = ThreadServer(app, "asgi")
    yield server
    server.close()
    FastAPIInstrumentor.uninstrument_app(app)
    asgi_hooks.uninstall()


@pytest.mark.service
def test_fastapi_request_and_response(harness: TrailHarness, fastapi_server: ThreadServer) -> None:
    response = httpx.post(
        f"{fastapi_server.url}/v1/payments?source=web",
        json={"amount": 150000, "payment_method": "bank_transfer"},
        headers={"Cookie": "session=sess-q9-abc123", "X-Trace-ID": "req-abc-123", "X-Request-ID": "r-77"},
    )
    assert response.status_code == 201
    trail = harness.trail_for("/v1/payments")
    assert trail["trace_id"] == "req-abc-123" and trail["request_id"] == "r-77"
    request = trail["request"]
    assert request["method"] == "POST" and request["query"] == "source=web" and request["route"] == "/v1/payments"
    assert request["body"] == {"amount": 150000, "payment_method": "bank_transfer"}
    assert request["headers"]["content-type"] == ["application/json"]
    assert request["headers"]["cookie"] == ["***"]
    assert trail["response"]["status"] == 201
    assert trail["response"]["body"] == {"payment_id": "pay-123", "status": "PENDING"}
    assert trail["response"]["headers"]["content-type"] == ["application/json"]
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest"]
    assert trail["complete"] is True
    assert "sess-q9-abc123" not in str(trail)


@pytest.mark.service
def test_validation_failure_and_get_without_body(harness: TrailHarness, fastapi_server: ThreadServer) -> None:
    assert httpx.post(f"{fastapi_server.url}/v1/payments", json={"amount": 0}).status_code == 422
    assert httpx.get(f"{fastapi_server.url}/v1/payments/pay-9?verbose=1").json() == {
        "payment_id": "pay-9",
        "verbose": 1,
    }
    trails = {t["request"]["path"]: t for t in harness.trails(2)}
    rejected = trails["/v1/payments"]
    assert rejected["response"] == {
        "status": 422,
        "headers": rejected["response"]["headers"],
        "body": {"error": "amount must be positive"},
    }
    assert rejected["status"] == "ok"  # a 4xx is the service's answer, not its failure
    read = trails["/v1/payments/pay-9"]
    assert read["request"]["body"] is None and read["request"]["query"] == "verbose=1"
    assert read["response"]["body"] == {"payment_id": "pay-9", "verbose": 1}


@pytest.mark.service
def test_streaming_response_up_to_the_limit(make_harness: Any, fastapi_server: ThreadServer) -> None:
    h = make_harness(max_body_bytes=16)
    assert httpx.get(f"{fastapi_server.url}/stream").text == "".join(f"line-{n}\n" for n in range(5))
    trail = h.trail_for("/stream")
    assert trail["response"]["body"] == {"$truncated": {"size": 35, "kept": 16, "text": "line-0\nline-1\nli…"}}


@pytest.mark.service
def test_gzip_response_body_is_decoded(harness: TrailHarness, fastapi_server: ThreadServer) -> None:
    assert httpx.get(f"{fastapi_server.url}/gzip").json() == {"zipped": True}
    assert harness.trail_for("/gzip")["response"]["body"] == {"zipped": True}


@pytest.mark.service
def test_unhandled_exception_gives_500_and_error(harness: TrailHarness, fastapi_server: ThreadServer) -> None:
    assert httpx.get(f"{fastapi_server.url}/crash").status_code == 500
    trail = harness.trail_for("/crash")
    assert trail["status"] == "error"
    assert trail["response"]["status"] == 500
    assert any(e["message"] == "database on fire" and e["type"] == "RuntimeError" for e in trail["errors"])


@pytest.mark.service
def test_background_task_belongs_to_its_request(harness: TrailHarness, fastapi_server: ThreadServer) -> None:
    assert httpx.post(f"{fastapi_server.url}/later").json() == {"queued": "yes"}
    trail = harness.trail_for("/later")
    assert [s["name"] for s in trail["internal_steps"]] == ["AuditInBackground"]
    assert trail["complete"] is True


async def plain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"echo:", "more_body": True})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.service
@pytest.mark.parametrize("exclude", [None, ["receive", "send"]])
def test_plain_asgi_app_with_and_without_receive_send_spans(
    harness: TrailHarness, semconv: str, exclude: list[str] | None
) -> None:
    asgi_hooks.install()
    server = ThreadServer(OpenTelemetryMiddleware(plain_app, exclude_spans=exclude), "asgi")
    try:
        assert httpx.post(f"{server.url}/echo", content=b"hello world").text == "echo:hello world"
    finally:
        server.close()
        asgi_hooks.uninstall()
    trail = harness.trail_for("/echo")
    assert trail["request"]["body"] == "hello world"
    assert trail["response"]["body"] == "echo:hello world"
    assert trail["response"]["status"] == 200


@pytest.mark.service
def test_work_after_the_response_longer_than_the_grace_belongs_to_its_request(make_harness: Any) -> None:
    """The ASGI SERVER span ends with the last body chunk, before the app returns (middleware, background tasks):
    the grace period starts when the app has returned, however long that takes (under CPU load, or a slow task)."""
    import time

    h = make_harness(grace_ms=100)
    app = FastAPI()

    @app.middleware("http")
    async def tag(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-tagged"] = "1"
        return response

    @app.post("/slow-later")
    async def slow_later(tasks: BackgroundTasks) -> dict[str, str]:
        def audit() -> None:
            with gt.step("SlowAudit"):
                time.sleep(0.4)  # four times the grace period

        tasks.add_task(audit)
        return {"queued": "yes"}

    asgi_hooks.install()
    FastAPIInstrumentor.instrument_app(app)
    server = ThreadServer(app, "asgi")
    try:
        for _ in range(3):
            assert httpx.post(f"{server.url}/slow-later").json() == {"queued": "yes"}
    finally:
        server.close()
        FastAPIInstrumentor.uninstrument_app(app)
        asgi_hooks.uninstall()
    for trail in h.trails(3):
        assert trail["flush_reason"] == "complete" and trail["complete"] is True
        assert [s["name"] for s in trail["internal_steps"]] == ["SlowAudit"]


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_lifespan_shutdown_writes_the_ready_trails_and_leaves_the_processor_running(harness: TrailHarness) -> None:
    """Before the app reports its lifespan shutdown done, the trails of answered requests are exported (a server
    may end the process right after: uvicorn re-raises SIGTERM). A lifespan shutdown is no processor shutdown: a
    test client's exit ends one, and the next requests still get their trails."""
    from fastapi.testclient import TestClient

    asgi_hooks.install()
    app = payment_app()
    FastAPIInstrumentor.instrument_app(app)
    # A request in flight elsewhere: the flush thread then looks for flushed trails only every 100 ms.
    other = harness.tracer().start_span("GET /elsewhere", kind=trace.SpanKind.SERVER)
    try:
        for number in range(2):
            with TestClient(app) as client:
                assert client.get(f"/v1/payments/pay-{number}").status_code == 200
            # No force_flush here: the lifespan shutdown has written the trail already.
            paths = [t["request"]["path"] for t in harness.exporter.get_finished_trails()]
            assert paths == [f"/v1/payments/pay-{n}" for n in range(number + 1)]
    finally:
        other.end()
        FastAPIInstrumentor.uninstrument_app(app)
        asgi_hooks.uninstall()


def test_a_failing_flush_at_the_lifespan_shutdown_neither_stops_the_others_nor_the_shutdown(
    harness: TrailHarness, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from gotrails_otel import registry

    class Broken(gt.TrailProcessor):
        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            raise RuntimeError("exporter gone")

    broken = Broken(gt.InMemoryTrailExporter())
    # A processor registered after the broken one, so that it is flushed after the failure.
    exporter = gt.InMemoryTrailExporter()
    after = gt.TrailProcessor(exporter)
    provider = TracerProvider()
    provider.add_span_processor(after)
    tracer = provider.get_tracer("app")
    # A request in flight elsewhere: the flush thread then looks for flushed trails only every 100 ms.
    other = tracer.start_span("GET /elsewhere", kind=trace.SpanKind.SERVER)
    try:
        with tracer.start_as_current_span("GET /ok", kind=trace.SpanKind.SERVER):
            pass
        with caplog.at_level("ERROR", logger="gotrails_otel"):
            assert registry.flush_all() is False
        assert [t["entry"]["name"] for t in exporter.get_finished_trails()] == ["GET /ok"]  # flushed all the same
        assert any("flushing a trail processor failed" in r.getMessage() for r in caplog.records)
    finally:
        other.end()
        provider.shutdown()
        broken.shutdown()
