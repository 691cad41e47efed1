"""Tail sampling: the same decision as the SDK's TraceIdRatioBased for every trace id, in every process; errors and
slow trails always kept; a custom sampler that sees the trail; every trail sampled out counted by reason."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

import gotrails_otel as gt
from gotrails_otel import ConfigError, TrailConfig
from gotrails_otel.sampling import TrailSampler

from .conftest import TrailHarness

RATIOS = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0)
_RANDOM = random.Random(20261128)
IDS = [_RANDOM.getrandbits(128) for _ in range(10_000)]


def _trail(trace_id: int, **fields: Any) -> dict[str, Any]:
    return {"otel": {"trace_id": f"{trace_id:032x}"}, "status": "ok", "errors": [], "latency_ms": 1.0, **fields}


def _sdk_keeps(ratio: float, trace_id: int) -> bool:
    return TraceIdRatioBased(ratio).should_sample(None, trace_id, "request").decision.is_sampled()


@pytest.mark.parametrize("ratio", RATIOS)
def test_decision_equals_trace_id_ratio_based_over_10000_ids(ratio: float) -> None:
    sampler = TrailSampler(ratio)
    sdk = TraceIdRatioBased(ratio)
    ours = [sampler.decide(_trail(tid)) is None for tid in IDS]
    theirs = [sdk.should_sample(None, tid, "request").decision.is_sampled() for tid in IDS]
    assert ours == theirs
    kept = sum(ours)
    # Binomial tolerance: within 5 standard deviations of the expected count (never flaky, still meaningful).
    expected = ratio * len(IDS)
    assert abs(kept - expected) <= 5 * math.sqrt(len(IDS) * ratio * (1 - ratio)) + 1


_CHILD = """
import json, sys
from gotrails_otel.sampling import TrailSampler
ids = json.load(sys.stdin)
out = {}
for ratio in %r:
    sampler = TrailSampler(ratio)
    out[str(ratio)] = "".join("1" if sampler.decide({"otel": {"trace_id": t}}) is None else "0" for t in ids)
