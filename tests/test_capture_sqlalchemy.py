"""SQLAlchemy against real SQLite and PostgreSQL: statements, arguments, row counts and errors in the trail."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.ext.asyncio as sa_async
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.trace import SpanKind

from gotrails_otel.hooks import sqlalchemy as sa_hooks

from .conftest import TrailHarness


@pytest.fixture
def instrumented(semconv: str) -> Iterator[str]:
    assert sa_hooks.support_problem() is None
    SQLAlchemyInstrumentor().instrument(**sa_hooks.instrumentor_kwargs())
    sa_hooks.install()
    yield semconv
    sa_hooks.uninstall()
    SQLAlchemyInstrumentor().uninstrument()


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER)


def _ddl(engine: sa.Engine) -> None:
    with engine.begin() as conn:  # outside any request: start-up SQL never makes a trail
        conn.execute(sa.text("DROP TABLE IF EXISTS payments"))
        conn.execute(sa.text("CREATE TABLE payments (id VARCHAR(20) PRIMARY KEY, amount INTEGER NOT NULL)"))


def _payment_flow(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO payments (id, amount) VALUES (:id, :amount)"), {"id": "pay-123", "amount": 150000}
        )
        conn.execute(
            sa.text("INSERT INTO payments (id, amount) VALUES (:id, :amount)"),
            [{"id": "pay-124", "amount": 1}, {"id": "pay-125", "amount": 2}],
        )
        conn.execute(sa.text("UPDATE payments SET amount = amount + 1 WHERE amount < :limit"), {"limit": 10})
        assert conn.execute(sa.text("SELECT amount FROM payments WHERE id = :id"), {"id": "pay-123"}).scalar() == 150000


def _check_flow(trail: dict[str, Any], system: str, placeholder: str) -> None:
    db = [i for i in trail["integrations"] if i["type"] == "database"]
    assert [i["name"] for i in db] == [
        f"{system}.payments.insert",
        f"{system}.payments.insert",
        f"{system}.payments.update",
        f"{system}.payments.select",
    ]
    first, many, update, select = db
    assert first["request"]["query"] == f"INSERT INTO payments (id, amount) VALUES ({placeholder})"
    assert first["request"]["args"] in (["pay-123", 150000], {"id": "pay-123", "amount": 150000})
    assert first["response"] == {"rows_affected": 1}
    assert len(many["request"]["args"]) == 2 and many["request"]["executemany"] is True
    assert update["response"] == {"rows_affected": 2}
    assert select["error"] is None
    assert trail["errors"] == []
    assert not [s for s in trail["internal_steps"] if s["name"] == "connect"]


@pytest.mark.service
def test_sqlite_sync(harness: TrailHarness, instrumented: str, tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'pay.db'}")
    _ddl(engine)
    with _root(harness):
        _payment_flow(engine)
    trail = harness.one()
    _check_flow(trail, "sqlite", "?, ?")
    assert harness.processor.stats()["in_flight"] == 0
    engine.dispose()


@pytest.mark.service
def test_postgres_sync_and_sql_error(harness: TrailHarness, instrumented: str, postgres_service: Any) -> None:
    engine = sa.create_engine(postgres_service.url)
    _ddl(engine)
    with _root(harness):
        _payment_flow(engine)
    _check_flow(harness.one(), "postgres", "%(id)s, %(amount)s")
    harness.exporter.clear()
    with _root(harness), pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO payments (id, amount) VALUES (:id, :amount)"), {"id": "pay-123", "amount": 5})
    trail = harness.one()
    (failed,) = [i for i in trail["integrations"] if i["name"] == "postgres.payments.insert"]
    assert failed["error"]["type"] == "UniqueViolation"
    assert "duplicate key value" in failed["error"]["message"]
    assert failed["request"]["args"] == {"id": "pay-123", "amount": 5}
    assert trail["errors"][0]["source"] == "postgres.payments.insert"
    engine.dispose()


@pytest.mark.service
def test_postgres_async_engine(harness: TrailHarness, instrumented: str, postgres_service: Any) -> None:
    sync_engine = sa.create_engine(postgres_service.url)
    _ddl(sync_engine)
    sync_engine.dispose()

    async def flow() -> None:
        engine = sa_async.create_async_engine(postgres_service.url)  # looked up after instrument()
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO payments (id, amount) VALUES (:id, :amount)"), {"id": "pay-a", "amount": 7}
            )
            rows = await conn.execute(sa.text("SELECT id FROM payments WHERE amount = :a"), {"a": 7})
            assert rows.scalars().all() == ["pay-a"]
        await engine.dispose()

    with _root(harness):
        asyncio.run(flow())
    trail = harness.one()
    names = [(i["name"], i["request"]["args"], i["response"]["rows_affected"]) for i in trail["integrations"]]
    assert names == [
        ("postgres.payments.insert", {"id": "pay-a", "amount": 7}, 1),
        ("postgres.payments.select", {"a": 7}, 1),
    ]
