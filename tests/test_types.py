"""The ``Trail`` TypedDict and its nested entry types match the published JSON Schema key for key and type for type,
and real trails (HTTP, gRPC and Kafka entries) only use keys the types declare."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

import gotrails_otel as gt
from gotrails_otel import trail_schema
from gotrails_otel.types import EntryPayload, Trail

from .conftest import TrailHarness

_JSON_TYPES: dict[str, set[Any]] = {
    "string": {str},
    "number": {float},
    "integer": {int},
    "boolean": {bool},
    "null": {type(None)},
    "array": {list},
}


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/$defs/"), ref
    return dict(schema["$defs"][ref.removeprefix("#/$defs/")])


def _members(annotation: Any) -> list[Any]:
    """The members of a union (``X | None`` gives ``[X, None]``), else ``[annotation]``."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return list(get_args(annotation))
    return [annotation]


def _is_typeddict(annotation: Any) -> bool:
    return isinstance(annotation, type) and typing.is_typeddict(annotation)


def _check_value(schema: dict[str, Any], node: dict[str, Any], annotation: Any, where: str) -> None:
    node = _resolve(schema, node)
    if not node:  # {} in the schema: any JSON value
        assert annotation is Any, f"{where}: the schema allows any value, the type says {annotation}"
        return
    if "anyOf" in node:
        parts = _members(annotation)
        assert len(parts) == len(node["anyOf"]), f"{where}: {annotation} vs anyOf {node['anyOf']}"
        for option in node["anyOf"]:
            option = _resolve(schema, option)
            match = [p for p in parts if _matches(schema, option, p)]
            assert match, f"{where}: no member of {annotation} for {option}"
            _check_value(schema, option, match[0], where)
        return
    if "enum" in node or "const" in node:
        allowed = set(node.get("enum", [node.get("const")]))
        assert get_origin(annotation) is Literal, f"{where}: enum in the schema, {annotation} in the type"
        assert set(get_args(annotation)) == allowed, f"{where}: {get_args(annotation)} vs {allowed}"
        return
    declared = node.get("type")
    json_types = [declared] if isinstance(declared, str) else list(declared)
    parts = _members(annotation)
    assert len(parts) == len(json_types), f"{where}: {annotation} vs {json_types}"
    for json_type, part in zip(sorted(json_types, key=_order), sorted(parts, key=_part_order), strict=True):
        if json_type == "object":
            if "properties" in node:
                assert _is_typeddict(part), f"{where}: an object with properties needs a TypedDict, got {part}"
                check_typeddict(schema, node, part, where)
            else:
                assert get_origin(part) is dict, f"{where}: object vs {part}"
                key_type, value_type = get_args(part)
                assert key_type is str
                extra = node.get("additionalProperties")
                if isinstance(extra, dict):
                    _check_value(schema, extra, value_type, f"{where}.*")
                else:
                    assert value_type is Any, f"{where}: free-form object values are Any, not {value_type}"
        elif json_type == "array":
            assert get_origin(part) is list, f"{where}: array vs {part}"
            _check_value(schema, node["items"], get_args(part)[0], f"{where}[]")
        else:
            assert {part} == _JSON_TYPES[json_type], f"{where}: {json_type} vs {part}"


def _order(json_type: str) -> int:
    return 1 if json_type == "null" else 0


def _part_order(part: Any) -> int:
    return 1 if part is type(None) else 0


def _matches(schema: dict[str, Any], option: dict[str, Any], part: Any) -> bool:
    if option.get("type") == "null":
        return part is type(None)
    if "properties" in option:
        return _is_typeddict(part)
    return part is not type(None)


def check_typeddict(schema: dict[str, Any], node: dict[str, Any], typed: Any, where: str) -> None:
    """``typed`` declares exactly the keys of ``node`` (at least them when the schema leaves the object open),
    requires exactly the schema's required keys, and types each key as the schema does."""
    hints = get_type_hints(typed)
    properties: dict[str, Any] = node.get("properties", {})
    if node.get("additionalProperties") is False:
        assert set(hints) == set(properties), f"{where}: {sorted(set(hints) ^ set(properties))} differ"
    else:
        assert set(properties) <= set(hints), f"{where}: missing {sorted(set(properties) - set(hints))}"
    assert set(typed.__required_keys__) == set(node.get("required", [])), f"{where}: required keys differ"
    for key, sub in properties.items():
        _check_value(schema, sub, hints[key], f"{where}.{key}")


def test_trail_typeddict_matches_the_published_schema() -> None:
    schema = trail_schema()
    check_typeddict(schema, schema, Trail, "trail")


def test_the_drift_check_catches_a_missing_key_and_a_wrong_type() -> None:
    schema = trail_schema()
    schema["properties"]["latency_ms"] = {"type": "string"}
    try:
        check_typeddict(schema, schema, Trail, "trail")
    except AssertionError as exc:
        assert "latency_ms" in str(exc)
    else:
        raise AssertionError("a wrong type went unnoticed")
    schema = trail_schema()
    schema["$defs"]["step"]["properties"]["new_field"] = {"type": "string"}
    try:
        check_typeddict(schema, schema, Trail, "trail")
    except AssertionError as exc:
        assert "new_field" in str(exc)
    else:
        raise AssertionError("a key missing from the TypedDict went unnoticed")


def test_real_entry_payloads_use_only_declared_keys(harness: TrailHarness) -> None:
    inst = harness.instrumented("old")
    with inst.fastapi_request("POST", "/v1/payments", "/v1/payments", 201, query="dry=0"), gt.step("Validate"):
        pass
    with inst.grpc_server("users.v1.UserService", "GetUser"):
        pass
    with inst.kafka_consumer("payment.created", 2):
        pass
    trails = harness.trails(3)
    assert {t["entry"]["kind"] for t in trails} == {"http", "grpc", "kafka"}
    declared = set(EntryPayload.__annotations__)
    for trail in trails:
        for part in ("request", "response"):
            assert set(trail[part]) <= declared, f"{trail['entry']['kind']} {part}: {set(trail[part]) - declared}"
