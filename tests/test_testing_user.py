"""The testing helpers as a user meets them: a project of their own — a FastAPI service and a Flask service set up with
``gotrails_otel.instrument()`` — whose tests use ``capture_trails()``, the ``captured_trails`` fixture (found through
the pytest plugin entry point, not imported) and ``unittest``, run by pytest and by ``python -m unittest`` in a
subprocess; and the ``Trail`` type checked by mypy in the user's code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gotrails_otel

TELEMETRY = '''
"""The project's OpenTelemetry setup, as a service's own code would do it."""
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import gotrails_otel


def setup() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    gotrails_otel.instrument()  # calling it again is harmless
'''

CONFTEST = """
import telemetry

telemetry.setup()  # before the apps are imported, as in the service
"""

PAYMENTS_APP = """
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import gotrails_otel as gt

app = FastAPI()


@app.post("/v1/payments")
def create_payment(payload: dict) -> JSONResponse:
    with gt.step("ValidateRequest"):
        if payload.get("amount", 0) <= 0:
            return JSONResponse({"error": "amount must be positive"}, status_code=422)
    gt.set_metadata(user_id=payload.get("user_id"))
    return JSONResponse({"payment_id": "pay-1", "status": "PENDING"}, status_code=201)
"""

TEST_PAYMENTS = """
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from gotrails_otel.testing import capture_trails
from payments import app

client = TestClient(app)


def test_a_payment_is_audited():
    with capture_trails() as trails:
        response = client.post("/v1/payments", json={"amount": 150000, "user_id": "u-1", "password": "hunter2"})
    assert response.status_code == 201
    [trail] = trails
    assert trail["request"]["method"] == "POST" and trail["request"]["path"] == "/v1/payments"
    assert trail["request"]["body"] == {"amount": 150000, "user_id": "u-1", "password": "***"}
    assert trail["response"]["status"] == 201
    assert trail["response"]["body"] == {"payment_id": "pay-1", "status": "PENDING"}
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest"]
    assert trail["metadata"] == {"user_id": "u-1"}
    assert "hunter2" not in str(trail)


def test_the_fixture_sees_each_request_as_it_ends(captured_trails):
    client.post("/v1/payments", json={"amount": -5})
    assert captured_trails[0]["response"]["status"] == 422
    client.post("/v1/payments", json={"amount": 5})
    assert [t["response"]["status"] for t in captured_trails] == [422, 201]


def test_the_fixture_starts_empty_in_each_test(captured_trails):
    assert len(captured_trails) == 0


@pytest.fixture
def live_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_against_a_live_server(live_server):
    with capture_trails() as trails:
        for amount in (1, 2, 3):
            assert httpx.post(f"{live_server}/v1/payments", json={"amount": amount}).status_code == 201
    assert [t["request"]["body"]["amount"] for t in trails] == [1, 2, 3]
    assert all(t["complete"] for t in trails)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="the captured trail is real: this assertion fails")
def test_a_wrong_expectation_fails():
    with capture_trails() as trails:
        client.post("/v1/payments", json={"amount": 5})
    assert trails[0]["response"]["status"] == 500
"""

TEST_REFUNDS_UNITTEST = """
import unittest

import telemetry

telemetry.setup()

from flask import Flask, jsonify, request  # noqa: E402

import gotrails_otel as gt  # noqa: E402
from gotrails_otel.testing import capture_trails  # noqa: E402


def create_app():
    app = Flask(__name__)

    @app.post("/v1/refunds")
    def refund():
        with gt.step("CheckRefund"):
            body = request.get_json()
        return jsonify(refund_id="rf-1", amount=body["amount"]), 201

    return app


class RefundTest(unittest.TestCase):
    def setUp(self):
        self.client = create_app().test_client()

    def test_a_refund_is_audited(self):
        with capture_trails() as trails:
            response = self.client.post("/v1/refunds", json={"amount": 10, "card_number": "4111 1111 1111 1111"})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(len(trails), 1)
        trail = trails[0]
        self.assertEqual(trail["request"]["body"]["amount"], 10)
        self.assertEqual(trail["response"]["body"], {"refund_id": "rf-1", "amount": 10})
        self.assertEqual([s["name"] for s in trail["internal_steps"]], ["CheckRefund"])
        self.assertNotIn("4111 1111 1111 1111", str(trail))


if __name__ == "__main__":
    unittest.main()
"""

TYPED_USE = """
from gotrails_otel.testing import Trail


def slow_integrations(trail: Trail) -> list[str]:
    return [i["name"] for i in trail["integrations"] if i["latency_ms"] > 100]


def status(trail: Trail) -> int | None:
    return trail["response"].get("status")


def misspelt(trail: Trail) -> float:
    return trail["latency"]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("user_project")
    files = {
        "pytest.ini": "[pytest]\n",
        "telemetry.py": TELEMETRY,
        "conftest.py": CONFTEST,
        "payments.py": PAYMENTS_APP,
        "test_payments.py": TEST_PAYMENTS,
        "test_refunds_unittest.py": TEST_REFUNDS_UNITTEST,
        "typed_use.py": TYPED_USE,
    }
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip(), "utf-8")
    return root


def _run(project: Path, *command: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GOTRAILS_", "PYTEST_"))}
    env["PYTHONPATH"] = str(project)
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, *command], cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_users_pytest_suite_passes_with_capture_trails_and_the_fixture(project: Path) -> None:
    result = _run(project, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rxX")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "5 passed, 1 xfailed" in output, output  # the unittest TestCase runs under pytest too
    assert "hunter2" not in result.stdout  # the trails the application printed were masked too


def test_users_unittest_suite_passes(project: Path) -> None:
    result = _run(project, "-m", "unittest", "-v", "test_refunds_unittest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_a_refund_is_audited" in result.stderr and "OK" in result.stderr


def test_type_checkers_know_the_trail_keys(project: Path) -> None:
    # An editable install is invisible to mypy; point it at the installed package's folder instead.
    package_parent = str(Path(gotrails_otel.__file__).resolve().parent.parent)
    options = ("--strict", "--follow-imports=silent", "--cache-dir", str(project / ".mypy"))
    result = _run(project, "-m", "mypy", *options, "typed_use.py", MYPYPATH=package_parent)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert errors and all(line.startswith("typed_use.py:13:") for line in errors), result.stdout  # only the typo
    assert 'TypedDict "Trail" has no key "latency"' in result.stdout
