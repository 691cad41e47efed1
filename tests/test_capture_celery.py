"""Celery with a real Redis broker and real workers (prefork and solo pools, under ``opentelemetry-instrument`` and
with ``gotrails_otel.instrument()``): each task run is a trail; ``delay``/``apply_async`` inside a request is an
integration with the task's arguments; planted secrets are masked."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.trace import SpanKind

from gotrails_otel.hooks import celery as celery_hooks
from gotrails_otel.view.model import entry_summary

from .conftest import TrailHarness
from .processes import AppProcess, start_apps

pytestmark = pytest.mark.service

SECRETS = ("hunter2", "s3cr3t-token", "4111111111111111")


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    yield from start_apps(tmp_path)


@pytest.fixture
def publisher(semconv: str) -> Iterator[str]:
    CeleryInstrumentor().instrument()
    celery_hooks.install()
    yield semconv
    celery_hooks.uninstall()
    CeleryInstrumentor().uninstrument()


def _no_secrets(trails: list[dict[str, Any]]) -> None:
    text = json.dumps(trails)
    for secret in SECRETS:
        assert secret not in text, secret


# The tasks as the publishing service declares them (the worker runs tests/apps/celery_app.py).
PUBLISHER = Celery("shop-publisher")


@PUBLISHER.task(name="shop.charge")
def charge(order_id: str, card_number: str, password: str | None = None, note: str = "") -> None: ...


@PUBLISHER.task(name="shop.fail")
def fail(order_id: str) -> None: ...


@PUBLISHER.task(name="shop.flaky")
def flaky(order_id: str) -> None: ...


def _publish(harness: TrailHarness, broker: str, queue: str) -> dict[str, Any]:
    """Queue the tasks from inside a request of this process; return the request's trail."""
    with (
        PUBLISHER.connection_for_write(broker) as connection,
        harness.tracer("app").start_as_current_span("POST /v1/orders", kind=SpanKind.SERVER),
    ):
        options = {"connection": connection, "queue": queue}
        # the password positionally: masked by its parameter's name, as a keyword argument would be
        charge.apply_async(args=["ord-1", "4111111111111111", "hunter2"], kwargs={"note": "n"}, **options)
        fail.apply_async(args=["ord-2"], **options)
        flaky.apply_async(args=["ord-3"], countdown=0, **options)
    trail = harness.one()
    harness.exporter.clear()
    return trail


def _worker(apps: Callable[..., AppProcess], broker: str, queue: str, pool: str, zero_code: bool) -> AppProcess:
    command = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", pool, "-c", "1"]
    command += ["-Q", queue, "-l", "warning", "--without-heartbeat", "--without-gossip", "--without-mingle"]
    env = {"CELERY_BROKER": broker, "CELERY_QUEUE": queue}
    if not zero_code:
        env["GOTRAILS_MANUAL"] = "1"
    return apps(command, env, name=f"worker-{pool}", zero_code=zero_code, ready=lambda process: True)


@pytest.mark.parametrize(("pool", "zero_code"), [("prefork", True), ("solo", True), ("solo", False)])
def test_task_runs_are_trails_and_publishes_are_integrations(
    harness: TrailHarness,
    publisher: str,
    apps: Callable[..., AppProcess],
    redis_service: Any,
    pool: str,
    zero_code: bool,
) -> None:
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    request = _publish(harness, redis_service.url, queue)
    charge_call, fail_call, flaky_call = request["integrations"]
    assert charge_call["type"] == "custom" and charge_call["name"] == "shop.charge"
    assert charge_call["request"]["action"] == "apply_async"
    assert charge_call["request"]["args"] == ["ord-1", "***", "***"]
    assert charge_call["request"]["arg_names"] == ["order_id", "card_number", "password"]
    assert charge_call["request"]["kwargs"] == {"note": "n"}
    assert charge_call["request"]["queue"] == queue
    assert charge_call["response"]["state"] == "PUBLISHED" and charge_call["response"]["id"]
    assert charge_call["metadata"]["system"] == "celery"
    assert fail_call["name"] == "shop.fail" and fail_call["request"]["args"] == ["ord-2"]
    assert flaky_call["name"] == "shop.flaky"

    worker = _worker(apps, redis_service.url, queue, pool, zero_code)
    trails = worker.trails(4, timeout=60)
    runs = {(t["request"]["task"], t["request"]["retries"]): t for t in trails}

    charged = runs[("shop.charge", 0)]
    assert charged["entry"] == {"kind": "task", "name": "shop.charge"}
    assert charged["request"]["id"] == charge_call["response"]["id"]
    assert charged["request"]["args"] == ["ord-1", "***", "***"]
    assert charged["request"]["arg_names"] == ["order_id", "card_number", "password"]
    assert charged["request"]["kwargs"] == {"note": "n"}
    assert charged["request"]["queue"] == queue
    assert charged["response"]["state"] == "SUCCESS"
    assert charged["response"]["result"] == {"charged": "ord-1", "card_number": "***"}
    assert [s["name"] for s in charged["internal_steps"]] == ["Charge"]
    assert charged["metadata"] == {"order_id": "ord-1"}
    assert charged["otel"]["trace_id"] == request["otel"]["trace_id"]  # the publisher's trace continues
    assert charged["otel"]["parent_span_id"] == charge_call["span_id"]
    assert charged["status"] == "ok" and charged["complete"] is True
    assert entry_summary(charged) == "run shop.charge → SUCCESS"  # as gotrails-otel view shows it

    failed = runs[("shop.fail", 0)]
    assert failed["response"]["state"] == "FAILURE"
    assert failed["response"]["exception"]["type"] == "ValueError"
    assert failed["status"] == "error" and failed["errors"][0]["type"] == "ValueError"

    retried, succeeded = runs[("shop.flaky", 0)], runs[("shop.flaky", 1)]
    assert retried["response"]["state"] == "RETRY"
    assert "gateway busy" in retried["response"]["retry_reason"]
    assert succeeded["response"] == {"state": "SUCCESS", "result": {"charged": "ord-3", "attempt": 2}}
    _no_secrets([request, *trails])
