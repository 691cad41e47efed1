"""The README's generated sections, made from the code so that they cannot drift from it.

* ``config``: every ``GOTRAILS_*`` variable with its :class:`~gotrails_otel.TrailConfig` field, default and meaning,
  read from the dataclass fields, the ``Attributes:`` section of its docstring and the variables ``from_env`` reads.
* ``masked``: the default masking rules, :func:`gotrails_otel.maskrules.markdown`.

Each lies in the README between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. Regenerate them from the
repository's root with ``python -m gotrails_otel._docgen``; ``--check`` only reports whether they are current.

A new setting needs: a :class:`~gotrails_otel.TrailConfig` field with a default, an entry in the docstring's
``Attributes:`` section that names its variable as ````GOTRAILS_NAME````, and the variable read in ``from_env``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanKind

from . import maskrules
from .config import TrailConfig

__all__ = ["DocgenError", "Setting", "config_markdown", "render", "sections", "settings"]

REGENERATE = "python -m gotrails_otel._docgen"
"""The command that rewrites the README's generated sections (run it from the repository's root)."""

_VARIABLE = re.compile(r"GOTRAILS_[A-Z0-9_]+")
_ENTRY = re.compile(r"^    (?P<names>\w+(?:\s*[,/]\s*\w+)*):\s*(?P<text>.*)$")
_ONLY_VARIABLES = re.compile(r"\s*\((?:\s*``GOTRAILS_[A-Z0-9_]+``\s*,?)+\)")
_LEADING_VARIABLE = re.compile(r"\(``GOTRAILS_[A-Z0-9_]+``[,;]\s*")
_ROLE = re.compile(r":[a-z]+:`(?P<tilde>~?)(?P<target>[^`]+)`")


class DocgenError(Exception):
    """The code does not describe its settings completely; the message says what to add and where."""


@dataclass(frozen=True)
class Setting:
    """One entry of ``TrailConfig``'s ``Attributes:`` section: its fields, their variables and defaults."""

    fields: tuple[str, ...]
    variables: tuple[str, ...]
    """The ``GOTRAILS_*`` variables the entry names, in its order."""
    defaults: tuple[str, ...]
    """Each field's default as it would be written in its variable (Markdown)."""
    meaning: str
    """The entry's text as Markdown, without the parentheses that only name the variables."""

    def field_of(self) -> dict[str, str]:
        """Variable → field: one field takes every variable; several fields take one variable each, in order."""
        if len(self.fields) == 1:
            return dict.fromkeys(self.variables, self.fields[0])
        return dict(zip(self.variables, self.fields, strict=True))


