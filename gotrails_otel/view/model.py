"""What the terminal and the HTML page show of a trail: the header facts and the waterfall rows.

Trail values are untrusted (a trail file may come from anywhere): every read tolerates missing keys and odd
types, and nothing here interprets a value as markup.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .source import field as get

__all__ = ["Filters", "Row", "axis_ms", "entry_summary", "format_ms", "header_parts", "rows"]

KINDS = ("request", "step", "http", "database", "cache", "kafka", "grpc", "custom")
MAX_DEPTH = 16


@dataclass(frozen=True)
class Filters:
    """Which trails to show; every given condition must hold (several ids: any of them)."""

    trace_ids: tuple[str, ...] = ()
    request_ids: tuple[str, ...] = ()
    errors: bool = False
    slow_ms: float | None = None
    path: str | None = None

    def matches(self, trail: Mapping[str, Any]) -> bool:
        if self.trace_ids and not (
            trail.get("trace_id") in self.trace_ids or get(trail, "otel", "trace_id") in self.trace_ids
        ):
            return False
        if self.request_ids and trail.get("request_id") not in self.request_ids:
            return False
        if self.errors and not has_error(trail):
            return False
        if self.slow_ms is not None and _number(trail.get("latency_ms")) < self.slow_ms:
            return False
        if self.path is not None:
            path = request_path(trail)
            if path is None or not fnmatch.fnmatchcase(path, self.path):
                return False
        return True


def has_error(trail: Mapping[str, Any]) -> bool:
    """Whether the request failed or anything in it recorded an error."""
    return trail.get("status") == "error" or bool(trail.get("errors"))


def request_path(trail: Mapping[str, Any]) -> str | None:
    """What ``--path`` matches: the HTTP path, else the gRPC full method, else the Kafka topic, else the entry name."""
    request = trail.get("request")
    kind = get(trail, "entry", "kind")
    candidates = {
        "http": ("path",),
        "grpc": ("method",),
        "kafka": ("topic",),
        "task": ("task",),
    }.get(str(kind), ("path", "method", "topic"))
    for key in candidates:
        value = get(request, key) if isinstance(request, Mapping) else None
        if isinstance(value, str):
            return value
    name = get(trail, "entry", "name")
    return name if isinstance(name, str) else None


@dataclass
class Row:
    """One bar of the waterfall: the request itself, a step or an integration."""

    kind: str
    name: str
    depth: int
    start_ms: float
    latency_ms: float
    facts: str = ""
    error: str | None = None
    payloads: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None


def rows(trail: Mapping[str, Any]) -> list[Row]:
    """The request, then its steps and integrations in start order, each nested under its parent step."""
    root = Row(
        kind="request",
        name=text(get(trail, "entry", "name")) or "request",
        depth=0,
        start_ms=0.0,
        latency_ms=_number(trail.get("latency_ms")),
        facts=entry_facts(trail),
        error=_entry_error(trail),
        payloads=_present(request=trail.get("request"), response=trail.get("response")),
    )
    items: list[tuple[Mapping[str, Any], str]] = [(step, "step") for step in _objects(trail.get("internal_steps"))]
    for item in _objects(trail.get("integrations")):
        kind = item.get("type")
        items.append((item, kind if kind in KINDS[2:] else "custom"))
    items.sort(key=lambda pair: _number(pair[0].get("start_offset_ms")))  # stable: steps first at equal offsets

    by_id: dict[str, int] = {}
    for index, (item, _) in enumerate(items):
        span_id = item.get("span_id")
        if isinstance(span_id, str) and span_id not in by_id:
            by_id[span_id] = index
    children: dict[int, list[int]] = {}
    top: list[int] = []
    for index, (item, _) in enumerate(items):
        parent = by_id.get(str(item.get("parent_span_id")))
        if parent is None or parent == index:
            top.append(index)
        else:
            children.setdefault(parent, []).append(index)

    out = [root]
    placed: set[int] = set()

    def place(index: int, depth: int) -> None:
        stack = [(index, depth)]
        while stack:
            current, level = stack.pop()
            if current in placed:
                continue
            placed.add(current)
            item, kind = items[current]
            out.append(_row(item, kind, min(level, MAX_DEPTH)))
            stack.extend((child, level + 1) for child in reversed(children.get(current, [])))

    for index in top:
        place(index, 1)
    for index in range(len(items)):  # entries caught in a parent cycle (malformed input) still appear
        if index not in placed:
            place(index, 1)
    return out


def _row(item: Mapping[str, Any], kind: str, depth: int) -> Row:
    error = item.get("error")
    message = None
    if isinstance(error, Mapping):
        message = text(error.get("message")) or "error"
        if error.get("type"):
            message = f"{message} ({text(error.get('type'))})"
    elif error:
        message = text(error)
    elif item.get("status") == "error":
        message = "error"
    return Row(
        kind=kind,
        name=text(item.get("name")) or "?",
        depth=depth,
        start_ms=max(_number(item.get("start_offset_ms")), 0.0),
        latency_ms=max(_number(item.get("latency_ms")), 0.0),
        facts=facts(kind, item),
        error=message,
        payloads=_present(
            request=item.get("request"),
            response=item.get("response"),
            metadata=item.get("metadata"),
            error=item.get("error"),
        ),
    )


def _present(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in (None, {}, [], "")}


def facts(kind: str, item: Mapping[str, Any]) -> str:
    """The key facts of a step or integration, in a few words."""
    request = item.get("request")
    response = item.get("response")
    req = request if isinstance(request, Mapping) else {}
    resp = response if isinstance(response, Mapping) else {}
    parts: list[str] = []
    if kind == "http":
        parts += [text(req.get("method")), _arrow(resp.get("status"))]
    elif kind == "database":
        query = req.get("query")
        operation = text(query).split(None, 1)[0].upper() if isinstance(query, str) and query.strip() else ""
        if not operation:
            name = text(item.get("name"))
            operation = name.rsplit(".", 1)[-1].upper() if "." in name else ""
        rows_affected = resp.get("rows_affected")
        parts.append(operation)
        if isinstance(rows_affected, int) and not isinstance(rows_affected, bool) and rows_affected >= 0:
            parts.append(f"{rows_affected} row" + ("" if rows_affected == 1 else "s"))
    elif kind == "cache":
        parts += [text(req.get("command")), _arrow(resp.get("status"))]
    elif kind == "kafka":
        action = text(req.get("action"))
        topic = text(req.get("topic"))
        partition, offset = resp.get("partition", req.get("partition")), resp.get("offset", req.get("offset"))
        where = topic if topic and topic != text(item.get("name")) else ""
        if partition is not None:
            where += f"[{text(partition)}]"
        if offset is not None:
            where += f"@{text(offset)}"
        parts += [action, where]
    elif kind == "grpc":
        parts.append(text(resp.get("status_code")))
    return " ".join(p for p in parts if p)


def _arrow(value: Any) -> str:
    return f"→ {text(value)}" if value not in (None, "") else ""


def entry_facts(trail: Mapping[str, Any]) -> str:
    kind = get(trail, "entry", "kind")
    request = trail.get("request")
    response = trail.get("response")
    req = request if isinstance(request, Mapping) else {}
    resp = response if isinstance(response, Mapping) else {}
    if kind == "http":
        return _arrow(resp.get("status"))
    if kind == "grpc":
        return _arrow(resp.get("status_code"))
    if kind == "kafka":
        return facts("kafka", {"request": req, "response": {}})
    if kind == "task":
        return _arrow(resp.get("state"))
    return ""


def entry_summary(trail: Mapping[str, Any]) -> str:
    """``POST /v1/payments → 201``, ``/users.v1.UserService/GetUser → OK``, ``consume payment.created[0]@42``."""
    kind = get(trail, "entry", "kind")
    request = trail.get("request")
    response = trail.get("response")
    req = request if isinstance(request, Mapping) else {}
    resp = response if isinstance(response, Mapping) else {}
    name = text(get(trail, "entry", "name"))
    if kind == "http":
        method, path = text(req.get("method")), text(req.get("path"))
        query = text(req.get("query"))
        target = f"{path}?{query}" if path and query else path
        parts = [method, target] if method or target else [name]
        return " ".join([*(p for p in parts if p), _arrow(resp.get("status"))]).strip()
    if kind == "grpc":
        return f"{text(req.get('method')) or name} {_arrow(resp.get('status_code'))}".strip()
    if kind == "task":
        return f"{text(req.get('action')) or 'run'} {text(req.get('task')) or name} {_arrow(resp.get('state'))}".strip()
    if kind == "kafka":
        topic = text(req.get("topic")) or name
        where = topic
        if req.get("partition") is not None:
            where += f"[{text(req.get('partition'))}]"
        if req.get("offset") is not None:
            where += f"@{text(req.get('offset'))}"
        return f"{text(req.get('action')) or 'consume'} {where}"
    return name or "?"


def _entry_error(trail: Mapping[str, Any]) -> str | None:
    if trail.get("status") != "error":
        return None
    name = get(trail, "entry", "name")
    for error in _objects(trail.get("errors")):
        if error.get("source") == name:
            return text(error.get("message")) or "error"
    return "error"


def header_parts(trail: Mapping[str, Any]) -> dict[str, str]:
    """The header line's facts: time, entry, status, latency, service, ids, completeness."""
    complete = trail.get("complete") is True
    reason = text(trail.get("flush_reason"))
    trace_id = text(trail.get("trace_id"))
    request_id = text(trail.get("request_id"))
    return {
        "time": text(trail.get("timestamp")),
        "entry": entry_summary(trail),
        "status": "error" if trail.get("status") == "error" else "ok",
        "latency": format_ms(_number(trail.get("latency_ms"))),
        "service": text(trail.get("service")),
        "environment": text(trail.get("environment")),
        "trace_id": trace_id,
        "request_id": request_id if request_id and request_id != trace_id else "",
        "completeness": "complete" if complete else f"incomplete ({reason or 'unknown'})",
    }


def axis_ms(trail: Mapping[str, Any], table: Sequence[Row]) -> float:
    """The length of the common time axis: the request, or the latest end among its entries if later."""
    end = max((row.start_ms + row.latency_ms for row in table), default=0.0)
    return max(end, _number(trail.get("latency_ms")), 0.001)


def span(row: Row, total: float) -> tuple[float, float]:
    """The bar of ``row`` as fractions of the axis: (start, length), clamped to [0, 1]."""
    start = min(max(row.start_ms / total, 0.0), 1.0)
    length = min(max(row.latency_ms / total, 0.0), 1.0 - start)
    return start, length


def format_ms(ms: float) -> str:
    if ms >= 100_000_000:
        return f"{ms / 1000:.2g} s"
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def errors(trail: Mapping[str, Any]) -> list[str]:
    out = []
    for error in _objects(trail.get("errors")):
        line = f"{text(error.get('source')) or '?'}: {text(error.get('message'))}"
        if error.get("type"):
            line += f" ({text(error.get('type'))})"
        out.append(line)
    return out


def text(value: Any) -> str:
    """A value as display text (JSON-ish for containers), never raising."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    import orjson

    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def _objects(value: Any) -> Iterable[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
