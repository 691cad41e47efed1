"""One self-contained HTML page of trails: the waterfall of each trail, expandable payloads, a search box.

The page loads nothing (no network, no external assets). Every trail value is HTML-escaped where it is written, and
a Content-Security-Policy allows only the page's own script (by its hash) and inline styles, so even a value that
slipped past escaping could not run script or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from . import model

__all__ = ["render_page"]

_KIND_CLASS = {kind: f"k-{kind}" for kind in model.KINDS}

SCRIPT = """
(function () {
  "use strict";
  var input = document.getElementById("search");
  var count = document.getElementById("count");
  var trails = Array.prototype.slice.call(document.querySelectorAll("section.trail"));
  var texts = trails.map(function (t) { return t.textContent.toLowerCase(); });
  function apply() {
    var query = input.value.trim().toLowerCase();
    var shown = 0;
    trails.forEach(function (trail, i) {
      var hit = query === "" || texts[i].indexOf(query) !== -1;
      trail.hidden = !hit;
      if (hit) { shown += 1; }
    });
    count.textContent = shown + " of " + trails.length + (trails.length === 1 ? " trail" : " trails");
  }
  input.addEventListener("input", apply);
  document.getElementById("expand").addEventListener("click", function () {
    var open = this.getAttribute("aria-pressed") !== "true";
    this.setAttribute("aria-pressed", open ? "true" : "false");
    this.textContent = open ? "Collapse all" : "Expand all";
    document.querySelectorAll("section.trail:not([hidden]) details.row").forEach(function (d) { d.open = open; });
  });
  apply();
})();
"""

STYLE = """
:root { color-scheme: light dark; --bg: #fff; --fg: #1d232b; --dim: #6a737d; --line: #e3e6ea; --card: #f7f8fa;
  --step: #0f8fa3; --http: #2f6fdd; --database: #9b3fc2; --cache: #c98a00; --kafka: #1f9d55; --grpc: #3b4cc0;
  --custom: #7a828c; --request: #39424e; --error: #d1242f; }
@media (prefers-color-scheme: dark) { :root { --bg: #0f1318; --fg: #e6e9ed; --dim: #8b949e; --line: #2a313a;
  --card: #161b22; --request: #a9b4c0; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, sans-serif; }
header.page { position: sticky; top: 0; z-index: 1; display: flex; gap: 1rem; align-items: center; flex-wrap: wrap;
  padding: .75rem 1.25rem; background: var(--card); border-bottom: 1px solid var(--line); }
header.page h1 { font-size: 1.05rem; margin: 0; }
#search { flex: 1 1 18rem; max-width: 40rem; padding: .4rem .6rem; font: inherit; border: 1px solid var(--line);
  border-radius: 6px; background: var(--bg); color: var(--fg); }
#expand { font: inherit; padding: .35rem .7rem; border: 1px solid var(--line); border-radius: 6px;
  background: var(--bg); color: var(--fg); cursor: pointer; }
.dim, #count, .skipped { color: var(--dim); }
main { padding: .5rem 1.25rem 2rem; }
section.trail { border: 1px solid var(--line); border-radius: 8px; margin: 1rem 0; overflow: hidden; }
section.trail > h2 { margin: 0; padding: .55rem .8rem; font-size: .95rem; font-weight: 500; background: var(--card);
  display: flex; flex-wrap: wrap; gap: .35rem 1rem; border-bottom: 1px solid var(--line); }
.entry { font-weight: 650; }
.badge { border-radius: 4px; padding: 0 .4rem; font-size: .8rem; font-weight: 650; color: #fff; }
.badge.ok { background: var(--kafka); } .badge.error { background: var(--error); }
.incomplete { color: var(--cache); font-weight: 600; }
.mono, pre, .ids { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.grid { display: grid; grid-template-columns: minmax(0, 5fr) 6.5rem minmax(8rem, 6fr); gap: .75rem;
  align-items: center; padding: .18rem .8rem; }
.axis { color: var(--dim); font-size: .8rem; border-bottom: 1px dashed var(--line); }
.axis .ticks { display: flex; justify-content: space-between; }
details.row > summary { list-style: none; cursor: pointer; }
details.row > summary::-webkit-details-marker { display: none; }
details.row > summary:hover { background: var(--card); }
.label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.label::before { content: "\\25B8"; display: inline-block; width: 1em; color: var(--dim); }
details[open] > summary .label::before { content: "\\25BE"; }
.kind { display: inline-block; min-width: 4.6rem; font-size: .78rem; color: var(--dim); }
.facts { color: var(--dim); margin-left: .5rem; }
.row.failed .name, .row.failed .facts { color: var(--error); }
.latency { text-align: right; font-variant-numeric: tabular-nums; }
.track { position: relative; height: 12px; background: var(--card); border-radius: 3px; }
.bar { position: absolute; top: 0; bottom: 0; min-width: 2px; border-radius: 3px; background: var(--custom); }
.k-request .bar { background: var(--request); } .k-step .bar { background: var(--step); }
.k-http .bar { background: var(--http); } .k-database .bar { background: var(--database); }
.k-cache .bar { background: var(--cache); } .k-kafka .bar { background: var(--kafka); }
.k-grpc .bar { background: var(--grpc); } .row.failed .bar { background: var(--error); }
.payload { padding: .3rem .8rem .7rem 2.2rem; border-bottom: 1px solid var(--line); }
.payload h4 { margin: .5rem 0 .2rem; font-size: .8rem; color: var(--dim); text-transform: uppercase; }
pre { margin: 0; padding: .5rem .6rem; background: var(--card); border-radius: 6px; overflow: auto;
  max-height: 28rem; white-space: pre-wrap; word-break: break-word; }
.extras { padding: .4rem .8rem .7rem; display: grid; gap: .25rem; }
.extras .errors { color: var(--error); }
details.raw { padding: 0 .8rem .7rem; } details.raw > summary { cursor: pointer; color: var(--dim); }
"""


def _esc(value: Any) -> str:
    return escape(model.text(value), quote=True)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.4f}%"


def _pretty(value: Any, indent: str = "") -> str:
    """JSON for people: small arrays and objects on one line, larger ones one item per line."""
    try:
        compact = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        return model.text(value)
    if len(compact) + len(indent) <= 88 or not isinstance(value, (dict, list)) or not value:
        return compact
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    return "[\n" + ",\n".join(f"{inner}{_pretty(v, inner)}" for v in value) + f"\n{indent}]"


def _row(row: model.Row, total: float, index: int) -> str:
    start, length = model.span(row, total)
    classes = ["row", _KIND_CLASS.get(row.kind, "k-custom")]
    if row.failed:
        classes.append("failed")
    detail = row.facts
    if row.error:
        detail = f"{detail}  {row.error}" if detail else row.error
    label = "db" if row.kind == "database" else row.kind
    payload = "".join(
        f'<h4>{escape(part)}</h4><pre class="body" data-part="{escape(part)}">{escape(_pretty(value))}</pre>'
        for part, value in row.payloads.items()
    )
    if not payload:
        payload = '<p class="dim">Nothing recorded besides timing.</p>'
    return (
        f'<details class="{" ".join(classes)}" data-index="{index}" data-start-ms="{row.start_ms:.3f}" '
        f'data-latency-ms="{row.latency_ms:.3f}">'
        f'<summary class="grid"><span class="label" style="padding-left:{row.depth * 1.1:.1f}em">'
        f'<span class="kind">{escape(label)}</span><span class="name">{escape(row.name)}</span>'
        f'<span class="facts">{escape(detail)}</span></span>'
        f'<span class="latency">{escape(model.format_ms(row.latency_ms))}</span>'
        f'<span class="track"><span class="bar" style="left:{_pct(start)};width:{_pct(length)}"></span></span>'
        f'</summary><div class="payload">{payload}</div></details>'
    )


def _trail(trail: Mapping[str, Any], where: str) -> str:
    parts = model.header_parts(trail)
    table = model.rows(trail)
    total = model.axis_ms(trail, table)
    status = parts["status"]
    complete = parts["completeness"] == "complete"
    ids = f'trace <span class="mono">{escape(parts["trace_id"])}</span>'
    if parts["request_id"]:
        ids += f' · request <span class="mono">{escape(parts["request_id"])}</span>'
    heading = (
        f'<h2><span class="dim mono">{escape(parts["time"])}</span>'
        f'<span class="entry">{escape(parts["entry"])}</span>'
        f'<span class="badge {status}">{status}</span>'
        f"<span>{escape(parts['latency'])}</span>"
        f'<span class="dim">{escape(parts["service"])}'
        + (f" · {escape(parts['environment'])}" if parts["environment"] else "")
        + f'</span><span class="ids dim">{ids}</span>'
        f'<span class="{"dim" if complete else "incomplete"}">{escape(parts["completeness"])}</span></h2>'
    )
    ticks = "".join(f"<span>{escape(model.format_ms(total * i / 4))}</span>" for i in range(5))
    axis = f'<div class="grid axis"><span></span><span></span><span class="ticks">{ticks}</span></div>'
    body = "".join(_row(row, total, index) for index, row in enumerate(table))
    extras = [f'<div class="errors">✗ {escape(line)}</div>' for line in model.errors(trail)]
    metadata = trail.get("metadata")
    if isinstance(metadata, Mapping) and metadata:
        items = " · ".join(f"{_esc(k)}={_esc(v)}" for k, v in metadata.items())
        extras.append(f'<div class="metadata"><span class="dim">metadata</span> {items}</div>')
    dropped = trail.get("dropped")
    if isinstance(dropped, Mapping) and dropped:
        items = " · ".join(f"{_esc(k)}={_esc(v)}" for k, v in dropped.items())
        extras.append(f'<div class="incomplete">dropped {items}</div>')
    extra = f'<div class="extras">{"".join(extras)}</div>' if extras else ""
    raw = (
        f'<details class="raw"><summary>trail JSON ({escape(where)})</summary>'
        f"<pre>{escape(_pretty(dict(trail)))}</pre></details>"
    )
    return f'<section class="trail" data-status="{status}">{heading}{axis}{body}{extra}{raw}</section>'


def render_page(trails: Iterable[tuple[Mapping[str, Any], str]], *, title: str, skipped: str = "") -> str:
    """The page for ``(trail, where)`` pairs; ``skipped`` is a line about the input lines that were skipped."""
    sections = [_trail(trail, where) for trail, where in trails]
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        "img-src 'none'; base-uri 'none'; form-action 'none'"
    )
    empty = '<p class="dim">No trails matched.</p>' if not sections else ""
    note = f'<span class="skipped">{escape(skipped)}</span>' if skipped else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(policy)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body><header class="page"><h1>{escape(title)}</h1>'
        '<input id="search" type="search" placeholder="Search: trace id, path, name, body text…" '
        'aria-label="Search trails" autocomplete="off">'
        '<span id="count"></span><button id="expand" type="button" aria-pressed="false">Expand all</button>'
        f"{note}</header><main>{empty}{''.join(sections)}</main>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
