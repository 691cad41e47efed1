"""Trails in the terminal with ``rich``: a header line, then a waterfall on a common time axis.

Every value from a trail is shown as plain text (never as rich markup) with control characters made visible, so a
hostile value cannot restyle, move the cursor or rewrite the terminal's title.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.text import Text

from . import model

__all__ = ["clean", "header", "make_console", "render_trail"]

STYLES = {
    "request": "bold",
    "step": "cyan",
    "http": "blue",
    "database": "magenta",
    "cache": "yellow",
    "kafka": "green",
    "grpc": "bright_blue",
    "custom": "white",
}
LABELS = {"database": "db"}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
LAT_WIDTH = 9
LABEL_WIDTH = 8


def clean(value: str) -> str:
    """``value`` with control characters (C0, DEL, C1, bidirectional overrides) shown as escapes."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), value)


def _text(value: Any) -> str:
    return clean(model.text(value))


def bar_width(width: int) -> int:
    """Cells for the time axis: two fifths of what the latency column leaves, at least 10 and at most 100."""
    return max(10, min(100, (width - LAT_WIDTH - 2) * 2 // 5))


def render_trail(trail: Mapping[str, Any], console: Console) -> None:
    """Print one trail: its header line, the waterfall, its errors, metadata and drops."""
    width = max(console.width, 40)
    for line in header(trail, width):
        console.print(line, no_wrap=True, crop=True)
    table = model.rows(trail)
    total = model.axis_ms(trail, table)
    bars = bar_width(width)
    left = width - LAT_WIDTH - bars - 2

    axis = Text(" " * (left + 1 + LAT_WIDTH + 1))
    axis.append("0" + model.format_ms(total).rjust(bars - 1), style="dim")
    console.print(axis, no_wrap=True, crop=True)
    for row in table:
        console.print(_row(row, total, left, bars), no_wrap=True, crop=True)

    for error in model.errors(trail):
        console.print(Text("  ✗ " + clean(error), style="red"), overflow="fold")
    metadata = trail.get("metadata")
    if isinstance(metadata, Mapping) and metadata:
        out = Text()
        out.append("  metadata ", style="dim")
        out.append("  ".join(f"{clean(str(k))}={_text(v)}" for k, v in metadata.items()))
        console.print(out, overflow="fold")
    dropped = trail.get("dropped")
    if isinstance(dropped, Mapping) and dropped:
        out = Text("  dropped  ", style="yellow")
        out.append("  ".join(f"{clean(str(k))}={_text(v)}" for k, v in dropped.items()), style="yellow")
        console.print(out, overflow="fold")
    console.print()


def header(trail: Mapping[str, Any], width: int = 10_000) -> list[Text]:
    """Time, entry, status, latency, completeness, service and ids, packed into lines of ``width`` cells; a line
    breaks between facts, never inside one."""
    parts = model.header_parts(trail)
    complete = parts["completeness"] == "complete"
    chunks = [
        Text(clean(parts["time"]), style="dim"),
        Text(clean(parts["entry"]), style="bold"),
        Text(parts["status"], style="bold green" if parts["status"] == "ok" else "bold red"),
        Text(parts["latency"]),
        Text(clean(parts["completeness"]), style="dim" if complete else "yellow"),
    ]
    if parts["service"]:
        chunks.append(Text(clean(parts["service"]), style="cyan"))
    chunks.append(Text().append("trace ", style="dim").append(clean(parts["trace_id"])))
    if parts["request_id"]:
        chunks.append(Text().append("request ", style="dim").append(clean(parts["request_id"])))
    lines: list[Text] = []
    line = Text()
    for chunk in chunks:
        if chunk.cell_len > width:
            chunk.truncate(width, overflow="ellipsis")
        if line.cell_len and line.cell_len + 2 + chunk.cell_len > width:
            lines.append(line)
            line = Text("  ")
        elif line.cell_len:
            line.append("  ")
        line.append_text(chunk)
    lines.append(line)
    return lines


def _row(row: model.Row, total: float, left: int, bars: int) -> Text:
    style = "red" if row.failed else STYLES.get(row.kind, "white")
    label = LABELS.get(row.kind, row.kind)
    out = Text(" " * (1 + 2 * min(row.depth, 8)))
    out.append(label.ljust(LABEL_WIDTH), style=f"{style} dim")
    out.append(clean(row.name), style=style)
    detail = row.facts
    if row.error:
        detail = f"{detail}  {row.error}" if detail else row.error
    if detail:
        out.append("  ")
        out.append(clean(detail), style="red" if row.error else "dim")
    out.truncate(left, overflow="ellipsis", pad=True)
    out.append(" ")
    out.append(model.format_ms(row.latency_ms).rjust(LAT_WIDTH))
    out.append(" ")
    out.append_text(_bar(row, total, bars, style))
    return out


def _bar(row: model.Row, total: float, cells: int, style: str) -> Text:
    start, length = model.span(row, total)
    first = min(int(start * cells), cells - 1)
    last = max(first + 1, min(cells, math.ceil((start + length) * cells)))
    out = Text()
    out.append("·" * first, style="dim")
    out.append("█" * (last - first), style=style)
    out.append("·" * (cells - last), style="dim")
    return out


def make_console(stream: Any, width: int | None = None, color: bool | None = None) -> Console:
    """A console for trails: no markup, no emoji or highlighting of values; width and colour from the terminal."""
    return Console(
        file=stream,
        width=width,
        markup=False,
        emoji=False,
        highlight=False,
        no_color=False if color is None else not color,
        force_terminal=color,
    )
