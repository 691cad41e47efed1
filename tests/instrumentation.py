"""Spans as the contrib instrumentations (0.66b1) really emit them: scopes, kinds, names and attributes.

Each helper starts a real SDK span with the scope and attributes of the named instrumentation, in one of the
three semantic-convention modes: ``old`` (default), ``new`` (``OTEL_SEMCONV_STABILITY_OPT_IN=http,database``)
and ``dup`` (``http/dup,database/dup``, both key sets). gRPC and Kafka instrumentations always use old keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

MODES = ("old", "new", "dup")
VERSION = "0.66b1"


def _pick(mode: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    if mode == "old":
        return dict(old)
    if mode == "new":
        return dict(new)
    return {**old, **new}


class Instrumented:
    """Emits spans like the instrumentations, into ``provider``, in semantic-convention ``mode``."""

    def __init__(self, provider: TracerProvider, mode: str = "old") -> None:
        self.provider = provider
        self.mode = mode

    def tracer(self, scope: str) -> trace.Tracer:
        return self.provider.get_tracer(scope, VERSION)

    # ------------------------------------------------------------------------------------ servers

    @contextmanager
    def fastapi_request(
        self,
        method: str,
        route: str,
        path: str,
        status: int,
        query: str = "",
        parent: Context | None = None,
    ) -> Iterator[trace.Span]:
        target = path + (f"?{query}" if query else "")
        old = {
            "http.method": method,
            "http.scheme": "http",
            "http.host": "127.0.0.1:8000",
            "http.server_name": "127.0.0.1",
            "http.flavor": "1.1",
            "http.target": target,
            "http.url": f"http://127.0.0.1:8000{target}",
            "net.host.port": 8000,
            "net.peer.ip": "127.0.0.1",
            "net.peer.port": 50514,
            "http.route": route,
        }
        new = {
            "http.request.method": method,
            "url.scheme": "http",
            "url.path": path,
            "server.address": "127.0.0.1:8000",
            "server.port": 8000,
            "client.address": "127.0.0.1",
            "client.port": 50514,
            "network.protocol.version": "1.1",
            "http.route": route,
        }
        if query:
            new["url.query"] = query
        tracer = self.tracer("opentelemetry.instrumentation.fastapi")
        with tracer.start_as_current_span(
            f"{method} {route}", context=parent, kind=SpanKind.SERVER, attributes=_pick(self.mode, old, new)
        ) as span:
            self.asgi_noise(f"{method} {route}", "http.request")
            yield span
            self.asgi_noise(f"{method} {route}", "http.response.start", status)
            self.asgi_noise(f"{method} {route}", "http.response.body")
            span.set_attributes(_pick(self.mode, {"http.status_code": status}, {"http.response.status_code": status}))
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
                if self.mode != "old":
                    span.set_attribute("error.type", str(status))

    def asgi_noise(self, server_name: str, event: str, status: int | None = None) -> None:
        tracer = self.tracer("opentelemetry.instrumentation.fastapi")
        kind = "receive" if event in ("http.request", "http.disconnect") else "send"
        attributes: dict[str, Any] = {"asgi.event.type": event}
        if status is not None:
            attributes.update(_pick(self.mode, {"http.status_code": status}, {"http.response.status_code": status}))
        with tracer.start_as_current_span(f"{server_name} http {kind}", attributes=attributes):
            pass

    @contextmanager
    def flask_request(self, method: str, rule: str, target: str, status: int) -> Iterator[trace.Span]:
        path, _, query = target.partition("?")
        old = {
            "http.method": method,
            "http.server_name": "127.0.0.1",
            "http.scheme": "http",
            "net.host.name": "127.0.0.1",
            "net.host.port": 5000,
            "http.host": "127.0.0.1:5000",
            "http.target": target,
            "http.flavor": "1.1",
            "http.user_agent": "python-httpx/0.28.1",
            "net.peer.ip": "127.0.0.1",
            "net.peer.port": 40000,
            "http.route": rule,
        }
        new = {
            "http.request.method": method,
            "url.scheme": "http",
            "url.path": path,
            "server.address": "127.0.0.1",
            "server.port": 5000,
            "client.address": "127.0.0.1",
            "client.port": 40000,
            "network.protocol.version": "1.1",
            "user_agent.original": "python-httpx/0.28.1",
            "http.route": rule,
        }
        if query:
            new["url.query"] = query
        tracer = self.tracer("opentelemetry.instrumentation.flask")
        with tracer.start_as_current_span(
            f"{method} {rule}", kind=SpanKind.SERVER, attributes=_pick(self.mode, old, new)
        ) as span:
            yield span
            span.set_attributes(_pick(self.mode, {"http.status_code": status}, {"http.response.status_code": status}))

    @contextmanager
    def grpc_server(self, service: str, method: str, code: int = 0, parent: Context | None = None) -> Iterator[Any]:
        attrs = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            "rpc.user_agent": "grpc-python/1.85.3",
            "net.peer.ip": "127.0.0.1",
            "net.peer.port": "51234",
        }
        tracer = self.tracer("opentelemetry.instrumentation.grpc")
        with tracer.start_as_current_span(
            f"/{service}/{method}", context=parent, kind=SpanKind.SERVER, attributes=attrs
        ) as span:
            yield span
            span.set_attribute("rpc.grpc.status_code", code)

    @contextmanager
    def kafka_consumer(self, topic: str, partition: int, parent: Context | None = None) -> Iterator[Any]:
        attrs = {
            "messaging.system": "kafka",
            "messaging.destination": topic,
            "messaging.kafka.partition": partition,
            "messaging.url": '"127.0.0.1:9092"',
        }
        tracer = self.tracer("opentelemetry.instrumentation.kafka")
        with tracer.start_as_current_span(
            f"{topic} receive", context=parent, kind=SpanKind.CONSUMER, attributes=attrs
        ) as span:
            yield span

    # ------------------------------------------------------------------------------------ clients

    def httpx(self, method: str, url: str, status: int | None, error: Exception | None = None) -> trace.Span:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        old: dict[str, Any] = {"http.method": method, "http.url": url}
        new: dict[str, Any] = {
            "http.request.method": method,
            "url.full": url,
            "server.address": parts.hostname,
            "server.port": parts.port or 443,
            "network.protocol.version": "1.1",
        }
        if status is not None:
            old["http.status_code"] = status
            new["http.response.status_code"] = status
        tracer = self.tracer("opentelemetry.instrumentation.httpx")
        span = tracer.start_span(method, kind=SpanKind.CLIENT, attributes=_pick(self.mode, old, new))
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            if self.mode != "old":
                span.set_attribute("error.type", type(error).__qualname__)
        elif status is not None and status >= 400:
            span.set_status(Status(StatusCode.ERROR))
            if self.mode != "old":
                span.set_attribute("error.type", str(status))
        span.end()
        return span

    def sqlalchemy(self, statement: str, system: str = "postgresql", db: str = "payments_db") -> trace.Span:
        tracer = self.tracer("opentelemetry.instrumentation.sqlalchemy")
        operation = statement.split()[0].upper()
        old = {
            "db.system": system,
            "db.name": db,
            "db.statement": statement,
            "db.operation": operation,
            "db.user": "app",
            "net.peer.name": "127.0.0.1",
            "net.peer.port": 5432,
            "net.transport": "ip_tcp",
        }
        new = {
            "db.system.name": system,
            "db.namespace": db,
            "db.query.text": statement,
            "db.operation.name": operation,
            "server.address": "127.0.0.1",
            "server.port": 5432,
        }
        with tracer.start_as_current_span(
            f"{operation.lower()} {db}", kind=SpanKind.CLIENT, attributes=_pick(self.mode, old, new)
        ) as span:
            pass
        return span

    def sqlalchemy_connect(self, system: str = "postgresql", db: str = "payments_db") -> trace.Span:
        tracer = self.tracer("opentelemetry.instrumentation.sqlalchemy")
        attrs = _pick(self.mode, {"db.system": system, "db.name": db}, {"db.system.name": system, "db.namespace": db})
        with tracer.start_as_current_span("connect", kind=SpanKind.CLIENT, attributes=attrs) as span:
            pass
        return span

    def redis(self, *commands: str, error: Exception | None = None) -> trace.Span:
        tracer = self.tracer("opentelemetry.instrumentation.redis")
        statement = "\n".join(commands)
        names = " ".join(c.split()[0] for c in commands)
        old: dict[str, Any] = {
            "db.system": "redis",
            "db.statement": statement,
            "db.redis.database_index": 0,
            "net.peer.name": "127.0.0.1",
            "net.peer.port": 6379,
            "net.transport": "ip_tcp",
        }
        new: dict[str, Any] = {
            "db.system.name": "redis",
            "db.query.text": statement,
            "server.address": "127.0.0.1",
            "server.port": 6379,
            "network.transport": "tcp",
        }
        if len(commands) > 1:
            old["db.redis.pipeline_length"] = len(commands)
        else:
            old["db.redis.args_length"] = len(commands[0].split())
        span = tracer.start_span(names, kind=SpanKind.CLIENT, attributes=_pick(self.mode, old, new))
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()
        return span

    def grpc_client(self, service: str, method: str, code: int = 0) -> trace.Span:
        tracer = self.tracer("opentelemetry.instrumentation.grpc")
        attrs = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method, "rpc.grpc.status_code": code}
        span = tracer.start_span(f"/{service}/{method}", kind=SpanKind.CLIENT, attributes=attrs)
        if code != 0:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        return span

    def kafka_send(self, topic: str, partition: int) -> trace.Span:
        tracer = self.tracer("opentelemetry.instrumentation.kafka")
        span = tracer.start_span(f"{topic} send", kind=SpanKind.PRODUCER)
        span.set_attributes(
            {
                "messaging.system": "kafka",
                "messaging.destination": topic,
                "messaging.kafka.partition": partition,
                "messaging.url": '"127.0.0.1:9092"',
            }
        )
        span.end()
        return span

    def background_task(self, name: str) -> trace.Span:
        tracer = self.tracer("opentelemetry.instrumentation.fastapi")
        with tracer.start_as_current_span(f"BackgroundTask {name}") as span:
            pass
        return span


def remote_parent(trace_id: int = 0x0AF7651916CD43DD8448EB211C80319C, span_id: int = 0xB7AD6B7169203331) -> Context:
    """A context whose current span is a remote parent, as a propagator extracts it from ``traceparent``."""
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(ctx))
