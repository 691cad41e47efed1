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
    from gotrails_otel import pipeline as processor_module

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
        with harness.processor._buffer.lock:
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


# ------------------------------------------------------------------------------------------ robustness (#9)


def _requests(h: TrailHarness, count: int, prefix: str = "/r") -> None:
    for n in range(count):
        with h.instrumented().fastapi_request("GET", prefix, f"{prefix}/{n}", 200):
            pass


def test_exactly_one_trail_per_request_under_threads_holds_and_late_children(make_harness: Any) -> None:
    """Roots, children, payload and processing holds released on other threads, children ending after their
    root: every request gives exactly one trail, complete, with all of its own spans and none of another's."""
    h = make_harness(grace_ms=3000)
    tracer = h.tracer()
    inst = h.instrumented()
    count = 400
    barrier = threading.Barrier(8)

    def one(n: int) -> None:
        if n < 8:
            barrier.wait(5)
        releases = []
        with inst.fastapi_request("POST", "/orders/{oid}", f"/orders/{n}", 200) as root:
            gt.set_metadata(n=n)
            ctx = root.get_span_context()
            releases.append(h.processor.captures.hold(ctx.span_id, processing=n % 3 == 0))
            releases.append(h.processor.captures.hold(ctx.span_id))
            late = tracer.start_span(f"late-{n}")  # ends after the root, on another thread
            with gt.step(f"step-{n}"):
                inst.redis("SET ? ?")
        done = threading.Thread(target=lambda: (late.end(), [r() for r in releases if r is not None]))
        done.start()
        done.join()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(count)))
    trails = h.trails(count, timeout=30)
    by_n = {t["metadata"]["n"]: t for t in trails}
    assert sorted(by_n) == list(range(count))
    for n, trail in by_n.items():
        assert trail["request"]["path"] == f"/orders/{n}"
        assert trail["flush_reason"] == "complete" and trail["complete"] is True
        assert sorted(s["name"] for s in trail["internal_steps"]) == sorted([f"late-{n}", f"step-{n}"])
        assert [i["name"] for i in trail["integrations"]] == ["redis.set"]
    assert h.processor.stats()["in_flight"] == 0


