"""Cost of the hash chain per trail (stamp, and stamp + the one serialisation of sealing) and ``verify`` throughput.

    python benchmarks/bench_integrity.py            # 100,000 trails verified (about a minute)
    python benchmarks/bench_integrity.py --quick    # smaller counts, for a smoke check

The trails are real: requests shaped like the instrumentations emit them (a SERVER root with steps, a database
insert, a cache call and an outgoing HTTP call, small JSON bodies and metadata) go through a ``TrailProcessor``
with integrity off, so they are folded and masked as in production; the chain is then timed on them alone. Each
figure is the best of several rounds, on one core (this process's main thread).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

import gotrails_otel as gt
from gotrails_otel.integrity import Chain
from gotrails_otel.verify import verify_files

KEY = os.urandom(32)


def typical_trails(count: int) -> list[dict[str, Any]]:
    """``count`` distinct trails of a 10-span payment request, folded and masked by the real processor."""
    exporter = gt.InMemoryTrailExporter()
    processor = gt.TrailProcessor(exporter, gt.TrailConfig(integrity=False, grace_ms=0))
    provider = TracerProvider(resource=Resource.create({"service.name": "payment-service"}))
    provider.add_span_processor(processor)
    server = provider.get_tracer("opentelemetry.instrumentation.fastapi")
    db = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    cache = provider.get_tracer("opentelemetry.instrumentation.redis")
    http = provider.get_tracer("opentelemetry.instrumentation.httpx")
    for n in range(count):
        attributes = {"http.request.method": "POST", "url.path": "/v1/payments", "http.response.status_code": 201}
        with server.start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER, attributes=attributes) as root:
            processor.captures.update(
                root.get_span_context().span_id,
                "request",
                {"body": {"order_id": f"ord-{n:08d}", "amount": 1000 + n, "currency": "IDR", "card": "4111"}},
            )
            gt.set_metadata(user_id=f"u-{n % 977}", merchant_id=f"m-{n % 31}", attempt=n % 3)
            with gt.step("ValidateRequest"):
                pass
            with gt.step("CreatePaymentUsecase"):
                with db.start_as_current_span(
                    "INSERT payments",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "db.system": "postgresql",
                        "db.statement": "INSERT INTO payments (id, amount) VALUES (%s, %s)",
                    },
                ):
                    pass
                with cache.start_as_current_span(
                    "SET", kind=SpanKind.CLIENT, attributes={"db.system": "redis", "db.statement": "SET pay:1 ?"}
                ):
                    pass
                with http.start_as_current_span(
                    "POST",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "http.request.method": "POST",
                        "url.full": "https://api.midtrans.com/v2/charge",
                        "http.response.status_code": 201,
                    },
                ):
                    pass
            for step in ("Notify", "Audit", "Respond"):
                with gt.step(step):
                    pass
    provider.shutdown()
    return exporter.get_finished_trails()


def best_of(rounds: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(rounds))


def stamp_cost(trails: list[dict[str, Any]], key: bytes | None, rounds: int) -> float:
    """CPU microseconds per trail of ``Chain.stamp``, which also makes the bytes that sealing keeps and exports."""
    chain = Chain(key, "bench" if key else None)

    def once() -> float:
        start = time.process_time()
        for trail in trails:
            chain.stamp(trail)
        return (time.process_time() - start) / len(trails) * 1e6

    return best_of(rounds, once)


def serialise_cost(trails: list[dict[str, Any]], rounds: int) -> float:
    """CPU microseconds per trail of the one orjson serialisation that sealing does without a chain."""

    def once() -> float:
        start = time.process_time()
        for trail in trails:
            orjson.dumps(trail)
        return (time.process_time() - start) / len(trails) * 1e6

    return best_of(rounds, once)


def write_chain(path: str, trails: list[dict[str, Any]], total: int, key: bytes | None) -> None:
    """``total`` stamped trails (the templates cycled, each a new link), one line each as the exporters write them."""
    chain = Chain(key, "bench" if key else None)
    with open(path, "wb") as stream:
        for n in range(total):
            stream.write(chain.stamp(dict(trails[n % len(trails)])) + b"\n")
        record = chain.checkpoint(final=True)
        assert record is not None
        stream.write(orjson.dumps(record) + b"\n")


def verify_rate(path: str, key: bytes | None, rounds: int) -> tuple[float, float]:
    """Trails per second of ``verify_files`` on one core: by CPU time, and by wall-clock time."""
    keys = {"bench": key} if key else {}
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(rounds):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        report = verify_files([path], keys)
        cpu.append((time.process_time() - start_cpu) / report.trails)
        wall.append((time.perf_counter() - start_wall) / report.trails)
        assert report.ok, report.to_text()
    return 1 / min(cpu), 1 / min(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    distinct, total, rounds = (200, 10_000, 2) if args.quick else (2_000, 100_000, 3)
    trails = typical_trails(distinct)
    size = sum(len(orjson.dumps(t)) for t in trails) / len(trails)
    print(f"{len(trails):,} distinct typical trails (10 spans, small JSON bodies), {size:,.0f} bytes each on average")
    print()
    print("Per trail on the flush thread, CPU microseconds (best of rounds)")
    alone = serialise_cost(trails, rounds + 2)
    plain = stamp_cost(trails, None, rounds + 2)
    keyed = stamp_cost(trails, KEY, rounds + 2)
    print(f"  seal without a chain (one orjson serialisation)        {alone:7.2f}")
    print(f"  stamp + seal bytes, SHA-256 (canonical JSON + hash)    {plain:7.2f}")
    print(f"  stamp + seal bytes, HMAC-SHA256                        {keyed:7.2f}")
    print()
    print(f"gotrails-otel verify of {total:,} trails, one core (best of {rounds})")
    with tempfile.TemporaryDirectory() as folder:
        for label, key in (("SHA-256", None), ("HMAC-SHA256", KEY)):
            path = os.path.join(folder, f"{label}.jsonl")
            write_chain(path, trails, total, key)
            cpu_rate, wall_rate = verify_rate(path, key, rounds)
            mb = os.path.getsize(path) / 1e6
            print(
                f"  {label:12} {cpu_rate:9,.0f} trails/s by CPU time, {wall_rate:9,.0f} by the clock "
                f"({mb:,.1f} MB file, {cpu_rate * mb / total:,.1f} MB/s)"
            )


if __name__ == "__main__":
    main()
