"""The flush side's fast paths give exactly what the slow, obvious ways give: the canonical form without the
reference implementation, the one walk that converts, masks and limits captured values."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gotrails_otel import integrity
from gotrails_otel.integrity import canonical

# Text that looks like what the canonical check looks for: hex ids (a UUID's "9b0e-2a6f"), exponents and integral
# floats inside strings, characters outside the Basic Multilingual Plane and in the private use area.
_LOOKALIKE = st.sampled_from(
    [
        "7b6d7e3c-0f5e-4b7b-9b0e-2a6f4c1d9e11",
        "1e+16",
        ":1e-7",
        "[2.0]",
        "a,1.0,",
        "version 1.0",
        ":1234567890123456789",
        "\U0001f600",
        "\ue000",
        'q"\\:',
        "x\U0001f600y",
    ]
)
_TEXT = st.text() | _LOOKALIKE | st.lists(_LOOKALIKE, max_size=3).map("".join)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=30,
)


@given(_JSON)
@settings(max_examples=1500, deadline=None)
def test_canonical_equals_the_reference_with_lookalikes(value: Any) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "document",
    [
        {"transaction_id": "7b6d7e3c-0f5e-4b7b-9b0e-2a6f4c1d9e11", "latency_ms": 12.345},
        {"note": "v1.0, then 2.0", "items": ["1e+16", "x-1e-7", "-2.0"]},
        {"text": "\U0001f600 in a value", "\ue000": 1, "a": [0.5, -3, "e+"]},
        {"hash": "0e+0e-9e" * 8, "ids": ["00000000000000000000"]},
    ],
)
def test_canonical_skips_the_reference_for_lookalikes_inside_strings(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = rfc8785.dumps(document)

    def refused(value: Any) -> bytes:
        raise AssertionError("the reference implementation was used")

    monkeypatch.setattr(integrity, "_reference", refused)
    assert canonical(document) == expected


@pytest.mark.parametrize(
    "document",
    [
        {"a": 1.0},
        {"a": [-0.0]},
        {"a": {"b": 1e16}},
        {"a": [1, 2, 1.5e-7]},
        {"a": 9007199254740991},
        {"\U0001f600": 1, "\ue000": 2},
        {"a": "x", 'k\U0001f600\\"': 1, "\ue000": 2},
    ],
)
def test_canonical_uses_the_reference_where_orjson_differs(document: dict[str, Any]) -> None:
    assert integrity._differs(integrity.orjson.dumps(document, option=integrity.orjson.OPT_SORT_KEYS))
    assert canonical(document) == rfc8785.dumps(document)
