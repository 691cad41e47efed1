"""Incoming HTTP through WSGI (Flask, plain WSGI) served by a real werkzeug server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, Response, jsonify, request, stream_with_context
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

import gotrails_otel as gt
from gotrails_otel.hooks import wsgi as wsgi_hooks

from .conftest import TrailHarness
from .services import ThreadServer


def flask_app() -> Flask:
    app = Flask("payments")

    @app.post("/v1/payments")
    def create() -> Any:
        body = request.get_json()
        with gt.step("ValidateRequest"):
            if body.get("amount", 0) <= 0:
                return jsonify(error="amount must be positive"), 422
        return jsonify(payment_id="pay-123", status="PENDING"), 201

    @app.post("/form")
    def form() -> Any:
        return jsonify(name=request.form["name"])

    @app.get("/stream")
    def stream() -> Response:
        def lines() -> Iterator[str]:
            for n in range(3):
                yield f"line-{n}\n"

        return Response(stream_with_context(lines()), mimetype="text/plain")

    @app.get("/crash")
    def crash() -> Any:
        raise RuntimeError("ledger unavailable")

    return app


@pytest.fixture
def flask_server(semconv: str) -> Iterator[ThreadServer]:
    app = flask_app()
    FlaskInstrumentor.instrument_app(app, **wsgi_hooks.flask_kwargs())
    server = ThreadServer(app, "wsgi")
    yield server
    server.close()
    FlaskInstrumentor.uninstrument_app(app)


@pytest.mark.service
def test_flask_request_and_response(harness: TrailHarness, flask_server: ThreadServer) -> None:
    response = httpx.post(
        f"{flask_server.url}/v1/payments?src=app",
        json={"amount": 150000},
        headers={"Authorization": "Basic dXNlcjpwYXNz", "X-Request-ID": "flask-1"},
    )
    assert response.status_code == 201 and response.json()["payment_id"] == "pay-123"
    trail = harness.trail_for("/v1/payments")
    assert trail["request_id"] == "flask-1"
    assert trail["request"]["method"] == "POST" and trail["request"]["query"] == "src=app"
    assert trail["request"]["route"] == "/v1/payments"
    assert trail["request"]["body"] == {"amount": 150000}
    assert trail["request"]["headers"]["authorization"] == ["***"]
    assert trail["response"]["status"] == 201
    assert trail["response"]["body"] == {"payment_id": "pay-123", "status": "PENDING"}
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest"]
    assert "dXNlcjpwYXNz" not in str(trail)


@pytest.mark.service
def test_flask_form_body_and_validation_failure(harness: TrailHarness, flask_server: ThreadServer) -> None:
    assert httpx.post(f"{flask_server.url}/form", data={"name": "Ana"}).json() == {"name": "Ana"}
    assert harness.trail_for("/form")["request"]["body"] == {"name": "Ana"}
    harness.exporter.clear()
    assert httpx.post(f"{flask_server.url}/v1/payments", json={"amount": -1}).status_code == 422
    trail = harness.trail_for("/v1/payments")
    assert trail["response"]["status"] == 422 and trail["response"]["body"] == {"error": "amount must be positive"}


@pytest.mark.service
def test_flask_streamed_response_is_recorded_while_the_server_iterates(
    harness: TrailHarness, flask_server: ThreadServer
) -> None:
    assert httpx.get(f"{flask_server.url}/stream").text == "line-0\nline-1\nline-2\n"
    trail = harness.trail_for("/stream")
    assert trail["response"]["body"] == "line-0\nline-1\nline-2\n"
    assert trail["complete"] is True


@pytest.mark.service
def test_flask_crash_is_an_error(harness: TrailHarness, flask_server: ThreadServer) -> None:
    assert httpx.get(f"{flask_server.url}/crash").status_code == 500
    trail = harness.trail_for("/crash")
    assert trail["response"]["status"] == 500
    assert trail["status"] == "error"
    assert any(e["message"] == "ledger unavailable" for e in trail["errors"])


def plain_wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size)

    def chunks() -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", "sid=secret-sid")])
        yield b"echo:"
        yield body

    return chunks()


@pytest.mark.service
def test_plain_wsgi_app(harness: TrailHarness, semconv: str) -> None:
    wsgi_hooks.install()
    server = ThreadServer(OpenTelemetryMiddleware(plain_wsgi), "wsgi")
    try:
        assert httpx.post(f"{server.url}/echo?x=1", content=b"hello wsgi").text == "echo:hello wsgi"
    finally:
        server.close()
        wsgi_hooks.uninstall()
    trail = harness.trail_for("/echo")
    assert trail["request"]["body"] == "hello wsgi" and trail["request"]["query"] == "x=1"
    assert trail["response"]["status"] == 200
    assert trail["response"]["body"] == "echo:hello wsgi"
    assert trail["response"]["headers"]["set-cookie"] == ["***"]


def crashing_wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    raise RuntimeError("ledger unavailable")


def crashing_after_start(environ: dict[str, Any], start_response: Any) -> Any:
    def chunks() -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("stream broke")

    return chunks()


@pytest.mark.service
def test_plain_wsgi_app_that_raises_records_the_request_and_the_500(harness: TrailHarness, semconv: str) -> None:
    wsgi_hooks.install()
    server = ThreadServer(OpenTelemetryMiddleware(crashing_wsgi), "wsgi")
    try:
        response = httpx.post(
            f"{server.url}/pay?x=1", json={"amount": 5, "password": "hunter2"}, headers={"X-Request-ID": "crash-1"}
        )
    finally:
        server.close()
        wsgi_hooks.uninstall()
    assert response.status_code == 500
    trail = harness.trail_for("/pay")
    assert trail["request"]["method"] == "POST" and trail["request"]["query"] == "x=1"
    assert trail["request"]["headers"]["x-request-id"] == ["crash-1"] and trail["request_id"] == "crash-1"
    assert trail["request"]["body"] == {"amount": 5, "password": "***"}
    assert trail["response"]["status"] == 500
    assert trail["status"] == "error"
    assert any(e["message"] == "ledger unavailable" for e in trail["errors"])
    assert trail["complete"] is True
    assert "hunter2" not in str(trail)


@pytest.mark.service
def test_plain_wsgi_body_that_raises_keeps_the_status_it_sent(harness: TrailHarness) -> None:
    wsgi_hooks.install()
    server = ThreadServer(OpenTelemetryMiddleware(crashing_after_start), "wsgi")
    try:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{server.url}/stream").read()
    finally:
        server.close()
        wsgi_hooks.uninstall()
    trail = harness.trail_for("/stream")
    assert trail["response"]["status"] == 200  # sent before the body broke
    assert trail["response"]["body"] == "partial"
    assert any(e["message"] == "stream broke" for e in trail["errors"])
