"""Documentation that cannot drift from the code: the README's generated sections, and a docstring on every public
name that the API reference renders."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from gotrails_otel import TrailConfig, _docgen

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@pytest.mark.parametrize("name", sorted(_docgen.sections()))
def test_readme_generated_sections_are_current(name: str) -> None:
    current = _docgen.section(README.read_text("utf-8"), name)
    expected = _docgen.sections()[name]()
    assert current == expected, (
        f"README.md's generated {name!r} section differs from the code: run `{_docgen.REGENERATE}` from the "
        "repository's root and commit README.md"
    )


def test_every_setting_is_documented_with_its_variable() -> None:
    """The docstring of TrailConfig, its fields and from_env agree (DocgenError says what is missing)."""
    rows = _docgen.settings()
    fields = [name for row in rows for name in row.fields]
    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(TrailConfig))
    variables = [variable for row in rows for variable in row.variables]
    assert sorted(variables) == sorted(_docgen.variables_read())
    assert len(variables) == len(set(variables))


def test_the_table_has_a_row_per_variable_with_its_default() -> None:
    table = _docgen.config_markdown()
    assert "| `GOTRAILS_GRACE_MS` | `grace_ms` | `1000` |" in table
    assert "| `GOTRAILS_MAX_BODY_BYTES` | `max_body_bytes` | `65536` (64 KiB) |" in table
    assert "| `GOTRAILS_ROOT_KINDS` | `root_kinds` | `consumer,server` |" in table
    assert "| `GOTRAILS_CAPTURE_CACHE_VALUES` | `capture_cache_values` | `false` |" in table
    for variable in _docgen.variables_read():
        assert f"`{variable}`" in table


def test_an_undocumented_setting_fails_with_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = TrailConfig.__doc__ or ""
    entry = next(line for line in doc.splitlines() if line.strip().startswith("grace_ms:"))
    monkeypatch.setattr(TrailConfig, "__doc__", doc.replace(entry, ""))
    with pytest.raises(_docgen.DocgenError, match=r"fields without an entry .*\['grace_ms'\]"):
        _docgen.settings()


def test_a_variable_named_under_the_wrong_field_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = TrailConfig.__doc__ or ""
    grace, max_age = "``GOTRAILS_GRACE_MS``", "``GOTRAILS_MAX_AGE_MS``"
    swapped = doc.replace(grace, "``TMP``").replace(max_age, grace).replace("``TMP``", max_age)
    monkeypatch.setattr(TrailConfig, "__doc__", swapped)
    with pytest.raises(_docgen.DocgenError, match="reads GOTRAILS_GRACE_MS into 'grace_ms'"):
        _docgen.settings()


def test_regenerating_fixes_a_drifted_readme(tmp_path: Path) -> None:
    drifted = README.read_text("utf-8").replace("| `GOTRAILS_GRACE_MS` |", "| `GOTRAILS_GRACE` |")
    copy = tmp_path / "README.md"
    copy.write_text(drifted, "utf-8")
    command = [sys.executable, "-m", "gotrails_otel._docgen"]
    check = subprocess.run([*command, "--check", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 1 and _docgen.REGENERATE in check.stderr
    fix = subprocess.run([*command, str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert fix.returncode == 0, fix.stderr
    assert copy.read_text("utf-8") == README.read_text("utf-8")


def test_readme_processor_by_hand_example_writes_trails(tmp_path: Path) -> None:
    match = re.search(r"<!-- by-hand -->\s*```python\n(.*?)```", README.read_text("utf-8"), re.DOTALL)
    assert match, "README.md lost its 'processor by hand' example"
    request = 'with trace.get_tracer("t").start_as_current_span("job", kind=trace.SpanKind.SERVER):\n    pass\n'
    script = tmp_path / "by_hand.py"
    script.write_text(match.group(1) + request + "provider.shutdown()\n", "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GOTRAILS_"))}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "trails.jsonl").read_bytes().splitlines()]
    [trail] = [r for r in records if "record" not in r]  # checkpoints of the hash chain are records of their own
    assert trail["entry"] == {"kind": "custom", "name": "job"}


# ------------------------------------------------------------------------------------------ docstrings

REFERENCE = ROOT / "docs" / "reference"


def _reference_modules() -> list[str]:
    """The modules the API reference renders (``::: module`` in docs/reference/*.md)."""
    found = []
    for page in sorted(REFERENCE.glob("*.md")):
        found += re.findall(r"^::: ([\w.]+)\s*$", page.read_text("utf-8"), re.MULTILINE)
    return found


def _attribute_docstring(module: types.ModuleType, name: str) -> str | None:
    """The string literal right after ``name = ...`` in ``module`` (or in the module it imports ``name`` from)."""
    tree = ast.parse(inspect.getsource(module))
    for node, following in zip(tree.body, [*tree.body[1:], None], strict=True):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = importlib.import_module("." * node.level + (node.module or ""), module.__package__)
            return _attribute_docstring(source, name)
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                return str(following.value.value)
            return None
    return None


def _own_docstring(obj: object) -> str | None:
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        if dataclasses.is_dataclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
            return None  # the signature dataclasses write when the class has no docstring
        return doc if isinstance(doc, str) else None
    return getattr(obj, "__doc__", None)


def _public_members(cls: type) -> dict[str, object]:
    """The public methods and properties a class defines (``name = _helper`` aliases are not definitions)."""
    members: dict[str, object] = {}
    for name, value in vars(cls).items():
        function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if name.startswith("_"):
            continue
        if isinstance(function, property) or (inspect.isfunction(function) and function.__name__ == name):
            members[name] = function
    return members


def _undocumented() -> list[str]:
    missing: list[str] = []
    protocols: list[type] = []
    classes: list[tuple[str, type]] = []
    for module_name in _reference_modules():
        module = importlib.import_module(module_name)
        assert hasattr(module, "__all__"), f"{module_name} is in the API reference but has no __all__"
        for name in module.__all__:
            if name == "__version__":
                continue
            obj = getattr(module, name)
            path = f"{module_name}.{name}"
            if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj):
                if not (_own_docstring(obj) or "").strip():
                    missing.append(path)
                if inspect.isclass(obj):
                    classes.append((path, obj))
                    if getattr(obj, "_is_protocol", False):
                        protocols.append(obj)
            elif not (_attribute_docstring(module, name) or "").strip():
                missing.append(path)
    for path, cls in classes:
        if typing.is_typeddict(cls):
            continue
        implemented = [p for p in protocols if all(hasattr(cls, m) for m in _public_members(p))]
        for name, member in _public_members(cls).items():
            inherited = inspect.getdoc(getattr(cls, name))
            from_protocol = any(name in _public_members(p) and inspect.getdoc(getattr(p, name)) for p in implemented)
            own = inspect.getdoc(member.fget if isinstance(member, property) else member)
            if not (own or inherited or from_protocol):
                missing.append(f"{path}.{name}")
    return sorted(set(missing))


def test_the_reference_renders_the_public_modules() -> None:
    assert {"gotrails_otel", "gotrails_otel.testing", "gotrails_otel.exporters", "gotrails_otel.config"} <= set(
        _reference_modules()
    )


def test_every_public_name_has_a_docstring() -> None:
    """Everything the API reference renders: each module's __all__, and their classes' public methods (a method
    may take its docstring from a base class or from a Protocol it implements, such as TrailExporter)."""
    missing = _undocumented()
    assert not missing, f"public names without a docstring (the API reference would omit them): {missing}"
