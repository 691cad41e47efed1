"""The service measured by ``bench_service.py``, in FastAPI (served by uvicorn) and in Flask (served by gunicorn).

Per ``POST /v1/payments``: a JSON body of about 1 KiB, two SQLAlchemy queries on SQLite (look the customer up,
insert the payment), one Redis ``SET``, one httpx ``POST`` to the upstream stub, and a JSON response of about 1 KiB.

The telemetry is chosen by ``BENCH_SETUP`` before the app is built (the instrumentors patch the framework classes):

* ``none``: no OpenTelemetry at all;
* ``otel``: the SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter that drops every batch, and the
  contrib instrumentations of the framework, SQLAlchemy, Redis and httpx;
* ``gotrails``: the same, plus ``gotrails_otel.instrument()`` (the ``TrailProcessor`` and the capture hooks of the
  same four libraries) with the settings a user gets from ``GOTRAILS_*``: here the file exporter
  (``GOTRAILS_EXPORTER=file``, ``GOTRAILS_FILE``), body capture on and the default masking.

Other settings come from the environment: ``BENCH_DB`` (SQLite file), ``BENCH_REDIS_URL``, ``BENCH_UPSTREAM_URL``.
"""

import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any

SETUPS = ("none", "otel", "gotrails")
_FRAMEWORK_INSTRUMENTORS = {"fastapi": "fastapi", "flask": "flask"}

CUSTOMERS = 100
_SELECT_CUSTOMER = "SELECT id, name, email, tier FROM customers WHERE id = :id"
_INSERT_PAYMENT = (
    "INSERT INTO payments (id, customer_id, amount, currency, method, status) "
    "VALUES (:id, :customer_id, :amount, :currency, :method, :status)"
)


def _null_exporter() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NullSpanExporter(SpanExporter):
        """Takes every batch and drops it: the SDK's own cost, without any I/O."""

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    return NullSpanExporter()


def setup_telemetry(framework: str) -> str:
    """Set up what ``BENCH_SETUP`` names, before the app and its clients are built; return the setup."""
    setup = os.environ.get("BENCH_SETUP", "none")
    if setup not in SETUPS:
        raise SystemExit(f"BENCH_SETUP must be one of {', '.join(SETUPS)}, not {setup!r}")
    if setup == "none":
        return setup
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"bench-{framework}"}))
    provider.add_span_processor(BatchSpanProcessor(_null_exporter()))
    trace.set_tracer_provider(provider)
    libraries = (_FRAMEWORK_INSTRUMENTORS[framework], "sqlalchemy", "redis", "httpx")
    from gotrails_otel.hooks import LIBRARIES

    if setup == "gotrails":
        import gotrails_otel

        # Exactly the instrumentations of the ``otel`` setup: every other library gotrails supports is disabled
        # (sqlite3 among them, which would add a DB-API span under each SQLAlchemy statement).
        others = [library.name for library in LIBRARIES if library.name not in libraries]
        os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = ",".join(others)
        gotrails_otel.instrument(provider)
        return setup

    for library in LIBRARIES:
        if library.name in libraries:
            kwargs: dict[str, Any] = {"tracer_provider": provider}
            if library.name == "sqlalchemy":  # skip_dep_check on SQLAlchemy 2.1; no hooks
                kwargs.update(library.hooks_module().instrumentor_kwargs())
            library.load_instrumentor().instrument(**kwargs)
    return setup


class Backends:
    """The database, cache and upstream of the service, built after the instrumentation."""

    def __init__(self) -> None:
        import httpx
        import redis
        import sqlalchemy as sa

        self.engine = sa.create_engine(
            f"sqlite:///{os.environ['BENCH_DB']}", connect_args={"check_same_thread": False, "timeout": 30}
        )

        @sa.event.listens_for(self.engine, "connect")
        def _pragmas(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.close()

        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, name TEXT, email TEXT, tier TEXT)"
            )
            conn.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS payments (id TEXT PRIMARY KEY, customer_id TEXT, amount INTEGER, "
                "currency TEXT, method TEXT, status TEXT)"
            )
            conn.execute(
                sa.text("INSERT OR IGNORE INTO customers VALUES (:id, :name, :email, :tier)"),
                [
                    {"id": f"cus-{n:04d}", "name": f"Customer {n}", "email": f"c{n}@example.com", "tier": "gold"}
                    for n in range(CUSTOMERS)
                ],
            )
        self.select_customer = sa.text(_SELECT_CUSTOMER)
        self.insert_payment = sa.text(_INSERT_PAYMENT)
        self.cache = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        self.http = httpx.Client(base_url=os.environ["BENCH_UPSTREAM_URL"], timeout=30)
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()

    def next_id(self) -> str:
        with self._ids_lock:
            return f"pay-{os.getpid()}-{next(self._ids):07d}"

    def create_payment(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The request's work, the same in both frameworks: ``(status, response body)``."""
        customer_id = str(payload["customer"]["id"])
        amount = int(payload["amount"])
        payment_id = self.next_id()
        with self.engine.begin() as conn:
            customer = conn.execute(self.select_customer, {"id": customer_id}).mappings().one_or_none()
            if customer is None:
                return 404, {"error": f"unknown customer {customer_id}"}
            conn.execute(
                self.insert_payment,
                {
                    "id": payment_id,
                    "customer_id": customer_id,
                    "amount": amount,
                    "currency": payload.get("currency", "IDR"),
                    "method": payload.get("payment_method", "card"),
                    "status": "PENDING",
                },
            )
        self.cache.set(f"payment:{payment_id}", "PENDING", ex=3600)
        charge = self.http.post(
            "/v2/charge",
            json={"order_id": payload.get("order_id"), "payment_id": payment_id, "gross_amount": amount},
            headers={"Authorization": "Basic ZGVtby1zZXJ2ZXIta2V5Og=="},
        )
        charge.raise_for_status()
        gateway = charge.json()
        return 201, {
            "payment_id": payment_id,
            "order_id": payload.get("order_id"),
            "status": "PENDING",
            "amount": amount,
            "currency": payload.get("currency", "IDR"),
            "customer": dict(customer),
            "gateway": gateway,
            "items": payload.get("items", []),
            "links": {
                "self": f"/v1/payments/{payment_id}",
                "refund": f"/v1/payments/{payment_id}/refund",
                "receipt": f"/v1/payments/{payment_id}/receipt",
            },
        }


def fastapi_app() -> Any:
    """The FastAPI app (``uvicorn --factory service_app:fastapi_app``)."""
    setup_telemetry("fastapi")
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    backends = Backends()
    app = FastAPI()

    @app.post("/v1/payments")
    def create_payment(payload: dict[str, Any]) -> JSONResponse:  # a plain def: FastAPI runs it in its threadpool
        status, body = backends.create_payment(payload)
        return JSONResponse(body, status_code=status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "setup": os.environ.get("BENCH_SETUP", "none")}

    return app


def flask_app() -> Any:
    """The Flask app (``gunicorn 'service_app:flask_app()'``)."""
    setup_telemetry("flask")
    from flask import Flask, jsonify, request

    backends = Backends()
    app = Flask("bench")

    @app.post("/v1/payments")
    def create_payment() -> Any:
        status, body = backends.create_payment(request.get_json())
        return jsonify(body), status

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok", "setup": os.environ.get("BENCH_SETUP", "none")}

    return app