class _Blocking(gt.InMemoryTrailExporter):
    """An exporter that never returns until ``gate`` is set (a hung network call, a full pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def export(self, trail: gt.SealedTrail) -> None:
        self.entered.set()
        self.gate.wait()
        super().export(trail)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.gate.wait()
        return True

    def shutdown(self) -> None:
        self.gate.wait()


def test_a_hanging_exporter_is_bounded_counted_and_does_not_block_shutdown(make_harness: Any) -> None:
    h = make_harness(export_queue_size=50, export_timeout_ms=300, shutdown_timeout_ms=800)
    hung = _Blocking()
    h.processor.exporter = hung
    started = time.monotonic()
    _requests(h, 1000)
    assert time.monotonic() - started < 10  # the request path never waits for the exporter
    assert hung.entered.wait(5)
    time.sleep(1.0)  # past the export deadline: the stuck export is abandoned, a second one gets stuck too
    stats = h.processor.stats()
    assert stats["export_queue"] <= 50
    assert stats["trails.export_queue_full"] >= 1000 - 50 - 2 - 3  # queue, stuck exports, a trail or two in flight
    assert stats["failures.export_timeout"] >= 1
    assert stats["in_flight"] == 0
    flush_started = time.monotonic()
    assert h.processor.force_flush(300) is False
    assert time.monotonic() - flush_started < 1.5
    shutdown_started = time.monotonic()
    h.processor.shutdown()
    assert time.monotonic() - shutdown_started < 3.0
    assert h.processor.stats()["trails.unexported_at_shutdown"] >= 1
    hung.gate.set()


def test_an_exporter_that_recovers_gets_every_queued_trail(make_harness: Any) -> None:
    h = make_harness(export_timeout_ms=5000)
    slow = _Blocking()
    h.processor.exporter = slow
    _requests(h, 20)
    assert slow.entered.wait(5)
    deadline = time.monotonic() + 5
    while h.processor.stats()["export_queue"] < 19 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h.processor.stats()["export_queue"] == 19  # the rest wait in the queue while the first is stuck
    slow.gate.set()
    assert h.processor.force_flush(5000)
    assert len(slow.get_finished_trails()) == 20
    assert "failures.export_timeout" not in h.processor.stats()


class _Raising(gt.InMemoryTrailExporter):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def export(self, trail: gt.SealedTrail) -> None:
        raise OSError(self.message)


class _RaisingToo(_Raising):
    pass


def test_a_failing_exporter_is_logged_once_per_interval_with_counts(
    make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from gotrails_otel.exporters import _MultiExporter

    h = make_harness()
    good = gt.InMemoryTrailExporter()
    h.processor.exporter = _MultiExporter([_Raising("disk full"), good, _RaisingToo("connection refused")])
    with caplog.at_level("ERROR", logger="gotrails_otel"):
        _requests(h, 300)
        assert h.processor.force_flush(10_000) is True
    records = [r for r in caplog.records if r.name == "gotrails_otel"]
    assert len(good.get_finished_trails()) == 300  # one failing exporter does not cost the others a trail
    assert len(records) == 2, [r.getMessage() for r in records]  # once per failing exporter, not once per trail
    messages = " ".join(r.getMessage() for r in records)
    assert "_Raising" in messages and "disk full" in messages
    assert "_RaisingToo" in messages and "connection refused" in messages
    assert all("Raised at" in r.getMessage() for r in records)  # the first of each kind with where it was raised
    assert h.processor.stats()["failures.export"] == 600
    h.processor._failures.flush()
    summary = [r.getMessage() for r in caplog.records if "more time" in r.getMessage()]
    assert any("299 more time(s)" in m for m in summary)


def test_expiry_holds_under_sustained_load(make_harness: Any) -> None:
    """A trail with a stuck child is cut at its grace deadline even while the flush thread never runs dry."""
    h = make_harness(grace_ms=200, export_queue_size=100_000, export_queue_bytes=1 << 30)

    class Slow(gt.InMemoryTrailExporter):
        def export(self, trail: gt.SealedTrail) -> None:
            time.sleep(0.004)
            super().export(trail)

    slow = Slow()
    h.processor.exporter = slow
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            _requests(h, 5, "/load")

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        with h.instrumented().fastapi_request("GET", "/stuck", "/stuck", 200):
            stuck = h.tracer().start_span("stuck")
        time.sleep(0.2 + 0.5)  # the grace, and a margin: the trail must have been cut by now
        stuck.end()
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert h.processor.force_flush(60_000)
    exported = [t for t in slow.get_finished_trails() if t["request"]["path"] == "/stuck"]
    assert len(exported) == 1
    assert exported[0]["flush_reason"] == "grace_expired"
    assert exported[0]["dropped"]["open_spans"] == 1
    assert h.processor.stats()["spans.late"] == 1


def test_the_late_ids_of_folded_trails_keep_none_of_their_spans_alive(make_harness: Any) -> None:
    """The span ids of folded trails are remembered (so that late arrivals are counted), not their spans: a service
    keeps the ids of thousands of trails, and their ended root spans (attributes, events, resource) would be memory and
    work for the garbage collector. A late child is still counted."""
    import gc

    from opentelemetry.sdk.trace import ReadableSpan

    h = make_harness()
    traces = set()
    for n in range(20):
        with h.instrumented().fastapi_request("GET", f"/r{n}", "/r", 200) as root:
            pass
        traces.add(root.get_span_context().trace_id)
    context = root.get_span_context()
    del root
    h.trails(20)
    gc.collect()
    spans = [o for o in gc.get_objects() if issubclass(type(o), ReadableSpan)]  # type(): no lazy object set up
    kept = [o for o in spans if o.context.trace_id in traces]
    assert kept == []
    assert context.span_id in h.processor._buffer.late
    h.tracer().start_span("after", context=trace.set_span_in_context(trace.NonRecordingSpan(context))).end()
    h.settle(0.05)
    assert h.processor.stats()["spans.late"] == 1


def test_late_spans_and_payloads_are_counted_on_the_trail_and_in_the_metrics(make_harness: Any) -> None:
    h = make_harness(grace_ms=50)
    gate = threading.Event()
    folding = threading.Event()

    def hold_the_fold(document: dict[str, Any]) -> dict[str, Any]:
        if document["request"]["path"] == "/late":
            folding.set()
            gate.wait(5)
        return document

    # Trails wait here after they are flushed: late arrivals before the fold are counted on the trail itself.
    h.processor._worker.stages.append(hold_the_fold)
    tracer = h.tracer()
    with h.instrumented().fastapi_request("GET", "/first", "/first", 200):
        pass
    with h.instrumented().fastapi_request("GET", "/late", "/late", 200) as root:
        stuck = tracer.start_span("stuck")
    root_id = root.get_span_context().span_id
    assert folding.wait(3)  # flushed at the grace deadline, the fold is under way
    # An open span's child starts after the flush, then ends; so does the stuck span; a payload comes late.
    child = tracer.start_span("child", context=trace.set_span_in_context(stuck))
    child.end()
    stuck.end()
    assert h.processor.captures.update(root_id, "metadata", {"late": True}) is False
    gate.set()
    first, late = h.trails(2)
    assert late["flush_reason"] == "grace_expired"
    # The stage ran after the seal state was taken: these arrived while the trail was being sealed.
    stats = h.processor.stats()
    assert stats["spans.late"] == 2 and stats["payloads.late"] == 1
    # After the seal, the span ids are remembered: a later child of the root is counted, never a new trail.
    gt_child = tracer.start_span("after", context=trace.set_span_in_context(root))
    gt_child.end()
    h.settle(0.05)
    assert h.processor.stats()["spans.late"] == 3
    assert len(h.exporter.get_finished_trails()) == 2
    assert first["complete"] is True


def test_late_arrivals_before_the_fold_are_counted_per_trail(make_harness: Any) -> None:
    h = make_harness(grace_ms=50)
    gate = threading.Event()

    def slow_first(document: dict[str, Any]) -> dict[str, Any]:
        if document["request"]["path"] == "/first":
            gate.wait(5)
        return document

    h.processor._worker.stages.append(slow_first)
    tracer = h.tracer()
    with h.instrumented().fastapi_request("GET", "/first", "/first", 200):
        pass
    with h.instrumented().fastapi_request("GET", "/late", "/late", 200) as root:
        stuck = tracer.start_span("stuck")
    root_id = root.get_span_context().span_id
    # "/late" is cut at its deadline (acted on when the next request starts) while the flush thread is still busy
    # with "/first": it waits for the fold, and what arrives meanwhile is counted on it.
    time.sleep(0.1)
    with h.instrumented().fastapi_request("GET", "/next", "/next", 200):
        pass
    with h.processor._buffer.lock:
        assert [t.reason for t in h.processor._buffer.ready][:1] == [gt.FlushReason.GRACE_EXPIRED]
    stuck.end()
    assert h.processor.captures.update(root_id, "response", {"late": True}) is False
    gate.set()
    _, late, _ = h.trails(3)
    assert late["flush_reason"] == "grace_expired"
    assert late["dropped"] == {"open_spans": 1, "late_spans": 1, "late_payloads": 1}
    assert "late" not in str(late["response"])


def test_dropped_spans_are_counted_in_deep_chains(make_harness: Any) -> None:
    h = make_harness(max_spans_per_trail=5000)
    tracer = h.tracer()
    with tracer.start_as_current_span("GET /deep", kind=SpanKind.SERVER):
        spans, tokens = [], []
        for n in range(6000):
            span = tracer.start_span(f"s{n}")  # each the child of the one before
            spans.append(span)
            tokens.append(otel_context.attach(trace.set_span_in_context(span)))
        for span, token in zip(reversed(spans), reversed(tokens), strict=True):
            span.end()
            otel_context.detach(token)
    trail = h.one(timeout=30)
    assert trail["dropped"]["spans"] == 1001  # 6,001 spans, 5,000 kept (the root is one of them)
    assert len(trail["internal_steps"]) == 4999
    assert trail["complete"] is True
    assert h.processor.stats()["spans.max_spans_per_trail"] == 1001


def test_payloads_are_recorded_as_they_were_when_set(harness: TrailHarness) -> None:
    order = {"id": 1, "items": ["book"]}
    with harness.instrumented().fastapi_request("POST", "/p", "/p", 200):
        gt.set_metadata(order=order)
        with gt.step("Price") as s:
            s.set_request(order)
            s.set_metadata(snapshot=order)
        with gt.integration("custom", "ledger.post") as call:
            call.request = order
            call.response = {"ok": order["items"]}
        order["items"].append("pen")  # changed after the calls: the trail keeps what was true at the call
        order["id"] = 2
    trail = harness.one()
    assert trail["metadata"]["order"] == {"id": 1, "items": ["book"]}
    (step,) = trail["internal_steps"]
    assert step["request"] == {"id": 1, "items": ["book"]}
    assert step["metadata"]["snapshot"] == {"id": 1, "items": ["book"]}
    (call_entry,) = trail["integrations"]
    assert call_entry["request"] == {"id": 1, "items": ["book"]} and call_entry["response"] == {"ok": ["book"]}


def test_an_object_changing_during_the_fold_breaks_no_trail(make_harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The application changes a dict it gave to ``set_metadata`` while gotrails' flush thread folds the trail (made
    certain here: the change happens at the moment the fold reaches the dict's ``trigger`` value)."""
    from gotrails_otel import _json, fold

    h = make_harness()
    trigger = ["change the dict now"]
    shared: dict[str, Any] = {"a": 1, "trigger": trigger, "z": 2}
    real = _json.json_safe

    def meanwhile(value: Any, depth: int = _json.MAX_DEPTH) -> Any:
        if value is trigger:  # another thread of the application changes the dict right now
            shared[f"k{len(shared)}"] = len(shared)
        return real(value, depth)

    monkeypatch.setattr(_json, "json_safe", meanwhile)
    monkeypatch.setattr(fold, "json_safe", meanwhile)
    for n in range(30):
        with h.instrumented().fastapi_request("GET", "/m", f"/m/{n}", 200):
            gt.set_metadata(shared=shared)
            with gt.step("s") as s:
                s.set_response(shared)
    trails = h.trails(30, timeout=20)
    assert all(t["errors"] == [] for t in trails)  # no trail reduced to a fallback
    assert all(t["metadata"]["shared"]["trigger"] == ["change the dict now"] for t in trails)
    assert "failures.fold" not in h.processor.stats()