print(json.dumps(out))
"""


def test_decisions_are_identical_across_two_processes() -> None:
    ids = [f"{tid:032x}" for tid in IDS]
    code = textwrap.dedent(_CHILD % (RATIOS,))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(json.dumps(ids).encode(), timeout=120)
        assert child.returncode == 0, err.decode()
        results.append(json.loads(out))
    assert results[0] == results[1]
    for ratio in (0.1, 0.5):
        expected = "".join("1" if _sdk_keeps(ratio, tid) else "0" for tid in IDS)
        assert results[0][str(ratio)] == expected


def _requests(h: TrailHarness, count: int, *, fail_every: int = 0) -> list[tuple[int, bool]]:
    """``count`` requests (every ``fail_every``-th failing); their trace ids and whether they failed."""
    tracer = h.tracer("opentelemetry.instrumentation.fastapi")
    made = []
    for n in range(count):
        attributes = {"http.request.method": "GET", "url.path": f"/r/{n}", "http.response.status_code": 200}
        with tracer.start_as_current_span(f"GET /r/{n}", kind=SpanKind.SERVER, attributes=attributes) as span:
            failed = bool(fail_every) and n % fail_every == 0
            if failed:
                span.set_status(Status(StatusCode.ERROR, "boom"))
        made.append((span.get_span_context().trace_id, failed))
    return made


def test_processor_keeps_what_the_sdk_sampler_keeps_and_every_error_trail(make_harness: Any) -> None:
    from .conftest import _SWITCH

    reader = InMemoryMetricReader()
    h = make_harness(sample_ratio=0.3)
    h.processor = gt.TrailProcessor(h.exporter, h.processor.config, meter_provider=MeterProvider([reader]))
    _SWITCH.target = h.processor
    made = _requests(h, 400, fail_every=7)
    h.processor.force_flush()
    trails = h.exporter.get_finished_trails()
    kept = {int(t["otel"]["trace_id"], 16) for t in trails}
    expected = {tid for tid, failed in made if failed or _sdk_keeps(0.3, tid)}
    assert kept == expected  # every error trail, and exactly the others that TraceIdRatioBased keeps
    assert sum(failed for _, failed in made) == len([t for t in trails if t["status"] == "error"]) == 58
    dropped = 400 - len(expected)
    stats = h.processor.stats()
    assert stats["trails.complete"] == 400 and stats["sampled_out.ratio"] == dropped > 0
    # Sampled-out trails take no place in the chain: the kept ones are seq 1..n, without gaps.
    assert [t["integrity"]["seq"] for t in trails] == list(range(1, len(trails) + 1))
    points = [
        (dict(p.attributes or {}), p.value)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gotrails.dropped"
        for p in m.data.data_points
    ]
    assert ({"what": "sampled_out", "reason": "ratio"}, dropped) in points
    # The final checkpoint tells an auditor how many trails were sampled out.
    h.processor.shutdown()
    checkpoint = h.exporter.get_finished_records()[-1]
    assert checkpoint["record"] == "gotrails.checkpoint" and checkpoint["sampled_out"] == {"ratio": dropped}


def test_keep_errors_off_lets_the_ratio_drop_error_trails(make_harness: Any) -> None:
    h = make_harness(sample_ratio=0.0, keep_errors=False)
    _requests(h, 20, fail_every=2)
    h.processor.force_flush()
    assert h.exporter.get_finished_trails() == []
    assert h.processor.stats()["sampled_out.ratio"] == 20


def test_an_error_recorded_without_a_failed_root_keeps_the_trail(make_harness: Any) -> None:
    h = make_harness(sample_ratio=0.0)
    tracer = h.tracer("opentelemetry.instrumentation.fastapi")
    with tracer.start_as_current_span("GET /a", kind=SpanKind.SERVER, attributes={"http.request.method": "GET"}):
        gt.record_error("fraud-check", "score unavailable")
    with tracer.start_as_current_span("GET /b", kind=SpanKind.SERVER, attributes={"http.request.method": "GET"}):
        pass
    trails = h.trails(1)
    assert trails[0]["entry"]["name"] == "GET /a" and trails[0]["status"] == "ok"


def test_slow_trails_are_kept_at_any_ratio() -> None:
    sampler = TrailSampler(0.0, slow_ms=250)
    assert sampler.decide(_trail(1, latency_ms=250.0)) is None
    assert sampler.decide(_trail(1, latency_ms=900)) is None
    assert sampler.decide(_trail(1, latency_ms=249.999)) == "ratio"
    assert TrailSampler(0.0).decide(_trail(1, latency_ms=10_000)) == "ratio"  # off by default


def test_slow_request_through_the_processor(make_harness: Any) -> None:
    import time

    h = make_harness(sample_ratio=0.0, slow_ms=30)
    tracer = h.tracer("opentelemetry.instrumentation.fastapi")
    with tracer.start_as_current_span("GET /slow", kind=SpanKind.SERVER, attributes={"http.request.method": "GET"}):
        time.sleep(0.05)
    with tracer.start_as_current_span("GET /fast", kind=SpanKind.SERVER, attributes={"http.request.method": "GET"}):
        pass
    trail = h.one()
    assert trail["entry"]["name"] == "GET /slow" and trail["latency_ms"] >= 30


def test_custom_sampler_sees_the_masked_trail_and_decides(make_harness: Any) -> None:
    seen: list[dict[str, Any]] = []

    def sampler(trail: Any) -> bool | None:
        seen.append(dict(trail["metadata"]))
        path = trail["request"].get("path")
        if path == "/health":
            return False
        if path == "/audit":
            return True
        return None

    h = make_harness(sample_ratio=0.0, sampler=sampler)
    tracer = h.tracer("opentelemetry.instrumentation.fastapi")
    for path in ("/health", "/audit", "/other"):
        attributes = {"http.request.method": "GET", "url.path": path}
        with tracer.start_as_current_span(f"GET {path}", kind=SpanKind.SERVER, attributes=attributes):
            gt.set_metadata(password="hunter2-secret", path=path)
    trail = h.one()
    assert trail["request"]["path"] == "/audit"
    assert all(m["password"] == "***" for m in seen)  # the sampler sees the trail after masking
    stats = h.processor.stats()
    assert stats["sampled_out.sampler"] == 1 and stats["sampled_out.ratio"] == 1


def test_a_failing_custom_sampler_keeps_the_trail_and_is_counted(make_harness: Any) -> None:
    def sampler(trail: Any) -> bool:
        raise RuntimeError("broken rule")

    h = make_harness(sample_ratio=0.0, sampler=sampler)
    _requests(h, 3)
    assert len(h.trails(3)) == 3
    assert h.processor.stats()["failures.sampler"] == 3
    assert "sampled_out.ratio" not in h.processor.stats()


def test_trails_without_otel_ids_are_kept_above_ratio_zero() -> None:
    assert TrailSampler(0.01).decide({"status": "ok"}) is None
    assert TrailSampler(0.01).decide({"otel": {"trace_id": "not hex"}}) is None


def test_sampling_settings_from_the_environment() -> None:
    config = TrailConfig.from_env(
        {"GOTRAILS_SAMPLE_RATIO": "0.25", "GOTRAILS_KEEP_ERRORS": "false", "GOTRAILS_SLOW_MS": "1500"}
    )
    assert (config.sample_ratio, config.keep_errors, config.slow_ms) == (0.25, False, 1500.0)
    assert TrailConfig().sample_ratio == 1.0 and TrailConfig().keep_errors and TrailConfig().slow_ms is None
    with pytest.raises(ConfigError, match=re.escape("GOTRAILS_SAMPLE_RATIO='1.5'")):
        TrailConfig.from_env({"GOTRAILS_SAMPLE_RATIO": "1.5"})
    with pytest.raises(ConfigError, match="GOTRAILS_SLOW_MS"):
        TrailConfig.from_env({"GOTRAILS_SLOW_MS": "-1"})
    with pytest.raises(ConfigError, match="sampler"):
        TrailConfig(sampler="keep")  # type: ignore[arg-type]
