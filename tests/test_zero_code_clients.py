"""urllib3, psycopg2, asyncpg and sqlite3 used directly by an application run under ``opentelemetry-instrument``
with the stock distro (zero code), against a real PostgreSQL server and a real upstream: their integrations carry the
statements, arguments, bodies and statuses, with the planted secrets masked."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .conftest import validate_trail
from .processes import AppProcess, start_apps
from .services import ThreadServer, free_port

pytestmark = pytest.mark.service

PASSWORD = "hunter2-pw"
TOKEN = "tok-s3cr3t-9c1f"
CARD = "4111111111111111"


async def verify(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"verified": body["password"] == PASSWORD, "account": body["account"]})


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    yield from start_apps(tmp_path)


@pytest.fixture
def upstream() -> Iterator[ThreadServer]:
    server = ThreadServer(Starlette(routes=[Route("/v2/verify", verify, methods=["POST"])]), "asgi")
    yield server
    server.close()


def test_urllib3_psycopg2_asyncpg_and_sqlite3_in_the_zero_code_path(
    apps: Callable[..., AppProcess], upstream: ThreadServer, postgres_service: Any, tmp_path: Path
) -> None:
    port = urlsplit(postgres_service.url).port
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS accounts")
        conn.execute("CREATE TABLE accounts (id TEXT PRIMARY KEY, email TEXT, password TEXT, card TEXT, balance INT)")
    sqlite_path = tmp_path / "audit.db"
    with sqlite3.connect(sqlite_path) as local:
        local.execute("CREATE TABLE audit (account TEXT, token TEXT)")
    http_port = free_port()
    env = {"PG_PORT": str(port), "SQLITE_PATH": str(sqlite_path), "UPSTREAM_URL": upstream.url}
    command = ["gunicorn", "zero_code_clients:app", "--bind", f"127.0.0.1:{http_port}", "--workers", "1"]
    app = apps(command, env, name="clients", port=http_port)

    payload = {"id": "acc-7", "email": "a@example.com", "password": PASSWORD, "card": CARD, "api_token": TOKEN}
    reply = httpx.post(f"{app.url}/v1/accounts", json=payload, timeout=30)
    assert reply.status_code == 201, app.log_text()
    assert reply.json() == {"id": "acc-7", "balance": 100, "email": "a@example.com", "verified": True}

    (trail,) = app.trails(1)
    validate_trail(trail)
    assert trail["complete"] is True and trail["status"] == "ok"
    assert trail["request"]["body"]["password"] == "***" and trail["request"]["body"]["api_token"] == "***"
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in trail["integrations"]:
        by_type.setdefault(item["type"], []).append(item)
    insert, select, lookup, audit = by_type["database"]
    assert insert["name"] == "postgres.accounts.insert"
    assert insert["request"]["query"].startswith("INSERT INTO accounts")
    assert insert["request"]["args"] == ["acc-7", "a@example.com", "***", "***", 100]
    assert insert["response"] == {"rows_affected": 1}
    assert select["request"]["args"] == ["acc-7"] and select["response"] == {"rows_affected": 1}
    assert lookup["request"]["query"].startswith("SELECT email FROM accounts")
    assert lookup["request"]["args"] == ["acc-7", "***"]  # bound to the password column
    assert audit["name"].startswith("sqlite") and audit["request"]["args"] == ["acc-7", "***"]
    (call,) = by_type["http"]
    assert call["request"]["method"] == "POST" and call["request"]["url"] == f"{upstream.url}/v2/verify"
    assert call["request"]["body"] == {"account": "acc-7", "password": "***"}
    assert call["request"]["headers"]["authorization"] == ["***"]
    assert call["response"]["status"] == 200
    assert call["response"]["body"] == {"verified": True, "account": "acc-7"}
    text = json.dumps(trail)
    for secret in (PASSWORD, TOKEN, CARD):
        assert secret not in text
    assert "Traceback" not in app.log_text()