def test_the_byte_budget_flushes_the_oldest_trails(make_harness: Any) -> None:
    h = make_harness(max_buffer_bytes=1_000_000, grace_ms=5000)
    body = b'{"blob": "' + b"x" * 60_000 + b'"}'
    roots = []
    tracer = h.instrumented().tracer("opentelemetry.instrumentation.fastapi")
    for n in range(40):  # 40 open requests with 60 KB bodies: 2.4 MB against a 1 MB budget
        root = tracer.start_span(f"POST /{n}", kind=SpanKind.SERVER, attributes={"http.method": "POST"})
        roots.append(root)
        body_capture = gt.capture.BodyCapture(65_536, "application/json")
        h.processor.captures.update(root.get_span_context().span_id, "request", {"body": body_capture})
        body_capture.add(body)
        assert h.processor.stats()["buffer_bytes"] <= 1_000_000
        time.sleep(0.02)  # a request rate the fold keeps up with (see the next test for a fold that falls behind)
    h.settle(0.1)
    evicted = h.exporter.get_finished_trails()
    assert len(evicted) >= 20
    assert {t["flush_reason"] for t in evicted} == {"memory"}
    assert [t["entry"]["name"] for t in evicted] == [f"POST /{n}" for n in range(len(evicted))]  # oldest first
    assert all(t["request"]["body"]["blob"].startswith("x" * 1000) for t in evicted)  # what was captured is kept
    stats = h.processor.stats()
    assert stats["trails.memory"] == len(evicted)
    assert stats["in_flight"] == 40 - len(evicted)
    assert stats["buffer_bytes"] <= 1_000_000
    for root in roots:
        root.end()
    assert len(h.trails(40)) == 40


