"""The JSON Schema (draft 2020-12) of the trail document, shipped with the package."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

__all__ = ["trail_schema"]


@functools.cache
def _schema_text() -> str:
    return resources.files(__package__).joinpath("trail.schema.json").read_text("utf-8")


def trail_schema() -> dict[str, Any]:
    """A fresh copy of the trail document's JSON Schema (draft 2020-12)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema
