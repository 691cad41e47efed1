"""DB-API drivers used directly (psycopg 3 sync and async, psycopg2, sqlite3) and asyncpg, against real PostgreSQL
and SQLite: statement, arguments, row counts, errors — and one integration per statement under SQLAlchemy."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psycopg
import psycopg2
import pytest
import sqlalchemy as sa
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.trace import SpanKind

from gotrails_otel.hooks import asyncpg as asyncpg_hooks
from gotrails_otel.hooks import dbapi as dbapi_hooks
from gotrails_otel.hooks import sqlalchemy as sa_hooks

from .conftest import TrailHarness

CARD = "4111111111111111"
SECRET = "hunter2-pw"
SCHEMA = "CREATE TABLE accounts (id TEXT PRIMARY KEY, email TEXT, password TEXT, card TEXT, balance INTEGER)"


@pytest.fixture
def instrumented(semconv: str) -> Iterator[str]:
    PsycopgInstrumentor().instrument()
    Psycopg2Instrumentor().instrument()
    SQLite3Instrumentor().instrument()
    AsyncPGInstrumentor().instrument()
    assert dbapi_hooks.install() and asyncpg_hooks.install()
    yield semconv
    asyncpg_hooks.uninstall()
    dbapi_hooks.uninstall()
    AsyncPGInstrumentor().uninstrument()
    SQLite3Instrumentor().uninstrument()
    Psycopg2Instrumentor().uninstrument()
    PsycopgInstrumentor().uninstrument()


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/accounts", kind=SpanKind.SERVER)


def _dsn(service: Any) -> str:
    port = urlsplit(service.url).port
    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres"


def _reset(service: Any) -> None:
    with psycopg.connect(_dsn(service), autocommit=True) as conn:  # outside any request: no trail
        conn.execute("DROP TABLE IF EXISTS accounts")
        conn.execute(SCHEMA)


def _db(trail: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in trail["integrations"] if i["type"] == "database"]


def _no_secrets(trail: dict[str, Any]) -> None:
    text = json.dumps(trail)
    assert SECRET not in text and CARD not in text


def _check_postgres(trail: dict[str, Any], placeholder: str) -> None:
    insert, many, update, select, failed = _db(trail)
    assert insert["name"] == "postgres.accounts.insert"
    assert insert["request"]["query"].startswith("INSERT INTO accounts")
    assert placeholder in insert["request"]["query"]
    args = insert["request"]["args"]
    assert args[0] == "acc-1" and args[1] == "a@example.com" and args[4] == 100
    assert args[2] == "***" and args[3] == "***"  # the password column, and a card number anywhere
    assert insert["response"] == {"rows_affected": 1}
    assert len(many["request"]["args"]) == 2 and many["response"]["rows_affected"] == 2
    assert many["request"]["executemany"] is True
    assert update["name"] == "postgres.accounts.update"
    assert update["request"]["args"] == [10]
    assert update["response"] == {"rows_affected": 3}
    assert select["request"]["args"] == ["acc-1"]
    assert select["response"] == {"rows_affected": 1}
    assert failed["error"]["type"] == "UniqueViolation"
    assert "duplicate key" in failed["error"]["message"]
    assert failed["request"]["args"][0] == "acc-1"
    assert [e["source"] for e in trail["errors"]] == ["postgres.accounts.insert"]
    _no_secrets(trail)


_INSERT = "INSERT INTO accounts (id, email, password, card, balance) VALUES (%s, %s, %s, %s, %s)"
_ROW = ("acc-1", "a@example.com", SECRET, CARD, 100)
_MORE = [("acc-2", "b@example.com", "x", "y", 1), ("acc-3", "c@example.com", "x", "y", 2)]


@pytest.mark.service
def test_psycopg3_sync(harness: TrailHarness, instrumented: str, postgres_service: Any) -> None:
    _reset(postgres_service)
    with _root(harness), psycopg.connect(_dsn(postgres_service)) as conn:
        with conn.cursor() as cur:
            cur.execute(_INSERT, _ROW)
            cur.executemany(_INSERT, _MORE)
            cur.execute("UPDATE accounts SET balance = balance + %s", (10,))
            cur.execute("SELECT balance FROM accounts WHERE id = %s", ("acc-1",))
            assert cur.fetchone() == (110,)
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation), conn.cursor() as cur:
            cur.execute(_INSERT, _ROW)
    _check_postgres(harness.one(), "%s")


@pytest.mark.service
def test_psycopg3_async(harness: TrailHarness, instrumented: str, postgres_service: Any) -> None:
    _reset(postgres_service)

    async def flow() -> None:
        async with await psycopg.AsyncConnection.connect(_dsn(postgres_service)) as conn:
            async with conn.cursor() as cur:
                await cur.execute(_INSERT, _ROW)
                await cur.executemany(_INSERT, _MORE)
                await cur.execute("UPDATE accounts SET balance = balance + %s", (10,))
                await cur.execute("SELECT balance FROM accounts WHERE id = %s", ("acc-1",))
                assert await cur.fetchone() == (110,)
            await conn.commit()
            with pytest.raises(psycopg.errors.UniqueViolation):
                async with conn.cursor() as cur:
                    await cur.execute(_INSERT, _ROW)

    with _root(harness):
        asyncio.run(flow())
    _check_postgres(harness.one(), "%s")


@pytest.mark.service
def test_psycopg2(harness: TrailHarness, instrumented: str, postgres_service: Any) -> None:
    _reset(postgres_service)
    with _root(harness):
        conn = psycopg2.connect(_dsn(postgres_service))
        with conn.cursor() as cur:
            cur.execute(_INSERT, _ROW)
            cur.executemany(_INSERT, _MORE)
            cur.execute("UPDATE accounts SET balance = balance + %s", (10,))
            cur.execute("SELECT balance FROM accounts WHERE id = %s", ("acc-1",))
            assert cur.fetchone() == (110,)
        conn.commit()
        with pytest.raises(psycopg2.errors.UniqueViolation), conn.cursor() as cur:
            cur.execute(_INSERT, _ROW)
        conn.close()
    _check_postgres(harness.one(), "%s")


@pytest.mark.service
def test_asyncpg(harness: TrailHarness, instrumented: str, postgres_service: Any) -> None:
    _reset(postgres_service)
    port = urlsplit(postgres_service.url).port
    insert = "INSERT INTO accounts (id, email, password, card, balance) VALUES ($1, $2, $3, $4, $5)"

    async def flow() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
        try:
            await conn.execute(insert, *_ROW)
            await conn.executemany(insert, _MORE)
            await conn.execute("UPDATE accounts SET balance = balance + $1", 10)
            assert await conn.fetchval("SELECT balance FROM accounts WHERE id = $1", "acc-1") == 110
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(insert, *_ROW)
        finally:
            await conn.close()

    with _root(harness):
        asyncio.run(flow())
    trail = harness.one()
    insert_item, many, update, select, failed = _db(trail)
    assert insert_item["name"] == "postgres.accounts.insert"
    assert insert_item["request"]["args"][0] == "acc-1"
    assert insert_item["request"]["args"][2] == "***" and insert_item["request"]["args"][3] == "***"
    assert insert_item["response"] == {"rows_affected": 1}
    assert len(many["request"]["args"]) == 2 and many["request"]["executemany"] is True
    assert update["response"] == {"rows_affected": 3}
    assert select["request"]["args"] == ["acc-1"] and select["response"] == {"rows_affected": 1}
    assert failed["error"]["type"] == "UniqueViolationError"
    assert [e["source"] for e in trail["errors"]] == ["postgres.accounts.insert"]
    _no_secrets(trail)


@pytest.mark.service
def test_sqlite3(harness: TrailHarness, instrumented: str, tmp_path: Path) -> None:
    path = tmp_path / "accounts.db"
    setup = sqlite3.connect(path)
    setup.execute(SCHEMA)
    setup.commit()
    setup.close()
    with _root(harness):
        conn = sqlite3.connect(path)
        cur = conn.cursor()
        cur.execute("INSERT INTO accounts (id, email, password, card, balance) VALUES (?, ?, ?, ?, ?)", _ROW)
        cur.execute("UPDATE accounts SET balance = :b WHERE id = :id", {"b": 5, "id": "acc-1"})
        with pytest.raises(sqlite3.IntegrityError):
            cur.execute("INSERT INTO accounts (id, email, password, card, balance) VALUES (?, ?, ?, ?, ?)", _ROW)
        conn.close()
    trail = harness.one()
    insert, update, failed = _db(trail)
    assert insert["name"] == "sqlite.accounts.insert"
    assert insert["request"]["args"][:2] == ["acc-1", "a@example.com"]
    assert insert["request"]["args"][2] == "***"
    assert insert["response"] == {"rows_affected": 1}
    assert update["request"]["args"] == {"b": 5, "id": "acc-1"} and update["response"] == {"rows_affected": 1}
    assert failed["error"]["type"] == "IntegrityError"
    _no_secrets(trail)


def test_sqlite3_connection_shortcuts(harness: TrailHarness, instrumented: str, tmp_path: Path) -> None:
    # conn.execute/executemany make their cursor inside the C module, where the instrumentation does not see it
    with _root(harness), sqlite3.connect(tmp_path / "shortcuts.db") as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO accounts (id, email, password, card, balance) VALUES (?, ?, ?, ?, ?)", _ROW)
        conn.executemany("INSERT INTO accounts (id, email, password, card, balance) VALUES (?, ?, ?, ?, ?)", _MORE)
        rows = conn.execute("SELECT id FROM accounts WHERE balance > ? ORDER BY id", (1,)).fetchall()
        assert rows == [("acc-1",), ("acc-3",)]
    create, insert, many, select = _db(harness.one())
    assert create["name"] == "sqlite.accounts.create"
    assert insert["request"]["args"] == ["acc-1", "a@example.com", "***", "***", 100]
    assert insert["response"] == {"rows_affected": 1}
    assert many["request"]["executemany"] is True and many["response"] == {"rows_affected": 2}
    assert select["request"]["args"] == [1]
    _no_secrets(harness.one())


@pytest.mark.service
@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_no_second_integration_under_sqlalchemy(
    harness: TrailHarness, instrumented: str, postgres_service: Any, tmp_path: Path, backend: str
) -> None:
    if backend == "postgres":
        _reset(postgres_service)
        url = postgres_service.url
    else:
        url = f"sqlite:///{tmp_path / 'accounts.db'}"
        with sqlite3.connect(tmp_path / "accounts.db") as setup:
            setup.execute(SCHEMA)
    SQLAlchemyInstrumentor().instrument(**sa_hooks.instrumentor_kwargs())
    sa_hooks.install()
    try:
        with _root(harness):
            engine = sa.create_engine(url)  # inside the request: SQLAlchemy's first connect is in the trail
            with engine.begin() as conn:
                conn.execute(
                    sa.text("INSERT INTO accounts (id, email, balance) VALUES (:id, :email, :balance)"),
                    {"id": "acc-9", "email": "z@example.com", "balance": 3},
                )
            engine.dispose()
    finally:
        sa_hooks.uninstall()
        SQLAlchemyInstrumentor().uninstrument()
    trail = harness.one()
    (insert,) = _db(trail)
    assert insert["name"] == f"{backend}.accounts.insert"
    assert insert["request"]["args"] in (
        {"id": "acc-9", "email": "z@example.com", "balance": 3},
        ["acc-9", "z@example.com", 3],  # SQLite's qmark style
    )
    assert insert["response"] == {"rows_affected": 1}
