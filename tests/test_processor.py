"""The processor's lifecycle: roots, flush-once, grace, limits, concurrency, fork and failure isolation."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

import gotrails_otel as gt

from .conftest import TrailHarness
from .forking import fork, requires_fork
from .instrumentation import remote_parent


def test_one_request_gives_exactly_one_trail(harness: TrailHarness) -> None:
    with harness.instrumented().fastapi_request("GET", "/a", "/a", 200):
        harness.instrumented().redis("GET ?")
    harness.one()
    harness.settle(0.3)  # longer than the grace: nothing else arrives
    assert len(harness.exporter.get_finished_trails()) == 1
    assert harness.processor.stats()["in_flight"] == 0


@pytest.mark.parametrize("kind", [SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.PRODUCER])
def test_other_local_roots_are_not_buffered(harness: TrailHarness, kind: SpanKind) -> None:
    tracer = harness.tracer()
    with tracer.start_as_current_span("startup", kind=kind):
        harness.instrumented().sqlalchemy("CREATE TABLE payments (id text)")
        assert harness.processor.stats()["in_flight"] == 0
    harness.settle(0.01)
    assert harness.exporter.get_finished_trails() == []


def test_root_kinds_are_configurable(make_harness: Any) -> None:
    h = make_harness(root_kinds=frozenset({SpanKind.INTERNAL}))
    with h.tracer().start_as_current_span("nightly-job"):
        h.instrumented().sqlalchemy("DELETE FROM sessions")
    trail = h.one()
    assert trail["entry"] == {"kind": "custom", "name": "nightly-job"}
    assert trail["integrations"][0]["name"] == "postgres.sessions.delete"


def test_root_that_ends_before_its_child_waits_for_it(harness: TrailHarness) -> None:
    tracer = harness.tracer()
    inst = harness.instrumented()
    with inst.fastapi_request("POST", "/p", "/p", 202):
        late = tracer.start_span("send-receipt")  # a background task that outlives the response
    harness.settle(0.05)
    assert harness.exporter.get_finished_trails() == []
    late.end()
    trail = harness.one()
    assert trail["complete"] is True
    assert [s["name"] for s in trail["internal_steps"]] == ["send-receipt"]


def test_child_that_never_ends_is_flushed_after_the_grace(make_harness: Any) -> None:
    h = make_harness(grace_ms=100)
    with h.instrumented().fastapi_request("GET", "/stream", "/stream", 200):
        done = h.tracer().start_span("done")
        done.end()
        stuck = h.tracer().start_span("stuck")
    started = time.monotonic()
    trail = h.one(timeout=3)
    assert time.monotonic() - started >= 0.09
    assert trail["complete"] is False
    assert trail["flush_reason"] == "grace_expired"
    assert trail["dropped"] == {"open_spans": 1}
    assert [s["name"] for s in trail["internal_steps"]] == ["done"]
    stuck.end()  # arrives after the flush: counted, never a second trail
    h.settle(0.05)
    assert len(h.exporter.get_finished_trails()) == 1
    assert h.processor.stats()["spans.late"] == 1


def test_root_that_never_ends_is_flushed_at_max_age(make_harness: Any) -> None:
    h = make_harness(grace_ms=10, max_age_ms=150)
    inst = h.instrumented()
    root = inst.tracer("opentelemetry.instrumentation.fastapi").start_span(
        "GET /hang", kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.target": "/hang"}
    )
    with trace.use_span(root, end_on_exit=False):
        inst.redis("GET ?")
    trail = h.one(timeout=3)
    assert trail["flush_reason"] == "max_age" and trail["complete"] is False
    assert trail["latency_ms"] >= 140
    assert [i["name"] for i in trail["integrations"]] == ["redis.get"]
    root.end()
    h.settle(0.05)
    assert len(h.exporter.get_finished_trails()) == 1


def test_two_requests_of_one_trace_in_one_process_give_two_trails(harness: TrailHarness) -> None:
    inst = harness.instrumented()
    with inst.fastapi_request("GET", "/outer", "/outer", 200) as outer:
        client = inst.tracer("opentelemetry.instrumentation.httpx").start_span(
            "GET", kind=SpanKind.CLIENT, attributes={"http.method": "GET", "http.url": "http://127.0.0.1:8000/inner"}
        )
        # The callee extracts the caller's context from traceparent: a remote parent in the same process.
        ctx = client.get_span_context()
        inner_parent = remote_parent(ctx.trace_id, ctx.span_id)
        token = otel_context.attach(otel_context.Context())
        try:
            with inst.fastapi_request("GET", "/inner", "/inner", 200, parent=inner_parent):
                inst.redis("GET ?")
        finally:
            otel_context.detach(token)
        client.end()
    trails = harness.trails(2)
    by_path = {t["request"]["path"]: t for t in trails}
    assert by_path["/outer"]["otel"]["trace_id"] == by_path["/inner"]["otel"]["trace_id"]
    assert by_path["/inner"]["otel"]["parent_span_id"] == format(ctx.span_id, "016x")
    assert [i["type"] for i in by_path["/outer"]["integrations"]] == ["http"]
    assert [i["type"] for i in by_path["/inner"]["integrations"]] == ["cache"]
    assert by_path["/outer"]["otel"]["span_id"] == format(outer.get_span_context().span_id, "016x")


def _request(h: TrailHarness, n: int) -> None:
    inst = h.instrumented()
    with inst.fastapi_request("POST", "/orders/{oid}", f"/orders/{n}", 200):
        gt.set_metadata(n=n)
        with gt.step(f"step-{n}"):
            inst.redis("SET ? ?")
            time.sleep(0.001)
        inst.httpx("POST", f"https://partner.example/orders/{n}", 200)


async def _request_async(h: TrailHarness, n: int) -> None:
    inst = h.instrumented()
    with inst.fastapi_request("POST", "/orders/{oid}", f"/orders/{n}", 200):
        gt.set_metadata(n=n)
        async with gt.step(f"step-{n}"):
            inst.redis("SET ? ?")
            await asyncio.sleep(0.001)
        inst.httpx("POST", f"https://partner.example/orders/{n}", 200)


def test_500_concurrent_requests_across_threads_and_tasks(make_harness: Any) -> None:
    h = make_harness(grace_ms=2000)
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(_request, h, n) for n in range(250)]

        async def run_tasks() -> None:
            await asyncio.gather(*(_request_async(h, n) for n in range(250, 500)))

        asyncio.run(run_tasks())
        for future in futures:
            future.result()
    trails = h.trails(500, timeout=20)
    seen = set()
    for trail in trails:
        n = trail["metadata"]["n"]
        seen.add(n)
        assert trail["request"]["path"] == f"/orders/{n}"
        assert [s["name"] for s in trail["internal_steps"]] == [f"step-{n}"]
        assert [i["name"] for i in trail["integrations"]] == ["redis.set", f"POST partner.example/orders/{n}"]
        step_id = trail["internal_steps"][0]["span_id"]
        assert trail["integrations"][0]["parent_span_id"] == step_id
        assert trail["complete"] is True
    assert seen == set(range(500))


def test_spans_over_the_limit_are_counted(make_harness: Any) -> None:
    h = make_harness(max_spans_per_trail=5)
    with h.tracer().start_as_current_span("GET /", kind=SpanKind.SERVER):
        for _ in range(10):
            h.instrumented().redis("GET ?")
    trail = h.one()
    assert len(trail["integrations"]) == 4  # the root counts as one of the five
    assert trail["dropped"] == {"spans": 6}
    assert h.processor.stats()["spans.max_spans_per_trail"] == 6


def test_capacity_flushes_the_oldest_trail(make_harness: Any) -> None:
    h = make_harness(max_trails=2)
    tracer = h.instrumented().tracer("opentelemetry.instrumentation.fastapi")
    roots = [tracer.start_span(f"GET /{n}", kind=SpanKind.SERVER) for n in range(3)]
    trail = h.one()
    assert trail["entry"]["name"] == "GET /0"
    assert trail["flush_reason"] == "capacity" and trail["complete"] is False
    for root in roots:
        root.end()
    trails = h.trails(3)
    assert [t["entry"]["name"] for t in trails] == ["GET /0", "GET /1", "GET /2"]


def test_shutdown_flushes_what_is_in_flight(make_harness: Any) -> None:
    h = make_harness()
    root = h.instrumented().tracer("x").start_span("GET /open", kind=SpanKind.SERVER)
    h.processor.shutdown()
    trails = h.exporter.get_finished_trails()
    assert [(t["entry"]["name"], t["flush_reason"]) for t in trails] == [("GET /open", "shutdown")]
    root.end()
    h.processor.shutdown()  # twice is harmless
    assert len(h.exporter.get_finished_trails()) == 1


def test_roots_under_suppressed_instrumentation_are_ignored(harness: TrailHarness) -> None:
    token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        with harness.instrumented().kafka_consumer("otlp_logs", 0):
            pass
    finally:
        otel_context.detach(token)
    harness.settle(0.01)
    assert harness.exporter.get_finished_trails() == []


def test_disabled_processor_ignores_everything(make_harness: Any) -> None:
    h = make_harness(enabled=False)
    with h.instrumented().fastapi_request("GET", "/", "/", 200):
        pass
    h.settle(0.01)
    assert h.exporter.get_finished_trails() == []


class _Flaky(gt.InMemoryTrailExporter):
    def export(self, trail: dict[str, Any]) -> None:
        if trail["request"]["path"] == "/boom":
            raise OSError("disk full")
        super().export(trail)


def test_a_failing_export_loses_no_other_trail(make_harness: Any) -> None:
    h = make_harness()
    flaky = _Flaky()
    h.processor.exporter = flaky
    for path in ("/a", "/boom", "/b"):
        with h.instrumented().fastapi_request("GET", path, path, 200):
            pass
    h.processor.force_flush()
    deadline = time.monotonic() + 5
    while len(flaky.get_finished_trails()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [t["request"]["path"] for t in flaky.get_finished_trails()] == ["/a", "/b"]
    assert h.processor.stats()["failures.export"] == 1


def test_a_fold_failure_gives_a_marked_reduced_trail(harness: TrailHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    from gotrails_otel import processor as processor_module

    real_fold = processor_module.fold
    calls = []

    def failing_once(data: Any) -> dict[str, Any]:
        calls.append(data)
        if len(calls) == 1:
            raise ValueError("unexpected span shape")
        return real_fold(data)

    monkeypatch.setattr(processor_module, "fold", failing_once)
    with harness.instrumented().fastapi_request("GET", "/x", "/x", 200):
        harness.instrumented().redis("GET ?")
    trail = harness.one()
    assert trail["integrations"] == []
    assert trail["errors"] == [{"source": "gotrails", "message": "fold failed: ValueError: unexpected span shape"}]
    assert trail["dropped"] == {"spans_unfolded": 4}  # receive, redis, send, send
    assert harness.processor.stats()["failures.fold"] == 1


def test_no_request_thread_waits_for_the_flush(make_harness: Any) -> None:
    h = make_harness()
    gate = threading.Event()

    class Slow(gt.InMemoryTrailExporter):
        def export(self, trail: dict[str, Any]) -> None:
            gate.wait(5)
            super().export(trail)

    h.processor.exporter = Slow()
    started = time.monotonic()
    for n in range(20):
        with h.instrumented().fastapi_request("GET", "/", f"/{n}", 200):
            pass
    assert time.monotonic() - started < 1.0
    gate.set()
    assert h.processor.force_flush(5000)


@requires_fork
def test_forked_child_gets_fresh_buffers_and_lock(harness: TrailHarness, tmp_path: Any) -> None:
    # Another thread holds the processor's lock at fork(): the child must not inherit a lock that stays held.
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with harness.processor._lock:
            holding.set()
            release.wait(5)

    parent_root = harness.instrumented().tracer("x").start_span("GET /parent", kind=SpanKind.SERVER)
    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)

    out = tmp_path / "child.json"
    pid = fork()
    if pid == 0:  # child
        code = 1
        try:
            exporter = gt.InMemoryTrailExporter()
            harness.processor.exporter = exporter
            with harness.instrumented().fastapi_request("GET", "/child", "/child", 200):
                pass
            harness.processor.force_flush(3000)
            deadline = time.monotonic() + 3
            while not exporter.get_finished_trails() and time.monotonic() < deadline:
                time.sleep(0.01)
            out.write_bytes(orjson.dumps([t["request"]["path"] for t in exporter.get_finished_trails()]))
            code = 0
        finally:
            os._exit(code)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert orjson.loads(out.read_bytes()) == ["/child"]  # the parent's open trail was not copied
    parent_root.end()
    assert [t["entry"]["name"] for t in harness.trails(1)] == ["GET /parent"]
