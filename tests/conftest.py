"""Shared fixtures: a real SDK TracerProvider with a TrailProcessor per test, and schema validation of every trail."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from gotrails_otel import InMemoryTrailExporter, TrailConfig, TrailProcessor, trail_schema
from gotrails_otel.integrity import is_checkpoint

from .instrumentation import Instrumented

_VALIDATOR = jsonschema.Draft202012Validator(trail_schema(), format_checker=jsonschema.FormatChecker())


def validate_trail(trail: dict[str, Any]) -> None:
    """Fail the test when ``trail`` does not match the published schema."""
    errors = sorted(_VALIDATOR.iter_errors(trail), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def trails_in_file(path: Path) -> list[dict[str, Any]]:
    """The trails of a JSON-lines file another process may be appending to at this moment: whole lines only (a line
    caught half-written is read next time), without the hash chain's checkpoints."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records = [orjson.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]
    return [record for record in records if not is_checkpoint(record)]


def collect_trails(
    fetch: Callable[[], list[dict[str, Any]]], count: int, timeout: float, describe: Callable[[], str] = str
) -> list[dict[str, Any]]:
    """Poll ``fetch`` until ``count`` trails arrived (exactly), validate each against the schema, return them."""
    deadline = time.monotonic() + timeout
    while True:
        found = fetch()
        if len(found) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert len(found) == count, f"expected {count} trails, got {len(found)} {describe()}"
    for trail in found:
        validate_trail(trail)
    return found


class _Switch(SpanProcessor):
    """The global provider's only processor; forwards to the current test's TrailProcessor."""

    target: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.target is not None:
            self.target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.target is not None:
            self.target.on_end(span)


_SWITCH = _Switch()
_PROVIDER = TracerProvider(
    resource=Resource.create({"service.name": "payment-service", "deployment.environment.name": "test"})
)
_PROVIDER.add_span_processor(_SWITCH)
trace.set_tracer_provider(_PROVIDER)


class TrailHarness:
    """One test's trail pipeline: the global provider, a fresh processor and an in-memory exporter."""

    def __init__(self, config: TrailConfig) -> None:
        self.provider = _PROVIDER
        self.exporter = InMemoryTrailExporter()
        self.processor = TrailProcessor(self.exporter, config)
        _SWITCH.target = self.processor

    def instrumented(self, mode: str = "old") -> Instrumented:
        return Instrumented(self.provider, mode)

    def tracer(self, scope: str = "app.payments") -> trace.Tracer:
        return self.provider.get_tracer(scope)

    def trails(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``count`` trails were exported (exactly), validate each against the schema, return them."""

        def fetch() -> list[dict[str, Any]]:
            self.processor.force_flush()
            return self.exporter.get_finished_trails()

        return collect_trails(fetch, count, timeout)

    def trail_for(self, path: str, count: int = 1) -> dict[str, Any]:
        """Of ``count`` trails, the one whose request path is ``path``."""
        found = [t for t in self.trails(count) if t["request"].get("path") == path]
        assert len(found) == 1, f"{len(found)} trails for {path}"
        return found[0]

    def one(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.trails(1, timeout)[0]

    def settle(self, seconds: float) -> None:
        """Give the flush thread time to act on deadlines, then flush what is ready."""
        time.sleep(seconds)
        self.processor.force_flush()


@pytest.fixture
def make_harness() -> Iterator[Callable[..., TrailHarness]]:
    made: list[TrailHarness] = []

    def make(**config: Any) -> TrailHarness:
        config.setdefault("grace_ms", 200)
        harness = TrailHarness(TrailConfig(**config))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.processor.shutdown()
    _SWITCH.target = None


@pytest.fixture
def harness(make_harness: Callable[..., TrailHarness]) -> TrailHarness:
    return make_harness()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped service test is a failure: the service must be installed and started there."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    service_skips = [r for r in skipped if "service" in getattr(r, "keywords", {})]
    if service_skips:
        for report in service_skips:
            print(f"\nCI: service test skipped: {report.nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def set_semconv_mode(mode: str) -> None:
    """Switch the contrib instrumentations' semantic-convention mode (read once per process) for the next
    ``instrument()`` call: ``old``, ``new`` (``http,database``) or ``dup`` (``http/dup,database/dup``)."""
    from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability as Stability

    value = {"old": "", "new": "http,database", "dup": "http/dup,database/dup"}[mode]
    if value:
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = value
    else:
        os.environ.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
    with Stability._lock:
        Stability._initialized = False
        Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = {}
    Stability._initialize()


@pytest.fixture(params=["old", "new"])
def semconv(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per semantic-convention mode (instrument inside the test, after this fixture)."""
    set_semconv_mode(request.param)
    yield request.param
    set_semconv_mode("old")


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[Any]:
    from .services import postgres_server

    with postgres_server() as service:
        yield service


@pytest.fixture(scope="session")
def redis_service() -> Iterator[Any]:
    from .services import redis_server

    with redis_server() as service:
        yield service


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[Any]:
    from .services import kafka_broker

    with kafka_broker() as service:
        yield service
