"""Griffe extension for the documentation site: the package's docstrings use a few reStructuredText forms (the ones
Python's own tooling reads); this turns them into Markdown for mkdocstrings.

* ``:class:`~gotrails_otel.TrailConfig``` (and ``:func:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``, ``:exc:``)
  becomes a link to that object when the reference documents it, else its name in code; a name without a module
  (``:func:`capture_trails```) is looked up from the docstring's class, then its module, then the package.
* ``.. code-block:: python`` and a paragraph ending in ``::`` followed by an indented block become fenced code.
* An ``Attributes:`` entry for several fields (``max_depth, max_items: …`` or ``a / b: …``) becomes one entry per
  field, each with the entry's text.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?`")
_GROUPED = re.compile(r"^(?P<indent>[ \t]+)(?P<names>\w+(?:[ \t]*[,/][ \t]*\w+)+):(?P<text>.*)$")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block::[ \t]*(?P<lang>\w*)[ \t]*$")


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj``'s docstring."""
    scopes: list[griffe.Object] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.append(scope)
        scope = scope.parent
    head = target.split(".", 1)[0]
    for candidate in scopes:
        try:
            if head in candidate.members:
                return f"{candidate.path}.{target}"
        except Exception:  # noqa: S112 - an alias that cannot be resolved is not a scope to search
            continue
    return target


def _roles(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match[str]) -> str:
        target = match["target"]
        title = target.rsplit(".", 1)[-1] if match["tilde"] else target
        identifier = _resolve(obj, target)
        return f'<autoref identifier="{html.escape(identifier)}" optional><code>{html.escape(title)}</code></autoref>'

    return _ROLE.sub(link, text)


def _code_blocks(text: str) -> str:
    """``.. code-block:: LANG`` and ``text::`` + indented block → fenced code blocks."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        literal = not directive and line.rstrip().endswith("::") and not line.strip().startswith("..")
        if not (directive or literal):
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        block: list[str] = []
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
            j -= 1
        if not block:
            out.append(line)
            i += 1
            continue
        lang = directive["lang"] if directive else "python"
        if literal:
            out += [line.rstrip()[:-1], ""]  # "Usage::" → "Usage:"
        pad = " " * indent
        out += [f"{pad}```{lang}", *textwrap.indent(textwrap.dedent("\n".join(block)), pad).split("\n"), f"{pad}```"]
        i = j
    return "\n".join(out)


def _split_grouped(text: str) -> str:
    """One ``Attributes:`` entry per field where an entry describes several."""
    lines = text.split("\n")
    out: list[str] = []
    section: int | None = None  # indentation of the section header while inside "Attributes:"
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if line.strip() == "Attributes:":
            section = indent
        elif section is not None and line.strip() and indent <= section:
            section = None
        grouped = _GROUPED.match(line) if section is not None else None
        if not grouped:
            out.append(line)
            i += 1
            continue
        body = [grouped["text"]]
        i += 1
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > indent:
            body.append("\n" + lines[i])
            i += 1
        names = re.split(r"[ \t]*[,/][ \t]*", grouped["names"])
        out += [f"{grouped['indent']}{name}:{''.join(body)}" for name in names]
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of the package once it is loaded (so relative names can be resolved)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[str] = set()

        def walk(obj: griffe.Object) -> None:
            if obj.path in seen:
                return
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = _roles(obj, _code_blocks(_split_grouped(obj.docstring.value)))
            for member in obj.members.values():
                if not member.is_alias and isinstance(member, griffe.Object):
                    walk(member)

        walk(pkg)
