"""The in-request API: steps (every form), custom integrations, metadata, errors, and no-ops outside a trail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

import gotrails_otel as gt

from .conftest import TrailHarness


def _root(h: TrailHarness) -> Any:
    return h.instrumented().fastapi_request("POST", "/v1/payments", "/v1/payments", 201)


@gt.step("decorated-sync")
def decorated(x: int) -> int:
    """Docstring kept."""
    return x * 2


@gt.step("decorated-async")
async def decorated_async(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def test_every_step_form_in_start_order_with_nesting(harness: TrailHarness) -> None:
    async def inner() -> int:
        async with gt.step("async-with"):
            return await decorated_async(1)

    with _root(harness):
        with gt.step("outer") as outer:
            outer.set_request({"amount": 10})
            with gt.step("inner"):
                pass
            outer.set_response({"ok": True})
            outer.set_metadata(rule="v2")
        assert decorated(21) == 42
        assert asyncio.run(inner()) == 2
        assert gt.trace_step("traced", lambda a, b=0: a + b, 1, b=2) == 3
        assert asyncio.run(gt.trace_step("traced-async", decorated_async, 5)) == 6
        handle = gt.start_step("manual")
        with gt.step("under-manual"):
            pass
        gt.end_step(handle)
        gt.end_step(handle)  # twice is harmless
    trail = harness.one()
    steps = trail["internal_steps"]
    assert [s["name"] for s in steps] == [
        "outer",
        "inner",
        "decorated-sync",
        "async-with",
        "decorated-async",
        "traced",
        "traced-async",
        "decorated-async",
        "manual",
        "under-manual",
    ]
    by_name = {s["name"]: s for s in steps}
    assert by_name["inner"]["parent_span_id"] == by_name["outer"]["span_id"]
    assert by_name["under-manual"]["parent_span_id"] == by_name["manual"]["span_id"]
    assert by_name["outer"]["request"] == {"amount": 10}
    assert by_name["outer"]["response"] == {"ok": True}
    assert by_name["outer"]["metadata"] == {"rule": "v2"}
    assert all(s["status"] == "ok" for s in steps)
    assert decorated.__doc__ == "Docstring kept." and decorated.__name__ == "decorated"


def test_failed_step_is_recorded_and_the_exception_propagates(harness: TrailHarness) -> None:
    with _root(harness):
        with pytest.raises(KeyError), gt.step("LookupMerchant"):
            raise KeyError("m-789")
        handle = gt.start_step("Charge")
        gt.end_step(handle, error=TimeoutError("upstream slow"))
    trail = harness.one()
    failed = {s["name"]: s for s in trail["internal_steps"]}
    assert failed["LookupMerchant"]["status"] == "error"
    assert failed["LookupMerchant"]["error"] == {"message": "'m-789'", "type": "KeyError"}
    assert trail["errors"] == [
        {"source": "LookupMerchant", "message": "'m-789'", "type": "KeyError"},
        {"source": "Charge", "message": "upstream slow", "type": "TimeoutError"},
    ]


def test_custom_integration(harness: TrailHarness) -> None:
    with _root(harness):
        with gt.integration("custom", "s3.put_object") as call:
            call.set_request({"bucket": "receipts", "key": "pay-123.pdf"})
            call.response = {"etag": "abc"}
            call.set_metadata(region="ap-southeast-1")
        with pytest.raises(ConnectionError), gt.integration("http", "legacy.soap") as soap:
            soap.request = {"action": "Charge"}
            raise ConnectionError("refused")
        with gt.integration("queue", "sqs.send") as sqs:  # unknown type: recorded as custom
            sqs.set_error("throttled")
    trail = harness.one()
    s3, soap_call, sqs_call = trail["integrations"]
    assert s3 == {
        **{k: s3[k] for k in ("start_offset_ms", "latency_ms", "span_id", "parent_span_id")},
        "type": "custom",
        "name": "s3.put_object",
        "request": {"bucket": "receipts", "key": "pay-123.pdf"},
        "response": {"etag": "abc"},
        "error": None,
        "metadata": {"region": "ap-southeast-1"},
    }
    assert soap_call["type"] == "http" and soap_call["request"] == {"action": "Charge"}
    assert soap_call["error"] == {"message": "refused", "type": "ConnectionError"}
    assert sqs_call["type"] == "custom" and sqs_call["error"] == {"message": "throttled"}
    assert [e["source"] for e in trail["errors"]] == ["legacy.soap", "sqs.send"]


def test_metadata_and_record_error(harness: TrailHarness) -> None:
    with _root(harness):
        gt.set_metadata(user_id="u-123", merchant_id="m-789")
        with gt.step("Lookup"):
            gt.set_metadata(order_id="ord-789", user_id="u-124")  # from a nested span, later wins
            gt.record_error("fraud-check", "score unavailable")
        gt.record_error("notify", ValueError("bad template"))
    trail = harness.one()
    assert trail["metadata"] == {"user_id": "u-124", "merchant_id": "m-789", "order_id": "ord-789"}
    assert trail["errors"] == [
        {"source": "fraud-check", "message": "score unavailable"},
        {"source": "notify", "message": "bad template", "type": "ValueError"},
    ]
    assert trail["status"] == "ok"


def test_errors_are_capped(make_harness: Any) -> None:
    h = make_harness(max_errors_per_trail=2)
    with _root(h):
        for n in range(5):
            gt.record_error("loop", f"e{n}")
    trail = h.one()
    assert [e["message"] for e in trail["errors"]] == ["e0", "e1"]
    assert trail["dropped"] == {"errors": 3}


def test_unhandled_exception_in_the_request_fails_the_trail(harness: TrailHarness) -> None:
    tracer = harness.instrumented().tracer("opentelemetry.instrumentation.fastapi")
    with (
        pytest.raises(RuntimeError),
        tracer.start_as_current_span("GET /crash", kind=SpanKind.SERVER, attributes={"http.method": "GET"}),
    ):
        raise RuntimeError("boom")
    trail = harness.one()
    assert trail["status"] == "error"
    assert trail["errors"] == [{"source": "GET /crash", "message": "boom", "type": "RuntimeError"}]


def test_calls_outside_a_trail_are_harmless_no_ops(harness: TrailHarness) -> None:
    assert trace.get_current_span() is trace.INVALID_SPAN
    gt.set_metadata(a=1)
    gt.record_error("x", "y")
    with gt.step("alone") as s:
        s.set_request({"a": 1})
    with gt.integration("custom", "alone") as call:
        call.response = {"b": 2}
    assert gt.trace_step("t", lambda: 7) == 7
    gt.end_step("not a handle")  # type: ignore[arg-type]
    with harness.tracer().start_as_current_span("job", kind=SpanKind.INTERNAL):  # not a trail root
        gt.set_metadata(b=2)
        with gt.step("in-job"):
            pass
    harness.settle(0.01)
    assert harness.exporter.get_finished_trails() == []
    assert harness.processor.stats()["in_flight"] == 0


def test_api_without_any_processor(make_harness: Any) -> None:
    h = make_harness()
    h.processor.shutdown()
    with _root(h):
        gt.set_metadata(a=1)
        with gt.step("s"):
            gt.record_error("x", "y")
    assert h.exporter.get_finished_trails() == []
