"""Reading trails from JSON lines: files (also gzip-compressed rotated files), standard input, and a growing file
followed across rotation. Every line is classified: a version-1 trail is a :class:`Record`; anything else (a line
that is not JSON, a JSON value that is not a trail, a checkpoint record, a trail of another contract version) is a
:class:`Skipped` with the reason, so callers report it and go on.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import orjson

from ..integrity import is_checkpoint
from ..schema import trail_schema

__all__ = ["Record", "Skipped", "classify", "follow_file", "read_stream", "records_from_lines"]

VERSION = 1
"""The version of the trail document this viewer reads."""


@dataclass(frozen=True)
class Record:
    """One trail read from ``source`` at ``line`` (1-based); ``raw`` is the line as read, without its newline."""

    trail: dict[str, Any]
    raw: bytes
    source: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Skipped:
    """A line that is not a trail this viewer reads, and why (``kind`` groups the reasons for a summary)."""

    source: str
    line: int
    kind: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Notice:
    """Something the reader wants the user to know (a file was rotated, truncated, is not there yet)."""

    message: str


Item = Record | Skipped | Notice


def _required_keys() -> tuple[str, ...]:
    return tuple(trail_schema()["required"])


_REQUIRED = _required_keys()
_LISTS = ("internal_steps", "integrations", "errors")
_OBJECTS = ("request", "response", "metadata", "entry", "otel", "dropped")


def classify(raw: bytes) -> dict[str, Any] | tuple[str, str]:
    """The trail in ``raw`` (one JSON line), or ``(kind, reason)`` saying why it is not one."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return "not_json", f"not JSON ({str(exc).split(':')[0]})"
    if not isinstance(value, dict):
        return "not_trail", f"not a trail (a JSON {type(value).__name__.replace('dict', 'object')})"
    if is_checkpoint(value):  # a hash-chain checkpoint written between trails
        return "checkpoint", "a checkpoint record"
    version = value.get("version")
    if "version" not in value:
        return "not_trail", "not a trail (no version field)"
    if type(version) is not int or version != VERSION:
        shown = orjson.dumps(version).decode()[:40]
        return "other_version", f"a trail of contract version {shown}; this viewer reads version {VERSION}"
    missing = [key for key in _REQUIRED if key not in value]
    if missing:
        return "invalid", f"not a valid version {VERSION} trail (missing {', '.join(missing)})"
    wrong = [key for key in _LISTS if not _list_of_objects(value[key])]
    wrong += [key for key in _OBJECTS if not isinstance(value[key], dict)]
    if not isinstance(value["latency_ms"], (int, float)) or isinstance(value["latency_ms"], bool):
        wrong.append("latency_ms")
    if wrong:
        return "invalid", f"not a valid version {VERSION} trail (malformed {', '.join(wrong)})"
    return value


def _list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def records_from_lines(lines: Iterable[tuple[int, bytes]], source: str) -> Iterator[Record | Skipped]:
    """Classify numbered lines; blank lines are ignored."""
    for number, line in lines:
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            continue
        found = classify(raw)
        if isinstance(found, dict):
            yield Record(found, raw, source, number)
        else:
            yield Skipped(source, number, *found)


def read_stream(stream: IO[bytes], source: str) -> Iterator[Record | Skipped]:
    """Every line of ``stream`` (read line by line, so a pipe is shown as it arrives)."""
    return records_from_lines(enumerate(iter(stream.readline, b""), start=1), source)


def open_file(path: str) -> IO[bytes]:
    """``path`` opened for reading bytes; gzip-compressed files (rotated and compressed) are decompressed."""
    handle = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if handle.read(2) == b"\x1f\x8b":
        handle.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile reads like IO[bytes]
    handle.seek(0)
    return handle


