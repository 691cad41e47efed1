"""``gotrails-otel view``: show trails from JSON lines in the terminal, pass them on as JSON, or write an HTML page."""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .model import Filters
from .source import Notice, Record, Skipped, follow_file, open_file, read_stream

__all__ = ["add_arguments", "run"]

MAX_REPORTED = 10
"""Skipped lines reported one by one per reason; the rest are counted in the closing summary."""
_KIND_NAMES = {
    "not_json": ("line that is not JSON", "lines that are not JSON"),
    "not_trail": ("JSON value that is not a trail", "JSON values that are not trails"),
    "checkpoint": ("checkpoint record", "checkpoint records"),
    "other_version": ("trail of another contract version", "trails of other contract versions"),
    "invalid": ("malformed trail", "malformed trails"),
    "unrenderable": ("trail that could not be shown", "trails that could not be shown"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``view`` command's arguments."""
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="JSON lines files, oldest first (rotated and gzip-compressed files too); '-' or none reads stdin",
    )
    parser.add_argument("--trace-id", action="append", default=[], metavar="ID", help="only this trace (repeatable)")
    parser.add_argument("--request-id", action="append", default=[], metavar="ID", help="only this request id")
    parser.add_argument("--errors", action="store_true", help="only trails that failed or recorded an error")
    parser.add_argument("--slow", type=_non_negative, metavar="MS", help="only trails that took at least MS ms")
    parser.add_argument(
        "--path", metavar="GLOB", help="only requests whose path (gRPC method, Kafka topic) matches GLOB"
    )
    parser.add_argument("--last", type=_count, metavar="N", help="only the last N selected trails")
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep reading FILE as it grows (survives its rotation)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="write the selected trails as they were read (JSON lines)")
    output.add_argument("--html", metavar="OUT", help="write one self-contained HTML page of the selected trails")


def _non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value!r}")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value!r}")
    return number


class Reporter:
    """Reports skipped lines on stderr: the first few of each reason one by one, then a closing count."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.counts: collections.Counter[str] = collections.Counter()
        self.shown = 0

    def skip(self, item: Skipped) -> None:
        self.counts[item.kind] += 1
        if self.counts[item.kind] <= MAX_REPORTED:
            self.say(f"skipped {item.where}: {item.reason}")

    def say(self, message: str) -> None:
        self.stream.write(f"gotrails-otel view: {message}\n")
        self.stream.flush()

    def summary(self) -> str:
        if not self.counts:
            return ""
        total = sum(self.counts.values())
        parts = [f"{n} {_KIND_NAMES[k][0 if n == 1 else 1]}" for k, n in sorted(self.counts.items())]
        return f"skipped {total} line{'s' if total != 1 else ''}: {', '.join(parts)}"


def run(args: argparse.Namespace, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run ``gotrails-otel view`` with parsed ``args``; returns the exit status."""
    out = stdout if stdout is not None else sys.stdout
    reporter = Reporter(stderr if stderr is not None else sys.stderr)
    files = [f for f in args.files] or ["-"]
    if args.follow and (len(files) != 1 or files[0] == "-"):
        reporter.say("--follow needs exactly one FILE")
        return 2
    if args.follow and args.html:
        reporter.say("--follow cannot write an HTML page; use --html without --follow")
        return 2
    for name in files:
        if name != "-" and not args.follow and not os.path.isfile(name):
            reporter.say(f"cannot read {name}: no such file")
            return 2
    filters = Filters(
        trace_ids=tuple(args.trace_id),
        request_ids=tuple(args.request_id),
        errors=args.errors,
        slow_ms=args.slow,
        path=args.path,
    )
    try:
        sink = _sink(args, out, reporter)
    except ImportError as exc:
        reporter.say(f"{exc}; install it with: pip install 'gotrails-otel[view]' (or use --json or --html)")
        return 2
    try:
        shown = _pump(args, files, filters, sink, reporter)
    except KeyboardInterrupt:
        shown = sink.count
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from complaining at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    except OSError as exc:
        reporter.say(f"cannot read: {exc}")
        return 2
    sink.close()
    summary = reporter.summary()
    if summary:
        reporter.say(summary)
    if shown == 0:
        reporter.say("no trail matched" if not args.follow else "no trail arrived")
    return 0