def test_a_fold_backlog_is_bounded_by_the_byte_budget_too(make_harness: Any) -> None:
    h = make_harness(max_buffer_bytes=1_000_000)
    gate = threading.Event()
    h.processor._worker.stages.append(lambda document: (gate.wait(10), document)[1])
    tracer = h.tracer()
    for n in range(60):  # 60 complete requests of ~60 KB while the flush thread is stuck on the first
        with h.instrumented().fastapi_request("POST", "/b", f"/b/{n}", 200):
            for _ in range(100):
                tracer.start_span("s", attributes={"payload": "x" * 400}).end()
    stats = h.processor.stats()
    assert stats["fold_queue_bytes"] <= 1_000_000
    assert stats["trails.fold_queue_full"] >= 30
    gate.set()
    assert h.processor.force_flush(10_000)
    stats = h.processor.stats()
    assert stats["trails.complete"] + stats["trails.fold_queue_full"] == 60
    assert stats["buffer_bytes"] == 0 and stats["fold_queue_bytes"] == 0


def test_spans_count_against_the_byte_budget(make_harness: Any) -> None:
    h = make_harness(max_buffer_bytes=2_000_000)
    tracer = h.tracer()
    with tracer.start_as_current_span("GET /big", kind=SpanKind.SERVER):
        for n in range(5000):
            tracer.start_span(f"s{n}", attributes={"a": n, "b": "x" * 10}).end()
            if n == 0:
                first = h.processor.stats()["buffer_bytes"]
    trail = h.one(timeout=30)
    assert first > 0
    assert trail["flush_reason"] == "memory" and trail["complete"] is False
    stats = h.processor.stats()
    assert 1000 < len(trail["internal_steps"]) < 5000
    # What came after the flush is counted: the rest of the spans, and the root's own end.
    assert stats["spans.late"] == 5000 - len(trail["internal_steps"]) + 1
    assert stats["buffer_bytes"] == 0