class _Open:
    """One file being read: its descriptor, identity, unfinished last line and line count."""

    def __init__(self, path: str, handle: IO[bytes], generation: int) -> None:
        self.source = path if generation <= 1 else f"{path} (#{generation})"
        self.handle = handle
        stat = os.fstat(handle.fileno())
        self.identity = (stat.st_dev, stat.st_ino)
        self.pending = b""
        self.line = 0

    def read_lines(self) -> list[tuple[int, bytes]]:
        """The complete lines appended since the last call."""
        out: list[tuple[int, bytes]] = []
        while True:
            chunk = self.handle.read(1 << 16)
            if not chunk:
                return out
            data = self.pending + chunk
            *complete, self.pending = data.split(b"\n")
            for line in complete:
                self.line += 1
                out.append((self.line, line))

    def rest(self) -> list[tuple[int, bytes]]:
        """The unfinished last line, when the file is left for good."""
        if not self.pending:
            return []
        self.line += 1
        line, self.pending = self.pending, b""
        return [(self.line, line)]


def follow_file(
    path: str,
    *,
    poll_s: float = 0.2,
    drain_s: float = 1.0,
    stop: threading.Event | None = None,
    on_caught_up: Callable[[], None] | None = None,
) -> Iterator[Item]:
    """Read ``path`` from its start, then keep yielding what is appended to it, until ``stop`` is set.

    Survives rotation: when the path names another file (moved away and recreated, or deleted and recreated) the
    old file is read to its end — and still watched for ``drain_s`` for a line its writer had in flight — and the
    new file is read from its start; when the file shrinks (truncated in place, ``copytruncate``) it is read again
    from its start. A missing file is waited for. ``on_caught_up`` is called once, the first time everything
    written so far has been read (so a caller can show the last N trails of the existing content first).
    """
    stop = stop if stop is not None else threading.Event()
    current: _Open | None = None
    draining: list[tuple[_Open, float]] = []
    generation = 0
    caught_up = False
    announced_missing = False
    try:
        while not stop.is_set():
            progressed = False
            for old, deadline in list(draining):
                lines = old.read_lines()
                if lines:
                    progressed = True
                    yield from records_from_lines(lines, old.source)
                if time.monotonic() >= deadline:
                    draining.remove((old, deadline))
                    yield from records_from_lines(old.rest(), old.source)
                    old.handle.close()
            if current is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115 - kept open across iterations, closed below
                except FileNotFoundError:
                    if not announced_missing:
                        announced_missing = True
                        yield Notice(f"waiting for {path} to appear")
                    if not caught_up and on_caught_up is not None:
                        caught_up = True
                        on_caught_up()
                    stop.wait(poll_s)
                    continue
                generation += 1
                current = _Open(path, handle, generation)
                if generation > 1 or announced_missing:
                    yield Notice(f"reading {path} from its start")
            lines = current.read_lines()
            if lines:
                yield from records_from_lines(lines, current.source)
                continue
            if not caught_up:
                caught_up = True
                if on_caught_up is not None:
                    on_caught_up()
            change = _change(path, current)
            if change == "replaced":
                yield Notice(f"{path} was rotated or replaced; following the new file")
                draining.append((current, time.monotonic() + drain_s))
                current = None
                continue
            if change == "truncated":
                yield Notice(f"{path} was truncated; reading it again from its start")
                current.handle.seek(0)
                current.pending = b""
                current.line = 0
                continue
            if not progressed:
                stop.wait(poll_s)
    finally:
        for old, _ in draining:
            old.handle.close()
        if current is not None:
            current.handle.close()


def _change(path: str, current: _Open) -> str | None:
    """``replaced`` when ``path`` no longer names the open file, ``truncated`` when the file shrank below what
    was read, else ``None``."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return "replaced"
    if (stat.st_dev, stat.st_ino) != current.identity:
        return "replaced"
    if stat.st_size < current.handle.tell():
        return "truncated"
    return None


def field(mapping: Mapping[str, Any], *keys: str) -> Any:
    """``mapping[k1][k2]…`` or ``None`` when a level is missing or not a mapping (trail values are untrusted)."""
    value: Any = mapping
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value
