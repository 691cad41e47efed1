"""Semantic-convention lookups that read the new (stable) key first and the old key second.

Instrumentations emit the old keys by default, the new ones with ``OTEL_SEMCONV_STABILITY_OPT_IN=http,database``
and both with ``http/dup,database/dup``; every lookup here gives the same answer in all three modes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Attrs = Mapping[str, Any]

HTTP_METHOD = ("http.request.method", "http.method")
HTTP_STATUS = ("http.response.status_code", "http.status_code")
HTTP_URL = ("url.full", "http.url")
HTTP_ROUTE = ("http.route",)
HTTP_TARGET = ("http.target",)
URL_PATH = ("url.path",)
URL_QUERY = ("url.query",)
ERROR_TYPE = ("error.type",)

DB_SYSTEM = ("db.system.name", "db.system")
DB_STATEMENT = ("db.query.text", "db.statement")
DB_OPERATION = ("db.operation.name", "db.operation")
DB_NAMESPACE = ("db.namespace", "db.name")
DB_TABLE = ("db.collection.name", "db.sql.table")
DB_ROWS = ("db.response.returned_rows", "db.response.affected_rows")

RPC_SERVICE = ("rpc.service",)
RPC_METHOD = ("rpc.method",)
RPC_GRPC_STATUS = ("rpc.grpc.status_code", "rpc.response.status_code")

MESSAGING_SYSTEM = ("messaging.system",)
MESSAGING_DESTINATION = ("messaging.destination.name", "messaging.destination")
MESSAGING_PARTITION = ("messaging.destination.partition.id", "messaging.kafka.partition")
MESSAGING_OFFSET = ("messaging.kafka.offset", "messaging.kafka.message.offset")
MESSAGING_KEY = ("messaging.kafka.message.key",)

EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"

GRPC_STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

# db.system values as the trail names them (the seed writes ``postgres.payments.insert``).
DB_SYSTEM_NAMES = {"postgresql": "postgres", "microsoft.sql_server": "mssql", "mssql": "mssql"}
CACHE_SYSTEMS = frozenset({"redis", "memcached", "valkey"})


def first(attrs: Attrs, keys: tuple[str, ...]) -> Any:
    """The value of the first of ``keys`` present in ``attrs``, else ``None``."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            return value
    return None


def as_int(value: Any) -> int | None:
    """``value`` as an int when it is one or a decimal string (gRPC sets ports as strings), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def header_attributes(attrs: Attrs, prefix: str) -> dict[str, list[str]]:
    """Headers that instrumentations record as ``http.request.header.<name>`` attributes, by lower-case name."""
    headers: dict[str, list[str]] = {}
    for key, value in attrs.items():
        if key.startswith(prefix):
            name = key[len(prefix) :].replace("_", "-").lower()
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            headers[name] = [str(v) for v in values]
    return headers