def test_steps_join_a_trail_on_a_provider_that_is_not_the_global_one() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    exporter = gt.InMemoryTrailExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "private"}))
    processor = gt.TrailProcessor(exporter, gt.TrailConfig(grace_ms=100))
    provider.add_span_processor(processor)
    assert trace.get_tracer_provider() is not provider
    server = provider.get_tracer("opentelemetry.instrumentation.fastapi")
    try:
        with server.start_as_current_span("POST /p", kind=SpanKind.SERVER, attributes={"http.method": "POST"}):
            with gt.step("Validate") as s:
                s.set_request({"amount": 1})
            with gt.integration("custom", "vault.read") as call:
                call.response = {"ok": True}
        assert processor.force_flush(5000)
        (trail,) = exporter.get_finished_trails()
        assert trail["service"] == "private"
        assert [s["name"] for s in trail["internal_steps"]] == ["Validate"]
        assert trail["internal_steps"][0]["request"] == {"amount": 1}
        assert [(i["name"], i["response"]) for i in trail["integrations"]] == [("vault.read", {"ok": True})]
    finally:
        provider.shutdown()


def test_pipeline_stages_run_between_the_policy_and_the_seal(harness: TrailHarness) -> None:
    from gotrails_otel.pipeline import DropTrail
    from gotrails_otel.sealed import seal

    seen: list[str] = []

    def sample(document: dict[str, Any]) -> dict[str, Any]:
        assert document["request"]["headers"].get("authorization") in (None, ["***"])  # masked already
        if document["request"]["path"] == "/drop":
            raise DropTrail("sampled_out")
        return document

    def stamp(document: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(document["request"]["path"])
        if document["request"]["path"] == "/none":
            return None
        if document["request"]["path"] == "/boom":
            raise ValueError("stage broke")
        document["metadata"]["stamped"] = True
        harness.processor._worker.emit(seal({"gotrails_checkpoint": {"after": document["request"]["path"]}}))
        return document

    harness.processor.stages.extend([sample, stamp])
    for path in ("/keep", "/drop", "/none", "/boom"):
        with harness.instrumented().fastapi_request("GET", path, path, 200):
            pass
    assert harness.processor.force_flush(5000)
    records = harness.exporter.get_finished_trails()
    assert len(records) == 3
    assert records[0]["request"]["path"] == "/keep" and records[2]["request"]["path"] == "/boom"
    assert records[0]["metadata"] == {"stamped": True}
    assert records[1] == {"gotrails_checkpoint": {"after": "/keep"}}
    assert "stamped" not in records[2]["metadata"]  # the failing stage was skipped, the trail still went out
    assert seen == ["/keep", "/none", "/boom"]
    stats = harness.processor.stats()
    assert stats["trails.sampled_out"] == 1 and stats["trails.stamp"] == 1 and stats["failures.stage"] == 1


def test_trails_left_unsealed_when_shutdown_gives_up_are_counted(make_harness: Any) -> None:
    # A slow stage keeps the flush thread busy past the shutdown deadline: the thread stops at the deadline, and
    # every trail it did not seal is counted, so sealed + unsealed is every request.
    h = make_harness(grace_ms=0, integrity=False)  # no checkpoint records among the counts

    def slow(document: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.05)
        return document

    h.processor.stages.append(slow)
    for n in range(40):
        with h.instrumented().fastapi_request("GET", f"/n/{n}", "/n/{n}", 200):
            pass
    h.processor.shutdown(timeout_millis=300)
    thread = h.processor._worker._thread
    if thread is not None:  # the trail in its hands when shutdown gave up: sealed into the closed queue, counted
        thread.join(5)
    stats = h.processor.stats()
    exported = len(h.exporter.get_finished_trails())
    unsealed = stats.get("trails.unsealed_at_shutdown", 0)
    assert unsealed > 0, stats
    late = stats.get("trails.unexported_at_shutdown", 0) + stats.get("trails.exporter_shut_down", 0)
    assert exported + unsealed + late == 40, {k: v for k, v in stats.items() if v}
