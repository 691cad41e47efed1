"""``gotrails-otel view``: reading and skipping lines, the terminal waterfall, filters, ``--json``, ``--html`` and
``--follow`` across rotation. The trails come from the real pipeline (see ``viewer_data``)."""

from __future__ import annotations

import collections
import gzip
import html
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.cells import cell_len

from gotrails_otel.cli import main
from gotrails_otel.view import classify
from gotrails_otel.view.source import Notice, Record, Skipped, follow_file
from gotrails_otel.view.terminal import make_console, render_trail

from .conftest import TrailHarness
from .viewer_data import HOSTILE, hostile_trail, junk_lines, make_trails

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def trails(harness: TrailHarness) -> list[dict[str, Any]]:
    return make_trails(harness)


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def as_lines(trails: list[dict[str, Any]]) -> list[bytes]:
    # Not orjson's compact form: --json must pass the lines on as they were, not re-serialised.
    return [json.dumps(t, indent=None, ensure_ascii=True).encode() for t in trails]


def view(*args: str, columns: int = 100, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    code = main(["view", *args])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ reading


def test_classify_tells_every_kind_of_line_apart(trails: list[dict[str, Any]]) -> None:
    assert classify(orjson.dumps(trails[0])) == trails[0]
    kinds = [classify(line) for line in junk_lines()]
    assert [k[0] for k in kinds if isinstance(k, tuple)] == [
        "not_json",
        "not_trail",
        "checkpoint",
        "other_version",
        "invalid",
        "not_trail",
    ]
    broken = dict(trails[0], internal_steps={"not": "a list"})
    assert classify(orjson.dumps(broken)) == ("invalid", "not a valid version 1 trail (malformed internal_steps)")
    assert classify(orjson.dumps(dict(trails[0], version=True)))[0] == "other_version"  # type: ignore[index]


def test_lines_that_are_not_trails_are_reported_and_skipped(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    lines = as_lines(trails)
    junk = junk_lines()
    mixed = [junk[0], lines[0], junk[1], b"", junk[2], lines[1], junk[3], junk[4], junk[5], lines[2]]
    path = write_lines(tmp_path / "trails.jsonl", mixed)
    code, out, err = view(str(path), monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert out.count("trace ") == 3
    for number, reason in [
        (1, "not JSON"),
        (3, "not a trail (a JSON list)"),
        (5, "a checkpoint record"),
        (7, "a trail of contract version 2; this viewer reads version 1"),
        (8, "not a valid version 1 trail (missing timestamp"),
        (9, "not a trail (no version field)"),
    ]:
        assert f"skipped {path}:{number}: {reason}" in err
    assert "skipped 6 lines: 1 checkpoint record, 1 malformed trail, 1 line that is not JSON, 2 JSON values" in err
    assert "Traceback" not in err


def test_gzip_rotated_files_and_several_files_in_order(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    lines = as_lines(trails)
    older = tmp_path / "trails.jsonl.2.gz"
    with gzip.open(older, "wb") as handle:
        handle.write(lines[0] + b"\n" + lines[1] + b"\n")
    newer = write_lines(tmp_path / "trails.jsonl", lines[2:])
    code, out, _ = view(str(older), str(newer), "--json", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert out.encode().splitlines() == lines


def test_stdin_is_read_when_no_file_is_given(tmp_path: Path, trails: list[dict[str, Any]]) -> None:
    data = b"\n".join([junk_lines()[0], *as_lines(trails)]) + b"\n"
    result = subprocess.run(
        [sys.executable, "-m", "gotrails_otel.cli", "view", "--errors", "--json"],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [as_lines(trails)[1]]
    assert b"skipped <stdin>:1: not JSON" in result.stderr


def test_missing_file_is_an_error_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    code, _, err = view(str(tmp_path / "nope.jsonl"), monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "no such file" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- terminal


def _rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.search(r"\d ms [·█]", line) or re.search(r" s [·█]", line)]


def test_terminal_shows_header_waterfall_facts_errors_and_metadata(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    path = write_lines(tmp_path / "trails.jsonl", as_lines(trails))
    code, out, _ = view(str(path), columns=160, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    payment, failed, health, grpc_call, kafka = out.split("\n\n")[:5]
    first = payment.splitlines()[0]
    for part in (trails[0]["timestamp"], "POST /v1/payments → 201", "ok", "complete", trails[0]["trace_id"]):
        assert part in first
    assert re.search(r"  \d+\.\d+ ms  ", first)
    names = [re.sub(r"\s+", " ", line.strip()).split(" ")[:2] for line in _rows(payment)]
    assert names == [
        ["request", "POST"],
        ["step", "ValidateRequest"],
        ["step", "CreatePaymentUsecase"],
        ["db", "postgres.payments.insert"],
        ["cache", "redis.set"],
        ["http", "POST"],
        ["kafka", "payment.created"],
        ["grpc", "UserService.GetUser"],
    ]
    rows = _rows(payment)
    indent = [len(line) - len(line.lstrip()) for line in rows]
    assert indent[0] < indent[1] == indent[2] < indent[3] == indent[7]  # integrations nested under their step
    assert "INSERT" in rows[3] and "SET" in rows[4] and "POST → 201" in rows[5]
    assert "produce [3]" in rows[6] and "OK" in rows[7]
    # Sealed trails are canonical JSON (keys sorted, as the integrity hash covers them): metadata comes sorted too.
    assert "metadata merchant_id=m-789  user_id=u-123" in payment
    assert "error" in failed.splitlines()[0] and "→ 502" in failed.splitlines()[0]
    assert "✗ midtrans.charge: gateway answered 503" in failed
    assert any("HTTP 503" in row for row in _rows(failed))
    assert "GET /health → 200" in health.splitlines()[0]
    assert "/users.v1.UserService/GetUser → OK" in grpc_call.splitlines()[0]
    assert "consume payment.created[2]" in kafka.splitlines()[0]


def _bar_span(row: str) -> tuple[int, int]:
    bar = row[row.rindex(" ") + 1 :]
    start = bar.index("█")
    return start, bar.rindex("█") + 1


@pytest.mark.parametrize("columns", [40, 60, 80, 120, 200])
def test_the_waterfall_fits_the_terminal_and_keeps_time_order(
    columns: int, tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    path = write_lines(tmp_path / "trails.jsonl", as_lines(trails[:3]))
    code, out, _ = view(str(path), columns=columns, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert max(cell_len(line) for line in out.splitlines()) <= columns
    payment = _rows(out.split("\n\n")[0])
    assert len(payment) == 8
    spans = [_bar_span(row) for row in payment]
    assert spans[0] == (0, len(payment[0]) - payment[0].rindex(" ") - 1)  # the request spans the whole axis
    starts = [start for start, _ in spans[1:]]
    assert starts == sorted(starts)  # rows come in start order and their bars move right with time
    bar_cells = len(payment[0]) - payment[0].rindex(" ") - 1
    assert bar_cells >= 10 and (columns < 100 or bar_cells >= columns // 3)
    health = _rows(out.split("\n\n")[2])
    assert _bar_span(health[0]) == (0, bar_cells)


def test_errors_are_red_and_hostile_values_cannot_drive_the_terminal(trails: list[dict[str, Any]]) -> None:
    stream = StringIO()
    console = make_console(stream, width=120, color=True)
    render_trail(hostile_trail(trails[1]), console)
    out = stream.getvalue()
    assert re.findall(r"\x1b[^\[]|\x1b\[[0-9;]*[^0-9;m]", out) == []  # only colour (SGR) sequences, from rich
    assert "\x07" not in out and "\u202e" not in out
    assert "Validate\\x1b[2J\\x1b]0;pwned\\x07" in re.sub(r"\x1b\[[0-9;]*m", "", out)
    red = re.compile(r"\x1b\[[0-9;]*31[0-9;]*m([^\x1b]*)")
    assert any("api.midtrans.com/v2/charge" in part for part in red.findall(out))  # the failed integration's row
    assert any(HOSTILE[:20] in part for part in red.findall(out))  # and the error lines


def test_markup_in_values_is_shown_as_text(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    trail = hostile_trail(trails[0])
    trail["internal_steps"][1]["name"] = "[bold red]Create[/]"
    path = write_lines(tmp_path / "trails.jsonl", [orjson.dumps(trail)])
    code, out, _ = view(str(path), columns=160, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "[bold red]Create[/]" in out


def test_odd_values_in_a_valid_trail_do_not_break_the_view(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    odd = orjson.loads(orjson.dumps(trails[0]))
    odd["internal_steps"][0].update(name={"a": 1}, start_offset_ms="soon", latency_ms=None, span_id=[1])
    odd["integrations"][0].update(request="raw text", response=[1, 2], error="boom", parent_span_id=None)
    odd["integrations"][1]["parent_span_id"] = odd["integrations"][1]["span_id"]  # its own parent
    odd["entry"] = {"kind": "carrier-pigeon"}
    odd["latency_ms"] = 1e308
    path = write_lines(tmp_path / "trails.jsonl", [orjson.dumps(odd)])
    code, out, err = view(str(path), columns=100, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert "Traceback" not in err and "could not show" not in err
    assert len(_rows(out)) == 8 and "boom" in out


# ----------------------------------------------------------------------------------------------- filters


def _selected(out: str) -> list[str]:
    return [orjson.loads(line)["trace_id"] for line in out.splitlines()]


def test_filters_select_trails(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    flow = dict(trails[3], trace_id="checkout-flow-0001", request_id="req-42")
    # Fixed latencies: only the health check is slow, however long the others took on a loaded machine.
    latencies = (3.0, 4.0, 40.0, 2.0, 1.0)
    all_trails = [dict(t, latency_ms=ms) for t, ms in zip([*trails[:3], flow, trails[4]], latencies, strict=True)]
    path = write_lines(tmp_path / "trails.jsonl", as_lines(all_trails))
    ids = [t["trace_id"] for t in all_trails]

    def select(*args: str) -> list[str]:
        code, out, _ = view(str(path), "--json", *args, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0
        return _selected(out)

    assert select() == ids
    assert select("--trace-id", "checkout-flow-0001") == [ids[3]]
    assert select("--trace-id", trails[3]["otel"]["trace_id"]) == [ids[3]]  # the OTel id of the same request
    assert select("--trace-id", ids[0], "--trace-id", ids[4]) == [ids[0], ids[4]]
    assert select("--request-id", "req-42") == [ids[3]]
    assert select("--errors") == [ids[1]]
    assert select("--slow", "25") == [ids[2]]
    assert select("--path", "/v1/*") == ids[:2]
    assert select("--path", "/users.v1.UserService/*") == [ids[3]]
    assert select("--path", "payment.*") == [ids[4]]
    assert select("--last", "2") == ids[3:]
    assert select("--path", "/v1/*", "--last", "1") == [ids[1]]
    assert select("--last", "0") == []
    assert select("--errors", "--slow", "25") == []


def test_json_passes_selected_lines_through_byte_for_byte(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    lines = as_lines(trails)
    path = write_lines(tmp_path / "trails.jsonl", [lines[0], junk_lines()[2], lines[1]])
    code, out, _ = view(str(path), "--json", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and out.encode() == lines[0] + b"\n" + lines[1] + b"\n"


def test_bad_arguments_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    path = write_lines(tmp_path / "trails.jsonl", [])
    assert view(str(path), "--follow", "--html", "x.html", monkeypatch=monkeypatch, capsys=capsys)[0] == 2
    assert view("--follow", monkeypatch=monkeypatch, capsys=capsys)[0] == 2
    for bad in (["--last", "-1"], ["--slow", "soon"], ["--json", "--html", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["view", str(path), *bad])
        assert exit_info.value.code == 2


# -------------------------------------------------------------------------------------------------- html


_PAGE_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h4", "input", "span", "button"),
    *("main", "section", "div", "details", "summary", "pre", "p", "script"),
}


class _Tags(HTMLParser):
    """Counts the elements of a page and collects anything that would load a resource."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: collections.Counter[str] = collections.Counter()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data") or "url(" in (value or ""):
                self.urls.append(f"{tag} {name}={value}")

    def handle_data(self, data: str) -> None:
        if self._in_style and ("url(" in data or "@import" in data):
            self.urls.append("style: " + data[:80])

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def test_html_page_is_self_contained_and_escapes_every_value(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    path = write_lines(tmp_path / "trails.jsonl", [*as_lines(trails), orjson.dumps(hostile_trail(trails[0]))])
    out = tmp_path / "report" / "trails.html"
    code, _, err = view(str(path), "--html", str(out), monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and f"wrote 6 trails to {out}" in err
    page = out.read_text("utf-8")
    assert page.count('<section class="trail"') == 6
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.tags["script"] == 1 and parsed.tags["style"] == 1
    assert set(parsed.tags) <= _PAGE_TAGS, set(parsed.tags) - _PAGE_TAGS
    assert parsed.urls == []  # nothing to load: no src, href, url() or @import anywhere
    assert "Content-Security-Policy" in page and "default-src 'none'" in html.unescape(page)
    assert HOSTILE not in page and html.escape(HOSTILE, quote=True) in page


def test_html_to_stdout_and_an_empty_selection(
    tmp_path: Path, trails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    path = write_lines(tmp_path / "trails.jsonl", as_lines(trails))
    code, out, err = view(str(path), "--html", "-", "--trace-id", "nothing", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "No trails matched." in out and "no trail matched" in err


# ------------------------------------------------------------------------------------------------ follow


class Writer:
    """Appends lines to a file as a trail exporter does, and rotates it as logrotate does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def reopen(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        os.close(self.fd)


def _collect(path: Path, stop: threading.Event, into: list[Any]) -> threading.Thread:
    def run() -> None:
        into.extend(follow_file(str(path), poll_s=0.02, drain_s=0.3, stop=stop))  # appended one by one

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_follow_survives_move_truncate_and_recreate(tmp_path: Path, trails: list[dict[str, Any]]) -> None:
    lines = as_lines(trails)
    path = tmp_path / "trails.jsonl"
    writer = Writer(path)
    writer.write(lines[0] + b"\n")
    got: list[Any] = []
    stop = threading.Event()
    thread = _collect(path, stop, got)

    def records() -> list[bytes]:
        return [item.raw for item in got if isinstance(item, Record)]

    try:
        _wait_for(lambda: records() == lines[:1])
        half = len(lines[1]) // 2
        writer.write(lines[1][:half])  # a line written in two parts is read once, whole
        time.sleep(0.1)
        writer.write(lines[1][half:] + b"\n" + junk_lines()[2] + b"\n")
        _wait_for(lambda: records() == lines[:2])
        # moved away (logrotate's create): one more line reaches the old file before the writer reopens
        os.rename(path, tmp_path / "trails.jsonl.1")
        writer.write(lines[2] + b"\n")
        writer.reopen()
        writer.write(lines[3] + b"\n")
        _wait_for(lambda: records() == lines[:4])
        # truncated in place (copytruncate)
        os.truncate(path, 0)
        time.sleep(0.1)
        writer.write(lines[4] + b"\n")
        _wait_for(lambda: records() == [*lines[:4], lines[4]])
        # deleted and created anew
        os.unlink(path)
        time.sleep(0.1)
        writer.reopen()
        writer.write(lines[0] + b"\n")
        _wait_for(lambda: records() == [*lines, lines[0]])
    finally:
        stop.set()
        thread.join(timeout=10)
        writer.close()
    assert not thread.is_alive()
    notices = [item.message for item in got if isinstance(item, Notice)]
    assert sum("rotated or replaced" in n for n in notices) == 2
    assert sum("truncated" in n for n in notices) == 1
    assert [item.kind for item in got if isinstance(item, Skipped)] == ["checkpoint"]


def test_follow_waits_for_a_file_that_does_not_exist_yet(tmp_path: Path, trails: list[dict[str, Any]]) -> None:
    path = tmp_path / "later.jsonl"
    got: list[Any] = []
    stop = threading.Event()
    thread = _collect(path, stop, got)
    try:
        _wait_for(lambda: any(isinstance(item, Notice) for item in got))
        write_lines(path, as_lines(trails[:1]))
        _wait_for(lambda: any(isinstance(item, Record) for item in got))
    finally:
        stop.set()
        thread.join(timeout=10)
    assert "waiting for" in got[0].message


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, COLUMNS="120")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gotrails_otel.cli", "view", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_follow_command_shows_the_last_trails_then_new_ones_until_interrupted(
    tmp_path: Path, trails: list[dict[str, Any]], follower: Any
) -> None:
    lines = as_lines(trails)
    path = write_lines(tmp_path / "trails.jsonl", lines[:3])
    proc = follower(str(path), "--follow", "--last", "1", "--json")
    assert proc.stdout is not None
    assert proc.stdout.readline().rstrip(b"\n") == lines[2]
    os.rename(path, tmp_path / "trails.jsonl.1")
    write_lines(path, [junk_lines()[0], lines[3]])
    assert proc.stdout.readline().rstrip(b"\n") == lines[3]
    with path.open("ab") as handle:
        handle.write(lines[4] + b"\n")
    assert proc.stdout.readline().rstrip(b"\n") == lines[4]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == b""
    assert b"rotated or replaced" in err and b"skipped" in err and b"Traceback" not in err
