"""Side-by-side cost of gotrails against the OTel SDK's own processors, in one process, as ratios.

    python benchmarks/bench_core.py            # full run (about half a minute)
    python benchmarks/bench_core.py --quick    # smaller counts, for a smoke check

Part 1 - span throughput for the same request shape (one SERVER root, 9 children: steps, DB, cache, HTTP):
  * no processor at all;
  * SimpleSpanProcessor with an exporter that does nothing;
  * TrailProcessor with a trail exporter that does nothing: on the request path only (the flush thread held back
    while the round is timed), and with the flush thread live (all work, including the fold, on two threads).
Part 2 - fold + mask + serialise time per trail of 10, 100 and 1000 spans.
Part 3 - the masking policy per KiB of JSON body, and its share of the per-request cost.
Each figure is the best of several rounds (least disturbed by the machine), as microseconds.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from gotrails_otel import SealedTrail, TrailConfig, TrailProcessor
from gotrails_otel._json import dumps
from gotrails_otel.fold import FoldInput, fold
from gotrails_otel.records import SpanRecord

RESOURCE = Resource.create({"service.name": "bench"})
SPANS_PER_REQUEST = 10


class NullSpanExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class NullTrailExporter:
    """Counts and forgets (trails arrive serialised: the pipeline seals each one once). While ``gate`` is clear the
    flush thread waits in :meth:`hold` (a pipeline stage), so that the request-path figure measures the processor's
    on_start/on_end alone, without the fold competing for the GIL."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = threading.Event()
        self.gate.set()

    def hold(self, document: dict[str, Any]) -> dict[str, Any]:
        self.gate.wait()
        return document

    def export(self, trail: SealedTrail) -> None:
        self.count += 1

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def request(provider: TracerProvider, children: int = SPANS_PER_REQUEST - 1) -> None:
    """One request shaped like the instrumentations emit it."""
    server = provider.get_tracer("opentelemetry.instrumentation.fastapi")
    app = provider.get_tracer("app")
    db = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    cache = provider.get_tracer("opentelemetry.instrumentation.redis")
    http = provider.get_tracer("opentelemetry.instrumentation.httpx")
    with server.start_as_current_span(
        "POST /v1/payments",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "url.path": "/v1/payments", "http.response.status_code": 201},
    ):
        for n in range(children):
            which = n % 4
            if which == 0:
                with app.start_as_current_span("ValidateRequest"):
                    pass
            elif which == 1:
                with db.start_as_current_span(
                    "insert payments",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "db.system.name": "postgresql",
                        "db.query.text": "INSERT INTO payments (id, amount) VALUES ($1, $2)",
                    },
                ):
                    pass
            elif which == 2:
                with cache.start_as_current_span(
                    "SET", kind=SpanKind.CLIENT, attributes={"db.system.name": "redis", "db.query.text": "SET ? ?"}
                ):
                    pass
            else:
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


def best_of(rounds: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(rounds))


def throughput(requests: int, rounds: int) -> dict[str, float]:
    """Microseconds per span for each setup, on the request path."""
    results: dict[str, float] = {}

    def timed(provider: TracerProvider, drain: Callable[[], object] | None = None) -> float:
        """Microseconds per span for ``requests`` requests; ``drain`` (timed too) waits for background work."""
        start = time.perf_counter()
        for _ in range(requests):
            request(provider)
        if drain is not None:
            drain()
        return (time.perf_counter() - start) * 1e6 / (requests * SPANS_PER_REQUEST)

    bare = TracerProvider(resource=RESOURCE)
    results["no processor"] = best_of(rounds, lambda: timed(bare))

    simple = TracerProvider(resource=RESOURCE)
    simple.add_span_processor(SimpleSpanProcessor(NullSpanExporter()))
    results["SimpleSpanProcessor + null exporter"] = best_of(rounds, lambda: timed(simple))

    batch_processor = BatchSpanProcessor(NullSpanExporter())
    batch = TracerProvider(resource=RESOURCE)
    batch.add_span_processor(batch_processor)

    results["BatchSpanProcessor + null exporter (export thread live)"] = best_of(
        rounds, lambda: timed(batch, batch_processor.force_flush)
    )
    batch_processor.shutdown()

    exporter = NullTrailExporter()
    trails = TrailProcessor(exporter, TrailConfig(max_trails=requests * 2))
    trails.stages.append(exporter.hold)
    gotrails = TracerProvider(resource=RESOURCE)
    gotrails.add_span_processor(trails)

    def held_back() -> float:
        # The flush thread waits while the round is timed, then drains (untimed) before the next round.
        exporter.gate.clear()
        try:
            return timed(gotrails)
        finally:
            exporter.gate.set()
            trails.force_flush()

    results["TrailProcessor (request path, flush thread held)"] = best_of(rounds, held_back)

    results["TrailProcessor + null trail exporter (flush thread live)"] = best_of(
        rounds, lambda: timed(gotrails, trails.force_flush)
    )
    trails.shutdown()
    assert exporter.count == requests * rounds * 2, exporter.count
    return results


