"""``gotrails_otel.testing.capture_trails`` in this process: which trails it captures, that it waits for requests
that ended inside the block, and that it leaves no processor or exporter behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

import gotrails_otel as gt
from gotrails_otel.processor import processors
from gotrails_otel.sealed import seal
from gotrails_otel.testing import CapturedTrails, capture_trails

from .conftest import TrailHarness, validate_trail


def _request(harness: TrailHarness, path: str, status: int = 200) -> None:
    with harness.instrumented().fastapi_request("GET", path, path, status), gt.step("Handle"):
        gt.set_metadata(path=path)


def test_captures_exactly_the_trails_of_the_block(harness: TrailHarness) -> None:
    _request(harness, "/before")
    with capture_trails() as trails:
        _request(harness, "/one")
        assert [t["request"]["path"] for t in trails] == ["/one"]  # there as soon as the request returned
        _request(harness, "/two", 503)
    _request(harness, "/after")
    assert [t["request"]["path"] for t in trails] == ["/one", "/two"]
    assert trails[1]["status"] == "error" and trails[0]["metadata"] == {"path": "/one"}
    for trail in trails:
        validate_trail(trail)
    # the application's own exporter got every trail, the captured ones included, as before
    exported = harness.trails(4)
    assert [t["request"]["path"] for t in exported] == ["/before", "/one", "/two", "/after"]
    assert list(trails) == exported[1:3]
    assert harness.processor.exporter is harness.exporter  # the tee is gone


def test_reading_inside_the_block_never_misses_a_finished_request(harness: TrailHarness) -> None:
    with capture_trails() as trails:
        for n in range(30):
            _request(harness, f"/r{n}")
            assert len(trails) == n + 1


def test_leaving_waits_for_children_in_their_grace_period(make_harness: object) -> None:
    harness = make_harness(grace_ms=2000)  # type: ignore[operator]
    tracer = harness.tracer()
    with capture_trails() as trails:
        with tracer.start_as_current_span("GET /slow", kind=SpanKind.SERVER):
            child = tracer.start_span("background-job")
        threading.Timer(0.3, child.end).start()
    [trail] = trails
    assert trail["complete"] is True and trail["flush_reason"] == "complete"
    assert [s["name"] for s in trail["internal_steps"]] == ["background-job"]


def test_leaving_waits_for_a_request_a_server_thread_is_still_finishing(harness: TrailHarness) -> None:
    responded = threading.Event()

    def serve() -> None:
        with harness.tracer().start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER):
            responded.set()  # the client has its answer; the server span ends a moment later
            time.sleep(0.2)

    with capture_trails() as trails:
        threading.Thread(target=serve).start()
        assert responded.wait(5)
    assert len(trails) == 1 and trails[0]["entry"]["name"] == "POST /v1/payments"
    assert trails.wait() is trails  # after the block the list is final


def test_wait_for_a_count(harness: TrailHarness) -> None:
    with capture_trails() as trails:
        threading.Timer(0.2, _request, (harness, "/late")).start()
        assert [t["request"]["path"] for t in trails.wait(1)] == ["/late"]
        assert len(trails.wait(2, timeout=0.1)) == 1  # a timeout is not an error: the test asserts


def test_nested_blocks_and_an_exception_leave_nothing_behind(harness: TrailHarness) -> None:
    with capture_trails() as outer:
        _request(harness, "/outer")
        with pytest.raises(RuntimeError), capture_trails() as inner:
            _request(harness, "/inner")
            raise RuntimeError("test failed")
        _request(harness, "/outer-again")
    assert [t["request"]["path"] for t in inner] == ["/inner"]
    assert [t["request"]["path"] for t in outer] == ["/outer", "/inner", "/outer-again"]
    assert harness.processor.exporter is harness.exporter


_CHECKPOINT = {"record": "gotrails.checkpoint", "version": 1, "chain": "5b0d0f8e6f2a4c1e9d3b7a6c5e4f3a2b", "seq": 1}


def test_checkpoint_records_are_not_trails(harness: TrailHarness) -> None:
    with capture_trails() as trails:
        harness.processor.exporter.export(seal(_CHECKPOINT))  # as the exporters see them
        _request(harness, "/after-checkpoint")
    assert [t["request"]["path"] for t in trails] == ["/after-checkpoint"]
    assert harness.exporter.get_finished_records()[0] == _CHECKPOINT


@pytest.fixture
def bare_provider() -> Iterator[TracerProvider]:
    """A provider without any trail processor, while no trail processor runs in this process."""
    assert list(processors()) == [], "a trail processor of another test is still running"
    provider = TracerProvider()
    yield provider
    provider.shutdown()


def _span_processors(provider: TracerProvider) -> tuple[object, ...]:
    return provider._active_span_processor._span_processors


def test_without_a_trail_processor_one_is_added_for_the_block_and_removed(bare_provider: TracerProvider) -> None:
    before = _span_processors(bare_provider)
    tracer = bare_provider.get_tracer("app")
    for _ in range(3):
        with capture_trails(tracer_provider=bare_provider) as trails:
            assert len(_span_processors(bare_provider)) == len(before) + 1
            with tracer.start_as_current_span("GET /health", kind=SpanKind.SERVER):
                tracer.start_span("Check").end()
        assert _span_processors(bare_provider) == before
        assert list(processors()) == []
        [trail] = trails
        validate_trail(trail)
        assert [s["name"] for s in trail["internal_steps"]] == ["Check"]
    with tracer.start_as_current_span("GET /health", kind=SpanKind.SERVER):
        pass
    assert len(trails) == 1


def test_without_an_sdk_provider_it_says_what_is_missing(bare_provider: TracerProvider) -> None:
    with (
        pytest.raises(TypeError, match="SDK TracerProvider"),
        capture_trails(tracer_provider=trace.NoOpTracerProvider()),
    ):
        pass


def test_captured_trails_compare_and_print_like_a_list(harness: TrailHarness) -> None:
    with capture_trails() as trails:
        _request(harness, "/x")
    assert trails == list(trails) and trails[:1] == [trails[0]]
    assert isinstance(trails, CapturedTrails) and repr(trails).startswith("CapturedTrails([{")
