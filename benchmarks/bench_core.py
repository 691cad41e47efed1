"""Side-by-side cost of gotrails against the OTel SDK's own processors, in one process, as ratios.

    python benchmarks/bench_core.py            # full run (about a minute of CPU)
    python benchmarks/bench_core.py --quick    # smaller counts, for a smoke check

Part 1 - a realistic request: the 8 spans the FastAPI service of ``bench_service.py`` produces per request (server
  span, ASGI receive/send, two SQLAlchemy statements, a Redis SET, an httpx POST) with the same attributes, and,
  where gotrails is on, its capture hooks called as the instrumentations call them, on the same payloads: a 1 KiB
  JSON request body and a 1 KiB response body, request and response headers, SQL statements with their arguments,
  the Redis command, and the httpx call with its JSON bodies both ways. Setups: no OpenTelemetry (the API's no-op
  provider), the SDK with a BatchSpanProcessor and a null exporter, and the same plus gotrails (request path only,
  with the flush thread held back; and all work, with the flush thread live).
Part 2 - the same with empty spans (one SERVER root, 9 children: steps, DB, cache, HTTP; no payloads).
Part 3 - fold + mask + serialise per trail: the realistic trail (and each stage of it, the integrity stamp and seal,
  and the whole pipeline as the flush thread runs it), and 10, 100 and 1000 empty spans.
Part 4 - the masking policy per KiB of JSON body.

Every figure is CPU time of this process read from the OS (``time.process_time``, which counts every thread:
the SDK's export thread and gotrails' flush thread too), so other load on the machine does not count. Setups run in
interleaved rounds; each figure is the median over rounds, with the spread (min-max) where it is shown.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

sys.path.insert(0, str(Path(__file__).resolve().parent))

from payloads import GATEWAY_ANSWER, payment_request, payment_response

from gotrails_otel import SealedTrail, TrailConfig, TrailProcessor
from gotrails_otel import pipeline as processor_module  # where the flush thread calls the fold
from gotrails_otel._json import dumps
from gotrails_otel.fold import FoldInput, fold
from gotrails_otel.hooks import asgi as asgi_hooks
from gotrails_otel.hooks import httpx as httpx_hooks
from gotrails_otel.hooks import redis as redis_hooks
from gotrails_otel.hooks import sqlalchemy as sqlalchemy_hooks
from gotrails_otel.integrity import Chain
from gotrails_otel.records import SpanRecord as _SpanRecord

RESOURCE = Resource.create({"service.name": "bench"})
SPANS_PER_REQUEST = 10
HELD_CHUNK = 100


class NullSpanExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class NullTrailExporter:
    """Counts and forgets (a trail arrives serialised: the pipeline seals each one once). While ``gate`` is clear the
    flush thread waits in :meth:`hold`, a pipeline stage (see :func:`gotrails_processor`), so that the request-path
    figure measures the processor's on_start/on_end alone, without the fold competing for the GIL."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = threading.Event()
        self.gate.set()

    def hold(self, document: dict[str, Any]) -> dict[str, Any]:
        self.gate.wait()
        return document

    def export(self, trail: SealedTrail) -> None:
        if b'"record":"gotrails.checkpoint"' not in trail.data:  # the hash chain's checkpoints are not trails
            self.count += 1

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def gotrails_processor(exporter: NullTrailExporter, config: TrailConfig) -> TrailProcessor:
    """A trail processor whose flush thread waits at ``exporter.gate`` (between the masking and the seal)."""
    processor = TrailProcessor(exporter, config)
    processor.stages.append(exporter.hold)
    return processor


