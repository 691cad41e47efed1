"""Leaks and broken trails looked for in the flush side's fast paths (the one walk over raw payloads, the caches,
the statement check, the size fit at the stamp) and in the request side's capture paths."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest
import rfc8785

import gotrails_otel as gt
from gotrails_otel import integrity as chain
from gotrails_otel.redact import Policy
from gotrails_otel.store import snapshot


class _Field(str, enum.Enum):
    """A str-mixin enum as applications key their dicts by: ``str()`` gives ``_Field.A``, not ``pin``."""

    A = "pin"
    B = "api_key"


def test_snapshot_keys_are_the_text_of_str_subclasses() -> None:
    assert snapshot({"user": {_Field.A: "4321", _Field.B: "k"}}) == {"user": {"pin": "4321", "api_key": "k"}}
    assert snapshot({b"password": "x"}) == {"password": "x"}


def test_metadata_keyed_by_a_str_enum_is_masked_by_the_enum_value(make_harness: Any) -> None:
    h = make_harness()
    inst = h.instrumented()
    with inst.fastapi_request("POST", "/", "/", 200):
        gt.set_metadata(user={_Field.A: "4321-planted", _Field.B: "ak-planted-value"})
    trail = h.one()
    text = json.dumps(trail)
    assert "4321-planted" not in text and "ak-planted-value" not in text, trail["metadata"]
    assert trail["metadata"]["user"] == {"pin": "***", "api_key": "***"}


@pytest.mark.parametrize(
    "query",
    [
        "query=shoes&token=hunter2xyz",
        "select=id&password=hunter2xyz",
        "update=1&api_key=hunter2xyz",
        "values=a&secret=hunter2xyz",
        "(password=hunter2xyz)",
        "set: password=hunter2xyz",
    ],
)
def test_a_query_string_that_starts_with_a_statement_word_is_masked_as_text(query: str) -> None:
    # A statement keyword followed by "=" or ":" (a query string's first parameter, a label) starts no statement.
    body = Policy().apply({"request": {"body": {"query": query, "args": [1]}}})["request"]["body"]
    assert "hunter2xyz" not in json.dumps(body), body


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users WHERE name = ?",
        "select*from t",
        "(SELECT a FROM t) UNION (SELECT b FROM u)",
        "query($id: ID!) { user(id: $id) { name } }",
        "query{ me { id } }",
        "{ me { id } }",
        "UPDATE users SET password = md5(?) WHERE id = ?",
        "  with x as (select 1) select * from x",
    ],
)
def test_statements_stay_statements(statement: str) -> None:
    body = Policy().apply({"request": {"body": {"query": statement, "args": [1, 2]}}})["request"]["body"]
    assert body["query"] == statement


@pytest.mark.parametrize("integrity", [True, False])
def test_a_lone_surrogate_in_a_recorded_string_does_not_lose_the_trail(make_harness: Any, integrity: bool) -> None:
    # Python's json module decodes "\ud800" to a lone surrogate, which UTF-8 cannot encode: a request carrying one
    # must not be able to keep its own trail out of the audit log.
    h = make_harness(integrity=integrity)
    inst = h.instrumented()
    with inst.fastapi_request("POST", "/", "/", 200):
        gt.set_metadata(name="ab\ud800cd", pair="\U0001f600", **{"x\udfff": 1}, password="hunter2xyz")
    trail = h.one()
    assert trail["metadata"] == {"name": "ab\ufffdcd", "pair": "\U0001f600", "x\ufffd": 1, "password": "***"}
    if integrity:  # its hash covers it as exported
        (line,) = [r for r in h.exporter.get_finished_records() if "integrity" in r]
        block = dict(line["integrity"])
        expected = block.pop("hash")
        assert chain.digest(rfc8785.dumps({**line, "integrity": block}), None) == expected


def test_named_tuples_and_rows_keep_their_field_names_so_secrets_are_masked(make_harness: Any) -> None:
    import collections

    import sqlalchemy as sa

    creds = collections.namedtuple("creds", "user password")
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT 'bob' AS user, 'row-pw-planted' AS password")).one()
    h = make_harness()
    with h.instrumented().fastapi_request("POST", "/", "/", 200):
        gt.set_metadata(login=creds("bob", "nt-pw-planted"), row=row)
        with gt.integration("custom", "vault.read") as call:
            call.set_request({"who": creds("bob", "req-pw-planted")})
    trail = h.one()
    text = json.dumps(trail)
    for planted in ("nt-pw-planted", "row-pw-planted", "req-pw-planted"):
        assert planted not in text, trail
    assert trail["metadata"]["login"] == {"user": "bob", "password": "***"}
    assert trail["metadata"]["row"] == {"user": "bob", "password": "***"}
    (item,) = trail["integrations"]
    assert item["request"]["who"] == {"user": "bob", "password": "***"}
