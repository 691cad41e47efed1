"""SQL statements read with a real tokenizer (``sqlparse``'s lexer): which bound arguments and which inline literals
belong to a sensitive column.

Covered: ``INSERT INTO t (a, password) VALUES (…), (…)`` (placeholders and literals by position, also inside
functions such as ``md5(:p)``), comparisons and assignments on either side (``SET password = md5(:p)``,
``WHERE api_key = ?``, ``password IN (?, ?)``, ``crypt(:p, …) = password``), and a literal right after a sensitive
word (``ALTER USER bob WITH PASSWORD 'x'``, ``IDENTIFIED BY 'x'``). Placeholders: ``?``, ``%s``, ``$1``, ``:name``,
``%(name)s``. A statement is analysed once (the policy caches the result per statement text); one too long to
analyse, or one the lexer fails on, has every literal and every argument masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_ANALYSED", "SqlMask", "analyse", "mask_literals"]

MAX_ANALYSED = 16_384
"""Statements longer than this (characters) are not tokenised: every literal and argument is masked."""

LITERAL_MASK = "'***'"
_LITERAL = re.compile(r"'(?:[^']|'')*'?|\$\$[\s\S]*?(?:\$\$|\Z)")
_BOUNDARY_WORDS = frozenset(
    {
        "AND",
        "OR",
        "NOT",
        "WHERE",
        "SET",
        "ON",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "HAVING",
        "GROUP",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "RETURNING",
        "VALUES",
        "SELECT",
        "FROM",
        "JOIN",
        "USING",
        "CASE",
        "UNION",
        "DO",
        "WITH",
    }
)


@dataclass(frozen=True)
class SqlMask:
    """What to mask for one statement: the statement text with sensitive literals replaced, the names and positions
    of sensitive placeholders; ``masked_literals`` counts literals replaced; ``everything`` means the statement
    could not be analysed and every argument is masked."""

    statement: str
    names: frozenset[str] = frozenset()
    positions: frozenset[int] = frozenset()
    masked_literals: int = 0
    everything: bool = False


def mask_literals(text: str) -> tuple[str, int]:
    """Every string literal in ``text`` (a statement or an excerpt of one) replaced; with the count."""
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return LITERAL_MASK

    return _LITERAL.sub(replace, text), count


def analyse(statement: str, is_sensitive: Callable[[str], bool]) -> SqlMask:
    """Analyse ``statement``; never raises."""
    if len(statement) > MAX_ANALYSED:
        return _fail_closed(statement)
    try:
        return _Analysis(statement, is_sensitive).run()
    except Exception:  # a lexer failure must not leak: mask everything in this statement
        return _fail_closed(statement)


_BUDGET_PER_TOKEN = 64


class _OverBudget(Exception):
    """The statement needs more scanning than any real statement does."""


def _fail_closed(statement: str) -> SqlMask:
    text, count = mask_literals(statement)
    return SqlMask(text, masked_literals=count, everything=True)


class _Analysis:
    def __init__(self, statement: str, is_sensitive: Callable[[str], bool]) -> None:
        from sqlparse import lexer
        from sqlparse import tokens as T

        self.T = T
        self.is_sensitive = is_sensitive
        self.statement = statement
        self.tokens: list[tuple[object, str]] = list(lexer.tokenize(statement))  # type: ignore[no-untyped-call]
        # Significant tokens (no whitespace or comments), as indexes into self.tokens, with their paren depth.
        self.sig: list[int] = []
        self.depth: list[int] = []
        depth = 0
        for index, (ttype, value) in enumerate(self.tokens):
            if ttype in T.Whitespace or ttype in T.Comment or ttype in T.Newline:
                continue
            if value == ")":
                depth -= 1
            self.sig.append(index)
            self.depth.append(depth)
            if value == "(":
                depth += 1
        self.positional: dict[int, int] = {}  # token index -> argument position
        order = 0
        for index, (ttype, value) in enumerate(self.tokens):
            if ttype is T.Name.Placeholder:
                following = self.tokens[index + 1] if index + 1 < len(self.tokens) else (None, "")
                if value == "?" and following[0] in T.Number.Integer:  # SQLite's ?NNN
                    self.positional[index] = int(following[1]) - 1
                elif value in ("?", "%s"):
                    self.positional[index] = order
                    order += 1
                elif value[:1] in ("$", ":") and value[1:].isdigit():  # $1 (PostgreSQL), :1 (Oracle)
                    self.positional[index] = int(value[1:]) - 1
        self.marked: set[int] = set()  # token indexes of sensitive placeholders and literals
        # Tokens the rules may scan in all; a hostile statement (INTO or comparisons repeated without end) would
        # make the scans quadratic: past the budget the statement is not analysed (every argument masked).
        self.budget = _BUDGET_PER_TOKEN * len(self.sig) + 4096

    # --------------------------------------------------------------------------------------- helpers

    def spend(self, tokens: int) -> None:
        self.budget -= tokens
        if self.budget < 0:
            raise _OverBudget

    def value(self, s: int) -> str:
        return self.tokens[self.sig[s]][1]

    def ttype(self, s: int) -> object:
        return self.tokens[self.sig[s]][0]

    def upper(self, s: int) -> str:
        return self.value(s).upper()

    def is_name(self, s: int) -> bool:
        ttype = self.ttype(s)
        T = self.T
        return (ttype in T.Name and ttype is not T.Name.Placeholder) or ttype in T.String.Symbol or ttype in T.Keyword

    def is_value(self, s: int) -> bool:
        ttype = self.ttype(s)
        T = self.T
        return ttype is T.Name.Placeholder or ttype in T.Literal

    def column(self, s: int) -> str | None:
        """The column named by significant token ``s`` (not a function name nor a table qualifier)."""
        if not self.is_name(s):
            return None
        nxt = self.value(s + 1) if s + 1 < len(self.sig) else ""
        if nxt in ("(", "."):
            return None
        return self.value(s).strip('`"[]')

    def sensitive_column_in(self, start: int, end: int) -> bool:
        return any((name := self.column(s)) is not None and self.is_sensitive(name) for s in range(start, end))

    def mark_values(self, start: int, end: int) -> None:
        for s in range(start, end):
            if self.is_value(s):
                self.marked.add(self.sig[s])

    # ------------------------------------------------------------------------------------------ rules

    def run(self) -> SqlMask:
        count = len(self.sig)
        if count == 1 and self.is_name(0) and self.is_sensitive(self.value(0).strip('`"[]')):
            return SqlMask(self.statement, everything=True)  # callproc("set_password", args): every argument
        for s in range(count):
            word = self.upper(s)
            if word == "INTO" and self.ttype(s) in self.T.Keyword:
                self.spend(self.insert(s) - s)
            elif self.ttype(s) in self.T.Operator.Comparison or (word == "IN" and self.ttype(s) in self.T.Keyword):
                self.comparison(s)
            elif word == "BY" and any(self.upper(b) == "IDENTIFIED" for b in range(max(0, s - 3), s)):
                self.mark_values(s + 1, min(s + 2, count))  # IDENTIFIED [WITH plugin] BY 'x'
            elif word == "AS" and s + 1 < count and (alias := self.column(s + 1)) is not None:
                if self.is_sensitive(alias):
                    self.mark_expression_before(s)  # SELECT %s AS password, USING (SELECT :p AS api_key)
            elif (
                s + 1 < count
                and self.value(s + 1) == "("
                and self.is_name(s)
                and self.is_sensitive(self.value(s).strip('`"[]'))
            ):
                self.call_arguments(s + 1)  # SELECT set_password(%s, %s), CALL rotate_api_key(:k), PASSWORD('x')
            elif word == "BETWEEN" and s > 0 and (name := self.column(s - 1)) is not None and self.is_sensitive(name):
                self.mark_values(s + 1, min(s + 4, count))  # password BETWEEN x AND y
            elif (
                s + 1 < count
                and self.is_name(s)
                and self.ttype(s + 1) in self.T.Literal
                and self.is_sensitive(self.value(s).strip('`"[]'))
            ):
                self.mark_values(s + 1, s + 2)  # PASSWORD 'x'
        return self.result()

    def call_arguments(self, opening: int) -> None:
        """The values inside the parentheses opening at ``opening``."""
        count = len(self.sig)
        depth = self.depth[opening]
        end = opening + 1
        while end < count and not (self.value(end) == ")" and self.depth[end] == depth):
            end += 1
        self.spend(end - opening)
        self.mark_values(opening + 1, end)

    def mark_expression_before(self, at: int) -> None:
        """The values of the expression that ends before token ``at`` (back to a comma, a bracket or a keyword)."""
        depth = self.depth[at]
        start = at
        while start > 0:
            prev = start - 1
            if self.depth[prev] < depth or (self.depth[prev] == depth and self.value(prev) in (",", ";")):
                break
            if self.depth[prev] == depth and self.ttype(prev) in self.T.Keyword and self.upper(prev) != "NULL":
                break
            start = prev
        self.spend(at - start)
        self.mark_values(start, at)

    def insert(self, into: int) -> int:
        """``INTO table (columns) VALUES (row), (row)…``: values by column position; returns where it stopped."""
        count = len(self.sig)
        s = into + 1
        while s < count and self.value(s) != "(" and self.upper(s) not in ("VALUES", "SELECT", "DEFAULT"):
            s += 1
        if s >= count or self.value(s) != "(":
            return s
        base = self.depth[s]
        columns: list[str | None] = []
        current: str | None = None
        s += 1
        while s < count and not (self.value(s) == ")" and self.depth[s] == base):
            if self.value(s) == "," and self.depth[s] == base + 1:
                columns.append(current)
                current = None
            elif self.is_name(s):
                current = self.value(s).strip('`"[]')
            s += 1
        columns.append(current)
        s += 1
        if s < count and self.upper(s) == "SELECT":  # INSERT INTO t (a, b) SELECT x, y …: by position
            return self.insert_select(columns, s + 1)
        if s >= count or self.upper(s) not in ("VALUES", "VALUE"):
            return s
        s += 1
        while s < count and self.value(s) == "(":
            depth = self.depth[s]
            position = 0
            start = s + 1
            s += 1
            while s < count and not (self.value(s) == ")" and self.depth[s] == depth):
                if self.value(s) == "," and self.depth[s] == depth + 1:
                    self.insert_value(columns, position, start, s)
                    position += 1
                    start = s + 1
                s += 1
            self.insert_value(columns, position, start, s)
            s += 1
            if s < count and self.value(s) == ",":
                s += 1
        return s

    def insert_select(self, columns: list[str | None], s: int) -> int:
        count = len(self.sig)
        depth = self.depth[s] if s < count else 0
        position = 0
        start = s
        while s < count and self.depth[s] >= depth:
            at_top = self.depth[s] == depth
            if at_top and (self.value(s) in (",", ";") or self.upper(s) in _BOUNDARY_WORDS):
                self.insert_value(columns, position, start, s)
                if self.value(s) != ",":
                    return s
                position += 1
                start = s + 1
            s += 1
        self.insert_value(columns, position, start, s)
        return s

    def insert_value(self, columns: list[str | None], position: int, start: int, end: int) -> None:
        name = columns[position] if position < len(columns) else None
        if name is not None and self.is_sensitive(name):
            self.mark_values(start, end)

    def comparison(self, op: int) -> None:
        depth = self.depth[op]
        left = op
        while left > 0:
            prev = left - 1
            value = self.value(prev)
            if self.depth[prev] < depth or (self.depth[prev] == depth and value in (",", ";")):
                break
            if self.depth[prev] == depth and self.upper(prev) in _BOUNDARY_WORDS and self.ttype(prev) in self.T.Keyword:
                break
            left = prev
        count = len(self.sig)
        right = op + 1
        if right < count and self.upper(right) == "CASE" and self.sensitive_column_in(left, op):
            self.case_results(right)  # SET password = CASE WHEN … THEN %s ELSE … END
        while right < count:
            value = self.value(right)
            if self.depth[right] < depth or (self.depth[right] == depth and value in (",", ";")):
                break
            if (
                self.depth[right] == depth
                and self.upper(right) in _BOUNDARY_WORDS
                and self.ttype(right) in self.T.Keyword
            ):
                break
            right += 1
        self.spend(right - left)
        if self.sensitive_column_in(left, op):
            self.mark_values(op + 1, right)
        if self.sensitive_column_in(op + 1, right):
            self.mark_values(left, op)

    def case_results(self, case: int) -> None:
        """The values after THEN and ELSE of the CASE expression starting at ``case`` (not its WHEN conditions)."""
        count = len(self.sig)
        depth = self.depth[case]
        s = case + 1
        marking = False
        while s < count and not (self.depth[s] == depth and self.upper(s) == "END"):
            word = self.upper(s) if self.depth[s] == depth else ""
            if word in ("THEN", "ELSE"):
                marking = True
            elif word == "WHEN":
                marking = False
            elif marking and self.is_value(s):
                self.marked.add(self.sig[s])
            s += 1
        self.spend(s - case)

    def result(self) -> SqlMask:
        if not self.marked:
            return SqlMask(self.statement)
        T = self.T
        names: set[str] = set()
        positions: set[int] = set()
        pieces: list[str] = []
        literals = 0
        for index, (ttype, value) in enumerate(self.tokens):
            if index in self.marked:
                if ttype is T.Name.Placeholder:
                    if index in self.positional:
                        positions.add(self.positional[index])
                    elif value.startswith("%("):
                        names.add(value[2:-2])
                    else:
                        names.add(value[1:])
                else:
                    value = LITERAL_MASK
                    literals += 1
            pieces.append(value)
        statement = "".join(pieces) if literals else self.statement
        return SqlMask(statement, frozenset(names), frozenset(positions), literals)
