"""The README's example prints one trail with every contract field; the CLI prints the schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson

from gotrails_otel import trail_schema

from .conftest import validate_trail
from .test_fold import CONTRACT

ROOT = Path(__file__).resolve().parent.parent


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    match = re.search(r"<!-- example -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its example block"
    return match.group(1)


def test_readme_example_prints_one_complete_trail() -> None:
    code = _readme_example()
    assert code == (ROOT / "examples" / "quickstart.py").read_text("utf-8"), "README and quickstart.py differ"
    assert len(code.strip().splitlines()) <= 24
    result = subprocess.run(
        [sys.executable, "examples/quickstart.py"], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2  # the trail, then the final checkpoint of its hash chain at shutdown
    trail = orjson.loads(lines[0])
    checkpoint = orjson.loads(lines[1])
    assert checkpoint["record"] == "gotrails.checkpoint" and checkpoint["final"] is True
    assert checkpoint["seq"] == trail["integrity"]["seq"] == 1
    assert checkpoint["hash"] == trail["integrity"]["hash"]
    validate_trail(trail)
    for key in CONTRACT:
        assert key in trail
    assert trail["service"] == "payment-service"
    assert [s["name"] for s in trail["internal_steps"]] == ["ValidateRequest"]
    assert [(i["type"], i["name"]) for i in trail["integrations"]] == [("http", "POST api.midtrans.com/v2/charge")]
    assert trail["metadata"] == {"user_id": "u-123"}


def test_cli_prints_a_valid_draft_2020_12_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gotrails_otel.cli", "schema"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema == trail_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(CONTRACT) <= set(schema["required"])


def test_cli_without_a_command_shows_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gotrails_otel.cli"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2 and "schema" in result.stdout


def test_schema_rejects_a_trail_missing_a_contract_field() -> None:
    validator = jsonschema.Draft202012Validator(trail_schema())
    assert not validator.is_valid({"timestamp": "2026-01-23T01:12:45.123Z"})