def cpu_us(fn: Callable[[], object], count: int) -> float:
    """CPU microseconds (every thread of this process) per item for ``fn()``, which handles ``count`` items."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1e6 / count


def spread(values: Sequence[float], fmt: str = ".1f") -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


# ------------------------------------------------------------------------------------------- realistic request


class Service:
    """One request of the FastAPI payment service, span by span, with gotrails' hooks when ``hooks`` is set.

    The spans carry the attributes the contrib instrumentations set (old semantic conventions, as by default); the
    hooks are gotrails' own functions, called with the objects the libraries hand them (an ASGI message, the
    SQLAlchemy execution context, the redis-py command, httpx ``Request``/``Response`` objects).
    """

    DB = "/srv/payments/service.db"
    PORT = 8000
    UPSTREAM = "http://127.0.0.1:9001/v2/charge"

    def __init__(self, provider: trace.TracerProvider, hooks: bool) -> None:
        self.server = provider.get_tracer("opentelemetry.instrumentation.fastapi")
        self.db = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
        self.cache = provider.get_tracer("opentelemetry.instrumentation.redis")
        self.http = provider.get_tracer("opentelemetry.instrumentation.httpx")
        self.hooks = hooks
        self.number = 0

    def __call__(self) -> None:
        self.number += 1
        n = self.number
        body = payment_request(n)
        payment_id = f"pay-{n:07d}"
        answer = payment_response(n, payment_id)
        host = f"127.0.0.1:{self.PORT}"
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/payments",
            "query_string": b"",
            "headers": [
                (b"host", host.encode()),
                (b"user-agent", b"gotrails-bench/1"),
                (b"accept", b"application/json"),
                (b"authorization", b"Bearer bench-token-%d" % n),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        exchange = asgi_hooks._Exchange(scope) if self.hooks else None
        attributes = {
            "http.scheme": "http",
            "http.host": host,
            "net.host.port": self.PORT,
            "http.flavor": "1.1",
            "http.target": "/v1/payments",
            "http.url": f"http://{host}/v1/payments",
            "http.method": "POST",
            "http.server_name": host,
            "http.user_agent": "gotrails-bench/1",
            "net.peer.ip": "127.0.0.1",
            "net.peer.port": 40000 + n % 1000,
        }
        with self.server.start_as_current_span(
            "POST /v1/payments", kind=SpanKind.SERVER, attributes=attributes
        ) as root:
            with self.server.start_as_current_span(
                "POST /v1/payments http receive", attributes={"asgi.event.type": "http.request"}
            ):
                if exchange is not None:
                    exchange._on_receive({"type": "http.request", "body": body, "more_body": False})
            self._sql("SELECT", "SELECT id, name, email, tier FROM customers WHERE id = ?", (f"cus-{n % 100:04d}",), -1)
            self._sql(
                "INSERT",
                "INSERT INTO payments (id, customer_id, amount, currency, method, status) VALUES (?, ?, ?, ?, ?, ?)",
                (payment_id, f"cus-{n % 100:04d}", 150_000 + n % 1000, "IDR", "card", "PENDING"),
                1,
            )
            self._redis_set(f"payment:{payment_id}")
            self._charge(n, payment_id)
            root.set_attribute("http.route", "/v1/payments")
            with self.server.start_as_current_span(
                "POST /v1/payments http send",
                attributes={"asgi.event.type": "http.response.start", "http.status_code": 201},
            ):
                if exchange is not None:
                    headers = [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json")]
                    exchange._on_send({"type": "http.response.start", "status": 201, "headers": headers})
            with self.server.start_as_current_span(
                "POST /v1/payments http send", attributes={"asgi.event.type": "http.response.body"}
            ):
                if exchange is not None:
                    exchange._on_send({"type": "http.response.body", "body": answer})
            root.set_attribute("http.status_code", 201)
        if exchange is not None:
            exchange.done()  # the app returned: the ASGI wrapper releases the trail

    def _sql(self, operation: str, statement: str, parameters: tuple[Any, ...], rowcount: int) -> None:
        attributes = {
            "db.name": self.DB,
            "db.statement": statement,
            "db.system": "sqlite",
            "db.operation": f"{operation} {self.DB}",
        }
        with self.db.start_as_current_span(
            f"{operation} {self.DB}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            if self.hooks:
                context = SimpleNamespace(_otel_span=span)
                cursor = SimpleNamespace(rowcount=rowcount)
                sqlalchemy_hooks._after_cursor_execute(None, cursor, statement, parameters, context, False)

    def _redis_set(self, key: str) -> None:
        attributes = {
            "db.statement": "SET ? ? ? ?",
            "db.redis.args_length": 5,
            "db.system": "redis",
            "db.redis.database_index": 0,
            "net.peer.name": "127.0.0.1",
            "net.peer.port": 6379,
            "net.transport": "ip_tcp",
        }
        with self.cache.start_as_current_span("SET", kind=SpanKind.CLIENT, attributes=attributes) as span:
            if self.hooks:
                redis_hooks.request_hook(span, None, ("SET", key, "PENDING", "EX", 3600), {})
                redis_hooks.response_hook(span, None, True)

    def _charge(self, n: int, payment_id: str) -> None:
        request = httpx.Request(
            "POST",
            self.UPSTREAM,
            json={"order_id": f"ord-{n:08d}", "payment_id": payment_id, "gross_amount": 150_000 + n % 1000},
            headers={
                "accept": "*/*",
                "accept-encoding": "gzip, deflate",
                "user-agent": "python-httpx/0.28.1",
                "authorization": "Basic ZGVtby1zZXJ2ZXIta2V5Og==",
            },
        )
        response = None
        attributes = {"http.method": "POST", "http.url": self.UPSTREAM}
        with self.http.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=attributes) as span:
            if self.hooks:
                httpx_hooks.request_hook(span, request)
            response = httpx.Response(
                200,
                content=GATEWAY_ANSWER,
                headers={"content-type": "application/json", "content-length": str(len(GATEWAY_ANSWER))},
                request=request,
            )
            span.set_attribute("http.status_code", 200)
            if self.hooks:
                httpx_hooks.response_hook(span, request, response)
        if self.hooks:
            httpx_hooks._after_send(request, response, False)  # Client.send returns: the response body


@contextlib.contextmanager
def httpx_send_wrapper() -> Iterator[None]:
    """gotrails' ``httpx.Client.send`` wrapper installed, as in a real setup (its request hook then holds the trail
    until the response body is recorded)."""
    httpx_hooks.install()
    try:
        yield
    finally:
        httpx_hooks.uninstall()


def realistic(requests: int, rounds: int) -> dict[str, list[float]]:
    """CPU microseconds per realistic request, per setup, one value per round (setups interleaved)."""
    labels = {
        "noop": "no OpenTelemetry (no-op tracer provider)",
        "sdk": "OTel SDK + BatchSpanProcessor (null exporter)",
        "held": "the same + gotrails, request path (flush thread held)",
        "live": "the same + gotrails, all work (flush thread live)",
    }
    results: dict[str, list[float]] = {label: [] for label in labels.values()}

    def run(setup: str) -> float:
        if setup == "noop":
            service = Service(trace.NoOpTracerProvider(), hooks=False)
            return cpu_us(lambda: [service() for _ in range(requests)], requests)
        provider = TracerProvider(resource=RESOURCE)
        batch = BatchSpanProcessor(NullSpanExporter(), max_queue_size=requests * 10)  # never full: no span dropped
        provider.add_span_processor(batch)
        if setup == "sdk":
            service = Service(provider, hooks=False)
            try:
                return cpu_us(lambda: ([service() for _ in range(requests)], batch.force_flush()), requests)
            finally:
                provider.shutdown()
        exporter = NullTrailExporter()
        trails = gotrails_processor(exporter, TrailConfig(max_trails=requests * 2))
        provider.add_span_processor(trails)
        service = Service(provider, hooks=True)
        try:
            if setup == "held":
                # The flush thread waits while a chunk of requests is timed, then drains (untimed): trails are held
                # only for one chunk, so that the garbage collector does not walk thousands of them.
                total = 0.0
                for _ in range(requests // HELD_CHUNK):
                    exporter.gate.clear()
                    try:
                        total += cpu_us(lambda: ([service() for _ in range(HELD_CHUNK)], batch.force_flush()), 1)
                    finally:
                        exporter.gate.set()
                        trails.force_flush()
                return total / (requests // HELD_CHUNK * HELD_CHUNK)
            return cpu_us(
                lambda: ([service() for _ in range(requests)], batch.force_flush(), trails.force_flush()), requests
            )
        finally:
            provider.shutdown()
            expected = requests // HELD_CHUNK * HELD_CHUNK if setup == "held" else requests
            if exporter.count != expected:
                raise SystemExit(f"expected {expected} trails, got {exporter.count}")

    setups = list(labels)
    with httpx_send_wrapper():
        Service(trace.NoOpTracerProvider(), hooks=False)()  # imports and caches outside the timing
        for number in range(rounds):
            shift = number % len(setups)
            for setup in setups[shift:] + setups[:shift]:
                results[labels[setup]].append(run(setup))
    return results


def realistic_fold_input() -> FoldInput:
    """The FoldInput of one realistic request, as the processor hands it to the fold (bodies still undecoded)."""
    seen: list[FoldInput] = []
    real_fold = processor_module.fold

    def keep(data: FoldInput) -> dict[str, Any]:
        seen.append(data)
        return real_fold(data)

    provider = TracerProvider(resource=RESOURCE)
    trails = TrailProcessor(NullTrailExporter(), TrailConfig())
    provider.add_span_processor(trails)
    processor_module.fold = keep  # type: ignore[attr-defined]
    try:
        with httpx_send_wrapper():
            Service(provider, hooks=True)()
        trails.force_flush()
    finally:
        processor_module.fold = real_fold  # type: ignore[attr-defined]
        provider.shutdown()
    (data,) = seen
    return data


def realistic_fold_cost(rounds: int, repeat: int) -> dict[str, list[float]]:
    """CPU microseconds per realistic trail for each stage of the flush: fold, mask and limit, serialise; and the
    integrity stamp with the seal (on by default: it serialises the trail instead), and the whole flush work as
    the pipeline does it (fold, mask, stamp and seal, the total size fitted from the stamped bytes)."""
    data = realistic_fold_input()
    config = TrailConfig()
    policy = config.policy()
    chain = Chain.from_config(config)
    assert chain is not None
    results: dict[str, list[float]] = {
        "fold": [],
        "mask and limit": [],
        "serialise": [],
        "all three": [],
        "stamp + seal": [],
        "pipeline": [],
    }
    clock = time.thread_time
    for _ in range(rounds):
        # Stage by stage on one trail at a time (so that no stage pays for collecting the garbage of a batch).
        spent = [0.0, 0.0, 0.0, 0.0]
        for _ in range(repeat):
            start = clock()
            doc = fold(data)
            folded = clock()
            policy.apply(doc)
            masked = clock()
            dumps(doc)
            serialised = clock()
            SealedTrail(chain.stamp(doc, policy.fit))
            spent[0] += folded - start
            spent[1] += masked - folded
            spent[2] += serialised - masked
            spent[3] += clock() - serialised
        start = clock()
        for _ in range(repeat):
            dumps(policy.apply(fold(data)))
        end = clock()
        for _ in range(repeat):
            SealedTrail(chain.stamp(policy.apply(fold(data), total=False), policy.fit))
        results["pipeline"].append((clock() - end) * 1e6 / repeat)
        results["stamp + seal"].append(spent[3] * 1e6 / repeat)
        results["fold"].append(spent[0] * 1e6 / repeat)
        results["mask and limit"].append(spent[1] * 1e6 / repeat)
        results["serialise"].append(spent[2] * 1e6 / repeat)
        results["all three"].append((end - start) * 1e6 / repeat)
    return results


def realistic_trail_size() -> tuple[int, int]:
    data = realistic_fold_input()
    trail = TrailConfig().policy().apply(fold(data))
    return len(dumps(trail)), 1 + len(data.spans)


# ---------------------------------------------------------------------------------------------- empty spans


def request(provider: TracerProvider, children: int = SPANS_PER_REQUEST - 1) -> None:
    """One request shaped like the instrumentations emit it, without payloads."""
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


def throughput(requests: int, rounds: int) -> dict[str, list[float]]:
    """CPU microseconds per empty span for each setup, one value per round (setups interleaved)."""
    spans = requests * SPANS_PER_REQUEST

    def timed(provider: TracerProvider, drain: Callable[[], object] | None = None) -> float:
        def work() -> None:
            for _ in range(requests):
                request(provider)
            if drain is not None:
                drain()

        return cpu_us(work, spans)

    bare = TracerProvider(resource=RESOURCE)
    simple = TracerProvider(resource=RESOURCE)
    simple.add_span_processor(SimpleSpanProcessor(NullSpanExporter()))
    batch_processor = BatchSpanProcessor(NullSpanExporter(), max_queue_size=spans)  # never full: no span dropped
    batch = TracerProvider(resource=RESOURCE)
    batch.add_span_processor(batch_processor)
    exporter = NullTrailExporter()
    trails = gotrails_processor(exporter, TrailConfig(max_trails=requests * 2))
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

    setups: dict[str, Callable[[], float]] = {
        "no processor": lambda: timed(bare),
        "SimpleSpanProcessor + null exporter": lambda: timed(simple),
        "BatchSpanProcessor + null exporter (export thread live)": lambda: timed(batch, batch_processor.force_flush),
        "TrailProcessor (request path, flush thread held)": held_back,
        "TrailProcessor + null trail exporter (flush thread live)": lambda: timed(gotrails, trails.force_flush),
    }
    results: dict[str, list[float]] = {name: [] for name in setups}
    names = list(setups)
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(setups[name]())
    batch_processor.shutdown()
    trails.shutdown()
    assert exporter.count == requests * rounds * 2, exporter.count
    return results


def fold_cost(sizes: Sequence[int], rounds: int) -> dict[int, list[float]]:
    """CPU microseconds to fold, mask and serialise one trail of ``size`` empty spans."""
    policy = TrailConfig().policy()
    results: dict[int, list[float]] = {}
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
        records = [_SpanRecord(s) for s in captured if s is not root]
        data = FoldInput(root=root, spans=records, now_ns=time.time_ns())  # type: ignore[arg-type]
        repeat = max(3, 2000 // size)

        def once(data: FoldInput = data, repeat: int = repeat) -> float:
            start = time.thread_time()
            for _ in range(repeat):
                dumps(policy.apply(fold(data)))
            return (time.thread_time() - start) * 1e6 / repeat

        results[size] = [once() for _ in range(rounds)]
    return results


class _Recorder(SimpleSpanProcessor):
    def __init__(self, sink: list[Any]) -> None:
        super().__init__(NullSpanExporter())
        self._sink = sink

    def on_end(self, span: ReadableSpan) -> None:
        self._sink.append(span)


# ------------------------------------------------------------------------------------------------- masking


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


def masking_cost(rounds: int) -> dict[int, list[float]]:
    """CPU microseconds per KiB to mask and limit a trail whose request body is a JSON document of that size."""
    policy = TrailConfig().policy()
    results: dict[int, list[float]] = {}
    for kib in (1, 16, 64):
        template = orjson.dumps({"entry": {"kind": "http"}, "request": {"body": json_body(kib), "headers": {}}})
        repeat = max(5, 400 // kib)

        def once(template: bytes = template, repeat: int = repeat) -> float:
            docs = [orjson.loads(template) for _ in range(repeat)]  # fresh copies, outside the timing
            start = time.thread_time()
            for doc in docs:
                policy.apply(doc)
            return (time.thread_time() - start) * 1e6 / repeat

        results[kib] = [once() / kib for _ in range(rounds)]
    return results


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args()
    requests, rounds = (300, 3) if args.quick else (2000, 7)
    med = statistics.median

    real = realistic(requests, rounds)
    size, span_count = realistic_trail_size()
    print(
        f"Realistic request ({span_count} spans, trail of {size:,} bytes), {requests} requests x {rounds} rounds; "
        "CPU us per request, median [min-max]"
    )
    for name, values in real.items():
        print(f"{name:56} {spread(values, '.0f'):>22}")
    noop, sdk, held, live = (med(v) for v in real.values())
    print(
        f"gotrails adds {live - sdk:.0f} us per request ({held - sdk:.0f} us of it on the request path): "
        f"{(live - sdk) / (sdk - noop):.0%} of the {sdk - noop:.0f} us the SDK adds over no OpenTelemetry"
    )

    folds = realistic_fold_cost(rounds, max(20, requests // 4))
    print()
    print(
        "Fold + mask + serialise of the realistic trail (flush thread), CPU us per trail, median [min-max]; "
        "stamp + seal and the pipeline (fold, mask, stamp, seal) with integrity on, as by default"
    )
    for stage, values in folds.items():
        print(f"  {stage:14} {spread(values):>22}")

    spans = throughput(requests, rounds)
    base = med(spans["SimpleSpanProcessor + null exporter"])
    bare = med(spans["no processor"])
    print()
    print(f"Empty spans, {requests} requests x {SPANS_PER_REQUEST} spans, {rounds} rounds; CPU us per span")
    print(f"{'setup':56} {'us/span':>22} {'vs Simple':>10} {'over bare SDK':>14}")
    for name, values in spans.items():
        micros = med(values)
        print(f"{name:56} {spread(values, '.2f'):>22} {micros / base:9.2f}x {(micros - bare) / bare * 100:12.1f} %")

    empty = fold_cost((10, 100, 1000), rounds)
    print()
    print("Fold + mask + serialise per trail of empty spans (flush thread)")
    print(f"{'spans':>6} {'us/trail':>10} {'us/span':>8}")
    for count, values in empty.items():
        print(f"{count:6d} {med(values):10.1f} {med(values) / count:8.2f}")

    masking = masking_cost(rounds)
    print()
    print("Masking and limits (Policy.apply) per KiB of JSON body")
    for kib, values in masking.items():
        print(f"{kib:4d} KiB body: {med(values):7.1f} us/KiB")

    flush = med(folds["all three"])
    print()
    print(
        f"gotrails per realistic request, all work included: {live - sdk:.0f} us; of that, fold + mask + serialise "
        f"on the flush thread: {flush:.0f} us ({flush / (live - sdk):.0%})"
    )


if __name__ == "__main__":
    main()
