"""A real Django project served by real servers — gunicorn under ``opentelemetry-instrument`` (zero code) and
``runserver`` with ``gotrails_otel.instrument()`` — against PostgreSQL and SQLite: the request and response of every
view, the ORM's statements with their arguments, the outgoing requests call, uploads, streamed and file responses,
failures; planted secrets masked everywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .processes import AppProcess, app_env, start_apps
from .services import ThreadServer, free_port

pytestmark = pytest.mark.service

CARD = "4111 1111 1111 1111"
SECRETS = ("hunter2", "s3cr3t-token", "upstream-s3cret", CARD, CARD.replace(" ", ""))
MODES = {"old": "", "new": "http,database"}


async def charge(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"transaction_id": "trx-1", "order_id": body["order_id"]}, status_code=201)


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    yield from start_apps(tmp_path)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    server = ThreadServer(Starlette(routes=[Route("/v2/charge", charge, methods=["POST"])]), "asgi")
    yield server
    server.close()


def _database_env(backend: str, postgres: Any, tmp_path: Path) -> dict[str, str]:
    if backend == "postgres":
        return {"PG_PORT": str(urlsplit(postgres.url).port)}
    return {"SQLITE_PATH": str(tmp_path / "shop.db")}


def _migrate(env: dict[str, str], tmp_path: Path) -> None:
    full = app_env(tmp_path / "migrate.jsonl", {**env, "DJANGO_SETTINGS_MODULE": "djangoapp.settings"})
    result = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _start(apps: Callable[..., AppProcess], server: str, env: dict[str, str], tmp_path: Path) -> AppProcess:
    _migrate(env, tmp_path)
    port = free_port()
    env = {**env, "DJANGO_SETTINGS_MODULE": "djangoapp.settings"}
    if server == "uvicorn":  # zero code, Django as an ASGI application
        command = ["uvicorn", "djangoapp.asgi:application", "--port", str(port), "--log-level", "warning"]
        return apps(command, env, name="django", port=port)
    if server == "gunicorn":  # zero code: opentelemetry-instrument with the stock distro
        command = ["gunicorn", "djangoapp.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        return apps(command, env, name="django", port=port)
    env["GOTRAILS_MANUAL"] = "1"  # the project calls gotrails_otel.instrument() in wsgi.py
    command = [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload"]
    return apps(command, env, name="django", port=port, zero_code=False)


def _no_secrets(trails: list[dict[str, Any]]) -> None:
    text = json.dumps(trails)
    for secret in SECRETS:
        assert secret not in text, secret


@pytest.mark.parametrize(
    ("server", "backend", "mode"),
    [
        ("gunicorn", "postgres", "old"),
        ("gunicorn", "postgres", "new"),
        ("runserver", "sqlite", "old"),
        ("runserver", "postgres", "new"),
        ("uvicorn", "sqlite", "old"),
    ],
)
def test_django_view_orm_and_requests_call(
    apps: Callable[..., AppProcess],
    upstream: ThreadServer,
    postgres_service: Any,
    redis_service: Any,
    tmp_path: Path,
    server: str,
    backend: str,
    mode: str,
) -> None:
    env = {
        **_database_env(backend, postgres_service, tmp_path),
        "UPSTREAM_URL": upstream.url,
        "CELERY_BROKER": redis_service.url,
    }
    if MODES[mode]:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = MODES[mode]
    service = _start(apps, server, env, tmp_path)
    pid = f"pay-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{service.url}/api/payments?source=web",
        json={"id": pid, "amount": 150000, "card_number": CARD, "password": "hunter2"},
        headers={"Authorization": "Bearer s3cr3t-token", "X-Request-ID": "req-dj-1"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert response.json()["charge"]["transaction_id"] == "trx-1"
    assert httpx.get(f"{service.url}/api/payments/{pid}", timeout=30).json()["amount"] == 150000
    created, fetched = service.trails(2)
    system = "postgres" if backend == "postgres" else "sqlite"

    assert created["service"] == "shop-service" and created["request_id"] == "req-dj-1"
    assert created["entry"]["kind"] == "http"
    request = created["request"]
    assert request["method"] == "POST" and request["path"] == "/api/payments" and request["query"] == "source=web"
    assert request["route"] == "api/payments"
    assert request["headers"]["authorization"] == ["***"]
    assert request["body"]["id"] == pid and request["body"]["amount"] == 150000
    assert request["body"]["password"] == "***" and request["body"]["card_number"] == "***"
    assert created["response"]["status"] == 201
    assert created["response"]["body"]["payment_id"] == pid
    assert [s["name"] for s in created["internal_steps"]] == ["ValidateRequest"]

    database = [i for i in created["integrations"] if i["type"] == "database"]
    insert = next(i for i in database if i["name"] == f"{system}.djangoapp_payment.insert")
    assert pid in insert["request"]["args"] and 150000 in insert["request"]["args"]
    assert insert["response"]["rows_affected"] == 1
    count = next(i for i in database if i["name"] == f"{system}.djangoapp_payment.select")
    assert count["request"]["args"] == [150000]

    (call,) = [i for i in created["integrations"] if i["type"] == "http"]
    assert call["request"]["url"] == f"{upstream.url}/v2/charge"
    assert call["request"]["body"]["order_id"] == pid and call["request"]["body"]["card_number"] == "***"
    assert call["request"]["headers"]["authorization"] == ["***"]
    assert call["response"] == {
        "status": 201,
        "headers": call["response"]["headers"],
        "body": {"transaction_id": "trx-1", "order_id": pid},
    }

    (task,) = [i for i in created["integrations"] if i["name"] == "shop.send_receipt"]
    assert task["type"] == "custom" and task["request"]["action"] == "apply_async"
    assert task["request"]["args"] == [pid]
    assert task["request"]["kwargs"] == {"email": "user@example.com", "password": "***"}

    assert fetched["request"]["route"] == "api/payments/<str:pid>"
    assert fetched["response"]["body"] == {"payment_id": pid, "amount": 150000}
    (lookup,) = [i for i in fetched["integrations"] if i["name"] == f"{system}.djangoapp_payment.select"]
    assert lookup["request"]["args"][0] == pid
    _no_secrets([created, fetched])


def test_django_uploads_streams_files_and_failures(
    apps: Callable[..., AppProcess], postgres_service: Any, tmp_path: Path
) -> None:
    service = _start(apps, "gunicorn", {"SQLITE_PATH": str(tmp_path / "shop.db")}, tmp_path)
    files = {"receipt": ("receipt.txt", b"paid with 4111 1111 1111 1111", "text/plain")}
    upload = httpx.post(f"{service.url}/api/upload", data={"note": "password=hunter2"}, files=files, timeout=30)
    assert upload.json() == {"name": "receipt.txt", "size": 29, "note": "password=hunter2"}
    raw = httpx.post(f"{service.url}/api/raw", files=files, timeout=30)
    assert raw.json() == {"files": ["receipt"], "raw": None}  # the application's own RawPostDataException path
    both = httpx.post(f"{service.url}/api/body-then-files", files=files, timeout=30).json()
    assert both["files"] == ["receipt"] and both["size"] > 29
    assert httpx.get(f"{service.url}/api/stream", timeout=30).text == "line-0\nline-1\nline-2\n"
    assert httpx.get(f"{service.url}/api/file", timeout=30).content == b"%PDF-1.4 receipt"
    assert httpx.get(f"{service.url}/api/fail", timeout=30).status_code == 500
    trails = {t["request"]["path"]: t for t in service.trails(6)}

    uploaded = trails["/api/upload"]["request"]["body"]
    assert uploaded["files"] == [{"field": "receipt", "name": "receipt.txt", "content_type": "text/plain", "size": 29}]
    assert uploaded["fields"] == {"note": "password=***"}
    assert trails["/api/raw"]["response"]["body"] == {"files": ["receipt"], "raw": None}
    assert trails["/api/raw"]["request"]["body"]["files"][0]["name"] == "receipt.txt"
    assert trails["/api/body-then-files"]["request"]["body"]["files"][0]["size"] == 29
    assert trails["/api/stream"]["response"]["body"]["$streamed"] is True
    assert trails["/api/file"]["response"]["body"]["$streamed"] is True
    assert trails["/api/file"]["response"]["headers"]["content-type"] == ["application/pdf"]
    failed = trails["/api/fail"]
    assert failed["response"]["status"] == 500 and failed["status"] == "error"
    assert failed["errors"][0]["type"] == "ValueError"
    assert "card declined" in failed["errors"][0]["message"]
    _no_secrets(list(trails.values()))


def test_django_is_not_instrumented_without_a_project() -> None:
    code = (
        "from opentelemetry import trace; from opentelemetry.sdk.trace import TracerProvider;"
        "trace.set_tracer_provider(TracerProvider()); import gotrails_otel;"
        "from gotrails_otel.hooks import _done; gotrails_otel.instrument();"
        "from django.conf import settings; print('django' in _done, settings.configured)"
    )
    env = app_env(Path("/dev/null"), {"GOTRAILS_EXPORTER": "stdout"})
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]  # gotrails left Django's settings alone