def fold_cost(sizes: Sequence[int], rounds: int) -> dict[int, float]:
    """Microseconds to fold, mask and serialise one trail of ``size`` spans (what the flush thread does)."""
    policy = TrailConfig().policy()
    results: dict[int, float] = {}
    for size in sizes:
        captured: list[Any] = []

        class Keep:
            def export(self, trail: SealedTrail) -> None:
                return None

            def shutdown(self) -> None:
                return None

        provider = TracerProvider(resource=RESOURCE)
        processor = TrailProcessor(Keep(), TrailConfig(max_spans_per_trail=size + 1))
        provider.add_span_processor(processor)
        recorder = _Recorder(captured)
        provider.add_span_processor(recorder)
        request(provider, children=size - 1)
        processor.shutdown()
        root = next(s for s in captured if s.parent is None)
        # The processor keeps a compact record of each ended child span; fold what it folds.
        records = [SpanRecord(s) for s in captured if s is not root]
        data = FoldInput(root=root, spans=records, now_ns=time.time_ns())  # type: ignore[arg-type]
        repeat = max(3, 2000 // size)

        def once(data: FoldInput = data, repeat: int = repeat) -> float:
            start = time.perf_counter()
            for _ in range(repeat):
                dumps(policy.apply(fold(data)))
            return (time.perf_counter() - start) * 1e6 / repeat

        results[size] = best_of(rounds, once)
    return results


class _Recorder(SimpleSpanProcessor):
    def __init__(self, sink: list[Any]) -> None:
        super().__init__(NullSpanExporter())
        self._sink = sink

    def on_end(self, span: ReadableSpan) -> None:
        self._sink.append(span)


def json_body(kib: int) -> dict[str, Any]:
    """A JSON body of about ``kib`` KiB shaped like an API payload (records with ids, names, amounts, a secret)."""
    items = []
    while len(orjson.dumps(items)) < kib * 1024:
        n = len(items)
        items.append(
            {
                "id": f"ord-{n:06d}",
                "customer": {"name": f"Customer {n}", "email": f"c{n}@example.com", "password": "hunter2"},
                "amount": 1500 + n,
                "note": f"paid by bank transfer, reference {88121 + n}",  # unique text: no cache hits
            }
        )
    return {"orders": items}


def masking_cost(rounds: int) -> dict[int, float]:
    """Microseconds per KiB to mask and limit a trail whose request body is a JSON document of that size."""
    policy = TrailConfig().policy()
    results: dict[int, float] = {}
    for kib in (1, 16, 64):
        template = orjson.dumps({"entry": {"kind": "http"}, "request": {"body": json_body(kib), "headers": {}}})
        repeat = max(5, 400 // kib)

        def once(template: bytes = template, repeat: int = repeat) -> float:
            docs = [orjson.loads(template) for _ in range(repeat)]  # fresh copies, outside the timing
            start = time.perf_counter()
            for doc in docs:
                policy.apply(doc)
            return (time.perf_counter() - start) * 1e6 / repeat

        results[kib] = best_of(rounds, once) / kib
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args()
    requests, rounds = (300, 3) if args.quick else (2000, 7)

    spans = throughput(requests, rounds)
    base = spans["SimpleSpanProcessor + null exporter"]
    bare = spans["no processor"]
    print(f"Span throughput, {requests} requests x {SPANS_PER_REQUEST} spans, best of {rounds} rounds")
    print(f"{'setup':56} {'us/span':>9} {'spans/s':>10} {'vs Simple':>10} {'over bare SDK':>14}")
    for name, micros in spans.items():
        print(
            f"{name:56} {micros:9.2f} {1e6 / micros:10,.0f} {micros / base:9.2f}x "
            f"{(micros - bare) / bare * 100:12.1f} %"
        )

    folds = fold_cost((10, 100, 1000), rounds)
    print()
    print("Fold + mask + serialise per trail (flush thread)")
    print(f"{'spans':>6} {'us/trail':>10} {'us/span':>8}")
    for size, micros in folds.items():
        print(f"{size:6d} {micros:10.1f} {micros / size:8.2f}")

    masking = masking_cost(rounds)
    print()
    print("Masking and limits (Policy.apply) per KiB of JSON body")
    for kib, micros in masking.items():
        print(f"{kib:4d} KiB body: {micros:7.1f} us/KiB")
    per_trail = fold_cost((SPANS_PER_REQUEST,), rounds)[SPANS_PER_REQUEST]
    share = masking[1] * 2 / (per_trail + masking[1] * 2)
    print(
        f"a 10-span trail with 2 KiB of bodies: fold+mask+serialise {per_trail:.0f} us, bodies {masking[1] * 2:.0f} us "
        f"({share:.0%} of gotrails' per-request cost off the request path)"
    )

    live = spans["TrailProcessor + null trail exporter (flush thread live)"] - bare
    fold_per_span = folds[SPANS_PER_REQUEST] / SPANS_PER_REQUEST
    print()
    print(
        f"gotrails per span, all work included (flush thread live): {live:.2f} us, {live / bare:.0%} of the "
        f"{bare:.2f} us the SDK itself spends per span; of that, fold + mask + serialise: {fold_per_span:.2f} us"
    )


if __name__ == "__main__":
    main()