def _attribute_entries(doc: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """``(names, text)`` per entry of the docstring's ``Attributes:`` section."""
    lines = doc.splitlines()
    try:
        start = lines.index("Attributes:") + 1
    except ValueError:
        raise DocgenError("TrailConfig's docstring lost its 'Attributes:' section") from None
    names: tuple[str, ...] | None = None
    text: list[str] = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break  # the section ends at the next unindented line
        match = _ENTRY.match(line)
        if match:
            if names is not None:
                yield names, " ".join(text)
            names = tuple(re.split(r"\s*[,/]\s*", match["names"]))
            text = [match["text"].strip()]
        elif line.strip():
            if names is None:
                raise DocgenError(f"TrailConfig's 'Attributes:' section: text before the first entry: {line.strip()!r}")
            text.append(line.strip())
    if names is not None:
        yield names, " ".join(text)


def _markdown(text: str) -> str:
    """A docstring entry as one Markdown table cell."""
    text = _ONLY_VARIABLES.sub("", text)
    text = _LEADING_VARIABLE.sub("(", text)

    def role(match: re.Match[str]) -> str:
        target = match["target"]
        return f"`{target.rsplit('.', 1)[-1] if match['tilde'] else target}`"

    text = _ROLE.sub(role, text)
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    return text.removesuffix(".").replace("|", "\\|")


def _env_value(value: Any, name: str) -> str:
    """A default as it would be written in its variable (sizes in bytes also in KiB, MiB or GiB)."""
    if value is None or value == () or value == frozenset():
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and "bytes" in name:
        for size, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= size and value % size == 0:
                return f"`{value}` ({value // size} {unit})"
    if isinstance(value, (frozenset, set, tuple, list)):
        parts = sorted(v.name.lower() if isinstance(v, SpanKind) else str(v) for v in value)
        return f"`{','.join(parts)}`"
    return f"`{value}`"


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise DocgenError(f"TrailConfig.{field.name} has no default; every setting needs one")


class _Recorder(Mapping[str, str]):
    """An empty environment that notes every variable looked up in it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.seen.append(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.seen.append(key)
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def variables_read() -> list[str]:
    """The ``GOTRAILS_*`` variables :meth:`TrailConfig.from_env` looks up, in its order."""
    recorder = _Recorder()
    TrailConfig.from_env(recorder)
    return list(dict.fromkeys(name for name in recorder.seen if name.startswith("GOTRAILS_")))


def _read_calls() -> dict[str, str]:
    """Variable → field for each ``read("GOTRAILS_…", "field", …)`` call in ``from_env``'s source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(TrailConfig.from_env)))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "read":
            constants = [a.value for a in node.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if len(constants) == 2:
                found[constants[0]] = constants[1]
    return found


def settings() -> list[Setting]:
    """Every ``TrailConfig`` setting, in the docstring's order; raises :class:`DocgenError` when the docstring,
    the fields and ``from_env`` do not agree (a field or variable undocumented, a variable on the wrong field)."""
    fields = {f.name: f for f in dataclasses.fields(TrailConfig)}
    seen: set[str] = set()
    found: list[Setting] = []
    for names, text in _attribute_entries(inspect.getdoc(TrailConfig) or ""):
        for name in names:
            if name not in fields:
                raise DocgenError(f"TrailConfig's docstring describes {name!r}, which is not a field")
            if name in seen:
                raise DocgenError(f"TrailConfig's docstring describes {name!r} twice")
            seen.add(name)
        variables = tuple(dict.fromkeys(_VARIABLE.findall(text)))
        if len(names) > 1 and variables and len(variables) != len(names):
            raise DocgenError(
                f"TrailConfig's docstring entry {' / '.join(names)!r} names {len(variables)} variables for "
                f"{len(names)} fields: name one variable per field, in the fields' order, or split the entry"
            )
        defaults = tuple(_env_value(_default(fields[name]), name) for name in names)
        found.append(Setting(names, variables, defaults, _markdown(text)))
    missing = [name for name in fields if name not in seen]
    if missing:
        raise DocgenError(
            f"TrailConfig fields without an entry in its docstring's 'Attributes:' section: {missing}; describe each, "
            "with its GOTRAILS_* variable in double backticks, or '(code only)'"
        )
    documented = {variable: field for s in found for variable, field in s.field_of().items()}
    read = variables_read()
    undocumented = [v for v in read if v not in documented]
    if undocumented:
        raise DocgenError(
            f"TrailConfig.from_env reads {undocumented}, which no entry of TrailConfig's docstring names: name each "
            "variable in its field's entry"
        )
    unread = [v for v in documented if v not in read]
    if unread:
        raise DocgenError(f"TrailConfig's docstring names {unread}, which TrailConfig.from_env never reads")
    for variable, field in _read_calls().items():
        if documented.get(variable) != field:
            raise DocgenError(
                f"from_env reads {variable} into {field!r}, but TrailConfig's docstring names it under "
                f"{documented.get(variable)!r}"
            )
    return found


def config_markdown() -> str:
    """The README's configuration table (the ``config`` section)."""
    rows = [
        "| variable | `TrailConfig` field | default | meaning |",
        "|---|---|---|---|",
    ]
    code_only: list[str] = []
    for setting in settings():
        if not setting.variables:
            code_only += setting.fields
            continue
        rows.append(
            f"| {', '.join(f'`{v}`' for v in setting.variables)} | {', '.join(f'`{f}`' for f in setting.fields)} "
            f"| {', '.join(setting.defaults)} | {setting.meaning} |"
        )
    if code_only:
        rows += ["", f"Set in code only: {', '.join(f'`{name}`' for name in code_only)}."]
    return "\n".join(rows) + "\n"


def sections() -> dict[str, Callable[[], str]]:
    """Name → generator of each generated README section."""
    return {"config": config_markdown, "masked": maskrules.markdown}


def _bounds(text: str, name: str) -> tuple[int, int]:
    start_marker, end_marker = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise DocgenError(f"the README has no {start_marker.strip()} … {end_marker} section")
    return start + len(start_marker), end


def section(text: str, name: str) -> str:
    """The current content of the generated section ``name`` in ``text``."""
    start, end = _bounds(text, name)
    return text[start:end]


def render(text: str) -> str:
    """``text`` (the README) with every generated section regenerated."""
    for name, generate in sections().items():
        start, end = _bounds(text, name)
        text = text[:start] + generate() + text[end:]
    return text


def main(argv: list[str] | None = None) -> int:
    """``python -m gotrails_otel._docgen [--check] [README.md]``."""
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("readme", nargs="?", default="README.md", type=Path, help="the README (default: README.md)")
    parser.add_argument("--check", action="store_true", help="only report whether the sections are current")
    args = parser.parse_args(argv)
    try:
        current = args.readme.read_text("utf-8")
        fresh = render(current)
    except (OSError, DocgenError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    if fresh == current:
        print(f"{args.readme}: generated sections are current")
        return 0
    if args.check:
        print(f"{args.readme}: generated sections are out of date; run `{REGENERATE}`", file=sys.stderr)
        return 1
    args.readme.write_text(fresh, "utf-8")
    print(f"{args.readme}: generated sections rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