def _pump(args: argparse.Namespace, files: list[str], filters: Filters, sink: _Sink, reporter: Reporter) -> int:
    last: collections.deque[Record] | None = collections.deque(maxlen=args.last) if args.last is not None else None

    def take(item: Record | Skipped | Notice) -> None:
        if isinstance(item, Skipped):
            reporter.skip(item)
        elif isinstance(item, Notice):
            reporter.say(item.message)
        elif filters.matches(item.trail):
            if last is not None:
                last.append(item)
            else:
                sink.emit(item)

    def release() -> None:
        nonlocal last
        if last is not None:
            for record in last:
                sink.emit(record)
            last = None  # from now on (following), every new trail is shown as it arrives

    if args.follow:
        for item in follow_file(files[0], on_caught_up=release):
            take(item)
        return sink.count
    for name in files:
        for item in _read(name):
            take(item)
    release()
    return sink.count


def _read(name: str) -> Iterator[Record | Skipped]:
    if name == "-":
        yield from read_stream(sys.stdin.buffer, "<stdin>")
        return
    with open_file(name) as handle:
        yield from read_stream(handle, name)


class _Sink:
    count = 0

    def emit(self, record: Record) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output."""


class _TerminalSink(_Sink):
    def __init__(self, out: IO[str], reporter: Reporter) -> None:
        from .terminal import make_console, render_trail

        self._console = make_console(out)
        self._render: Callable[..., None] = render_trail
        self._reporter = reporter

    def emit(self, record: Record) -> None:
        try:
            self._render(record.trail, self._console)
        except Exception as exc:  # a trail this viewer cannot draw is reported, never fatal for the others
            self._reporter.counts["unrenderable"] += 1
            self._reporter.say(f"could not show the trail at {record.where}: {type(exc).__name__}: {exc}")
            return
        self.count += 1


class _JsonSink(_Sink):
    def __init__(self, out: IO[str]) -> None:
        self._out = out.buffer if hasattr(out, "buffer") else None
        self._text = out

    def emit(self, record: Record) -> None:
        if self._out is not None:
            self._out.write(record.raw + b"\n")
            self._out.flush()
        else:
            self._text.write(record.raw.decode("utf-8", "replace") + "\n")
            self._text.flush()
        self.count += 1


class _HtmlSink(_Sink):
    def __init__(self, target: str, sources: list[str], reporter: Reporter) -> None:
        self._target = target
        self._sources = sources
        self._reporter = reporter
        self._trails: list[tuple[dict[str, Any], str]] = []

    def emit(self, record: Record) -> None:
        self._trails.append((record.trail, record.where))
        self.count += 1

    def close(self) -> None:
        from .html import render_page

        names = ", ".join("stdin" if s == "-" else os.path.basename(s) for s in self._sources)
        title = f"gotrails — {self.count} trail{'s' if self.count != 1 else ''} from {names}"
        page = render_page(self._trails, title=title, skipped=self._reporter.summary())
        if self._target == "-":
            sys.stdout.write(page)
            return
        target = Path(self._target)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".gotrails-view-", suffix=".html", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(page)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._reporter.say(f"wrote {self.count} trail{'s' if self.count != 1 else ''} to {target}")


def _sink(args: argparse.Namespace, out: IO[str], reporter: Reporter) -> _Sink:
    if args.json:
        return _JsonSink(out)
    if args.html:
        return _HtmlSink(args.html, args.files or ["-"], reporter)
    try:
        return _TerminalSink(out, reporter)
    except ImportError as exc:
        raise ImportError("terminal output needs the 'rich' package") from exc
