"""``gotrails-otel verify``: check every link of every hash chain in JSON-lines trail files.

Records are read in the order given (files oldest first, then line by line). Each trail's hash is recomputed from
its RFC 8785 canonical form (with its key, for HMAC chains); each chain's records are then checked link by link —
``seq`` from 1 without gaps, duplicates or reordering, each ``prev`` equal to the previous record's ``hash`` — and
against the chain's signed checkpoints, which reveal a missing tail. Every problem is reported with its file, line
and ``seq``.

Memory: about 75 bytes per record (hashes and positions by ``seq``), so large inputs stay checkable in full.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from .integrity import ALG_HMAC, ALG_SHA256, CHECKPOINT, GENESIS, canonical, digest, without_hash

__all__ = ["PROBLEM_KINDS", "ChainSummary", "Problem", "Report", "verify_files"]

PROBLEM_KINDS: Mapping[str, str] = {
    "modified": "the record does not match its hash: it was changed after it was written",
    "forged": "the record does not verify and nothing in the chain vouches for it (inserted without the key)",
    "wrong_key": "no record signed with this key id verifies with the key given",
    "missing_key": "records are signed with a key id for which no key was given",
    "unkeyed": "the record uses plain SHA-256 although keys were given: anyone can recompute such a hash",
    "missing": "records are missing from the chain (deleted)",
    "rotation_gap": "records are missing where one file ends and the next begins",
    "lost": "records are missing that the writer recorded it could not export",
    "tail_missing": "records after the last one found are missing, per a signed checkpoint",
    "start_missing": "the chain does not begin at seq 1 (earlier records or files are missing)",
    "duplicate": "a record appears twice",
    "conflict": "two different valid records claim the same seq",
    "reordered": "a record appears after a record that follows it in the chain",
    "broken_link": "prev does not equal the hash of the record before it",
    "checkpoint_mismatch": "a signed checkpoint names a different hash for this seq",
    "bad_checkpoint": "a checkpoint does not verify (modified or forged)",
    "after_final": "records follow the chain's final (shutdown) checkpoint",
    "not_closed": "the chain has no final checkpoint (process still running, crashed, or tail cut)",
    "truncated": "the last line of a file is cut off",
    "unreadable": "a damaged record that cannot be parsed",
    "unchained": "a trail without an integrity block",
    "malformed": "the integrity block or checkpoint has missing or invalid fields",
}
"""Every kind of problem ``verify`` reports, with what it means."""

_SEQ_WINDOW = 1 << 24  # a seq this far outside a chain's range is treated as a forgery, not allocated
_POS_SHIFT = 40
_HASH_SIZE = 32
_PRESENT, _OK, _UNKNOWN = 1, 2, 4
_SKIPPED_SHOWN = 20
_MAX_PROBLEMS = 10_000
_NOT_A_TRAIL_MARKERS = (b'"integrity"', CHECKPOINT.encode())
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")  # exactly as written: another spelling of a hash is a change too


@dataclass
class Problem:
    """One problem, at a position: ``file``/``line`` (1-based) and the chain's ``seq`` (``seq_end`` for a range)."""

    kind: str
    message: str
    file: str | None = None
    line: int | None = None
    chain: str | None = None
    seq: int | None = None
    seq_end: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The problem as in the ``--json`` report (members that are ``None`` left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ChainSummary:
    """What was found of one chain."""

    chain: str
    alg: list[str]
    key_ids: list[str]
    records: int
    first_seq: int | None
    last_seq: int | None
    files: list[str]
    checkpoints: int
    checkpoint_seq: int | None
    closed: bool
    pid: int | None
    sampled_out: dict[str, int] = field(default_factory=dict)
    problems: int = 0

    def to_json(self) -> dict[str, Any]:
        """The chain's summary as in the ``--json`` report."""
        return dict(self.__dict__)


@dataclass
class Report:
    """The outcome of :func:`verify_files`; ``ok`` only when every record and link verified."""

    files: list[str]
    lines: int = 0
    trails: int = 0
    checkpoints: int = 0
    chains: list[ChainSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    skipped_count: int = 0
    keyed: bool = False

    @property
    def ok(self) -> bool:
        """``True`` when every record and every link verified (exit status 0)."""
        return self.problem_count == 0

    def to_json(self) -> dict[str, Any]:
        """The machine report (``--json``)."""
        by_kind: dict[str, int] = {}
        for problem in self.problems:
            by_kind[problem.kind] = by_kind.get(problem.kind, 0) + 1
        return {
            "ok": self.ok,
            "files": self.files,
            "lines": self.lines,
            "trails": self.trails,
            "checkpoints": self.checkpoints,
            "keyed": self.keyed,
            "chains": [c.to_json() for c in self.chains],
            "problem_count": self.problem_count,
            "problems_by_kind": by_kind,
            "problems": [p.to_json() for p in self.problems],
            "skipped_count": self.skipped_count,
            "skipped": [{"file": f, "line": n, "reason": r} for f, n, r in self.skipped],
        }

    def to_text(self, *, limit: int = 20) -> str:
        """The short human report: one line per chain, the problems (``limit`` per kind), the verdict."""
        out = [
            f"gotrails-otel verify: {len(self.files)} file{_s(len(self.files))}, {self.lines:,} lines: "
            f"{self.trails:,} trail{_s(self.trails)} in {len(self.chains)} chain{_s(len(self.chains))}, "
            f"{self.checkpoints:,} checkpoint{_s(self.checkpoints)}"
        ]
        for c in self.chains:
            seqs = f"seq {c.first_seq:,}-{c.last_seq:,}" if c.first_seq is not None else "no trails"
            key = ", ".join(c.alg) + (f" key {', '.join(c.key_ids)}" if c.key_ids else "")
            if c.closed:
                state = "closed"
            elif c.checkpoint_seq is not None:
                state = f"open (last checkpoint at seq {c.checkpoint_seq:,})"
            else:
                state = "open (no checkpoint)"
            verdict = "OK" if not c.problems else f"{c.problems:,} problem{_s(c.problems)}"
            pid = f" pid {c.pid}" if c.pid is not None else ""
            sampled = sum(c.sampled_out.values())
            thinned = f"  ({sampled:,} sampled out)" if sampled else ""
            out.append(
                f"  chain {c.chain[:12]}{pid}  {key}  {seqs}  {c.records:,} trail{_s(c.records)}{thinned}  {state}"
                f"  {verdict}"
            )
        if self.problems:
            out.append("problems:")
            shown: dict[str, int] = {}
            for p in self.problems:
                shown[p.kind] = shown.get(p.kind, 0) + 1
                if shown[p.kind] <= limit:
                    out.append("  " + _describe(p))
            for kind, n in shown.items():
                if n > limit:
                    out.append(f"  … and {n - limit:,} more {kind}")
            if self.problem_count > len(self.problems):
                out.append(f"  … {self.problem_count - len(self.problems):,} more problems not listed")
        if self.skipped_count:
            where = ", ".join(f"{f}:{n}" for f, n, _ in self.skipped[:3])
            more = " …" if self.skipped_count > 3 else ""
            out.append(
                f"skipped {self.skipped_count:,} line{_s(self.skipped_count)} that are not trails ({where}{more})"
            )
        if any("sha256" in c.alg for c in self.chains):
            out.append("note: no key given; plain SHA-256 chains show damage but not a rewrite by someone who rehashes")
        if self.ok:
            out.append("OK: every record and every link verified")
        else:
            chains = len({p.chain for p in self.problems if p.chain})
            where = f" in {chains} chain{_s(chains)}" if chains else ""
            out.append(f"FAILED: {self.problem_count:,} problem{_s(self.problem_count)}{where}")
        return "\n".join(out) + "\n"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _describe(p: Problem) -> str:
    where = f"{p.file}:{p.line}" if p.file is not None else "-"
    seq = ""
    if p.seq is not None:
        seq = f" seq {p.seq}" if p.seq_end is None or p.seq_end == p.seq else f" seq {p.seq}-{p.seq_end}"
    chain = f" chain {p.chain[:12]}" if p.chain else ""
    return f"{where}{chain}{seq}: {p.kind}: {p.message}"


class _Chain:
    """What was read of one chain, by seq: hash, prev and position of each record, in flat arrays."""

    __slots__ = (
        "algs",
        "base",
        "checkpoints",
        "flags",
        "hashes",
        "id",
        "key_ids",
        "max_pos",
        "max_seq",
        "pid",
        "pos",
        "prevs",
        "records",
        "sampled_out",
    )

    def __init__(self, chain_id: str) -> None:
        self.id = chain_id
        self.base = 0
        self.hashes = bytearray()
        self.prevs = bytearray()
        self.pos = array("q")
        self.flags = bytearray()
        self.max_seq = 0
        self.max_pos = -1
        self.records = 0
        self.algs: set[str] = set()
        self.key_ids: set[str] = set()
        self.checkpoints: list[tuple[int, bytes, bool, int, list[list[int]]]] = []
        self.pid: int | None = None
        self.sampled_out: tuple[int, dict[str, int]] = (-1, {})

    def slot(self, seq: int) -> int | None:
        """The index of ``seq`` in the arrays (growing them), or ``None`` when it is absurdly far away."""
        size = len(self.flags)
        if size == 0:
            self.base = seq
            self._grow_end(64)
            return 0
        index = seq - self.base
        if index < 0:
            if -index > _SEQ_WINDOW:
                return None
            extra = max(-index, size)
            self.hashes[0:0] = bytes(extra * _HASH_SIZE)
            self.prevs[0:0] = bytes(extra * _HASH_SIZE)
            self.pos = array("q", [-1]) * extra + self.pos
            self.flags[0:0] = bytes(extra)
            self.base -= extra
            return seq - self.base
        if index >= size:
            if index - size > _SEQ_WINDOW:
                return None
            self._grow_end(max(index + 1 - size, size))
        return index

    def _grow_end(self, extra: int) -> None:
        self.hashes.extend(bytes(extra * _HASH_SIZE))
        self.prevs.extend(bytes(extra * _HASH_SIZE))
        self.pos.extend(array("q", [-1]) * extra)
        self.flags.extend(bytes(extra))

    def hash_at(self, index: int) -> bytes:
        return bytes(self.hashes[index * _HASH_SIZE : (index + 1) * _HASH_SIZE])

    def prev_at(self, index: int) -> bytes:
        return bytes(self.prevs[index * _HASH_SIZE : (index + 1) * _HASH_SIZE])


class _Verifier:
    def __init__(
        self,
        paths: Sequence[str],
        keys: Mapping[str, bytes],
        *,
        require_final: bool,
        allow_missing_start: bool,
    ) -> None:
        self.paths = list(paths)
        self.keys = dict(keys)
        self.require_final = require_final
        self.allow_missing_start = allow_missing_start
        self.report = Report(files=self.paths, keyed=bool(self.keys))
        self.chains: dict[str, _Chain] = {}
        self.key_ok: dict[str, int] = {}
        self.key_bad: dict[str, list[Problem]] = {}
        self.missing_keys: dict[str, tuple[int, int]] = {}
        self.unkeyed = 0
        self.unkeyed_first = -1

    # -------------------------------------------------------------------------------------- positions

    def where(self, pos: int) -> tuple[str, int]:
        return self.paths[pos >> _POS_SHIFT], pos & ((1 << _POS_SHIFT) - 1)

    def problem(
        self,
        kind: str,
        message: str,
        pos: int | None = None,
        chain: str | None = None,
        seq: int | None = None,
        seq_end: int | None = None,
    ) -> Problem:
        file, line = self.where(pos) if pos is not None and pos >= 0 else (None, None)
        found = Problem(kind, message, file, line, chain, seq, seq_end)
        self.report.problem_count += 1
        if len(self.report.problems) < _MAX_PROBLEMS:
            self.report.problems.append(found)
        return found

    def skip(self, pos: int, reason: str) -> None:
        self.report.skipped_count += 1
        if len(self.report.skipped) < _SKIPPED_SHOWN:
            file, line = self.where(pos)
            self.report.skipped.append((file, line, reason))

    # ------------------------------------------------------------------------------------------ reading

    def run(self, progress: Callable[[int], None] | None) -> Report:
        for index, path in enumerate(self.paths):
            self.read_file(index, path, progress)
        self.finish()
        return self.report

    def read_file(self, index: int, path: str, progress: Callable[[int], None] | None) -> None:
        base = index << _POS_SHIFT
        line_no = 0
        consumed = 0
        line = self.line
        with _open(path) as stream:
            for raw in stream:
                line_no += 1
                if raw[-1:] == b"\n":
                    line(raw, base + line_no)
                else:  # only the last line of a file can lack its newline
                    self.last_line(raw, base + line_no)
                if progress is not None:
                    consumed += len(raw)
                    if line_no & 4095 == 0:
                        progress(consumed)
                        consumed = 0
        self.report.lines += line_no
        if progress is not None:
            progress(consumed)

    def last_line(self, raw: bytes, pos: int) -> None:
        """A final line without its newline: a record cut off when the file was truncated, or complete."""
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            if raw.strip():
                self.problem("truncated", f"the last line is cut off after {len(raw)} bytes", pos)
            return
        self.line(raw, pos)

    def line(self, raw: bytes, pos: int) -> None:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if not raw.strip():
                return
            if any(marker in raw for marker in _NOT_A_TRAIL_MARKERS):
                self.problem("unreadable", "a damaged record: not valid JSON", pos)
            else:
                self.skip(pos, "not JSON")
            return
        if type(record) is not dict:
            self.skip(pos, "not a JSON object")
            return
        integrity = record.get("integrity")
        if type(integrity) is dict:
            self.trail(record, integrity, pos, raw)
        elif record.get("record") == CHECKPOINT:
            self.checkpoint(record, pos)
        elif "trace_id" in record and "timestamp" in record and "request" in record:
            self.report.trails += 1
            self.problem("unchained", "a trail without an integrity block: it cannot be verified", pos)
        else:
            self.skip(pos, "not a trail or checkpoint")

    # ------------------------------------------------------------------------------------------- trails

    def trail(self, record: dict[str, Any], integrity: dict[str, Any], pos: int, raw: bytes) -> None:
        self.report.trails += 1
        chain_id = integrity.get("chain")
        seq = integrity.get("seq")
        stored = integrity.pop("hash", None)
        prev = integrity.get("prev")
        alg = integrity.get("alg")
        key_id = integrity.get("key_id")
        try:
            if type(chain_id) is not str or not chain_id or type(seq) is not int or seq < 1:
                raise ValueError
            if not (isinstance(stored, str) and _HEX64.match(stored) and isinstance(prev, str) and _HEX64.match(prev)):
                raise ValueError
            stored_bytes = bytes.fromhex(stored)
            prev_bytes = bytes.fromhex(prev)
            if alg == ALG_HMAC:
                if type(key_id) is not str:
                    raise ValueError
            elif alg != ALG_SHA256 or key_id is not None:
                raise ValueError
        except (ValueError, TypeError):
            self.problem(
                "malformed",
                "the integrity block lacks a valid chain, seq, prev, hash, alg or key_id",
                pos,
                chain_id if isinstance(chain_id, str) else None,
                seq if type(seq) is int else None,
            )
            return
        status = self.content(record, raw, stored, stored_bytes, alg, key_id, pos)
        chain = self.chains.get(chain_id)
        if chain is None:
            chain = self.chains[chain_id] = _Chain(chain_id)
        chain.records += 1
        chain.algs.add(alg)
        if key_id is not None:
            chain.key_ids.add(key_id)
        self.place(chain, seq, stored_bytes, prev_bytes, status, pos)

    def content(
        self, record: dict[str, Any], raw: bytes, stored: str, stored_bytes: bytes, alg: str, key_id: Any, pos: int
    ) -> int:
        """Recompute the record's hash: ``_OK``, ``_UNKNOWN`` (no key for it) or 0 (it does not match)."""
        key: bytes | None = None
        if alg == ALG_HMAC:
            key = self.keys.get(key_id)
            if key is None:
                first, count = self.missing_keys.get(key_id, (pos, 0))
                self.missing_keys[key_id] = (first, count + 1)
                return _UNKNOWN
        elif self.keys:
            self.note_unkeyed(pos)
        # A line as gotrails writes it is the hashed canonical JSON with the hash member inserted: take that member
        # out and the bytes are checked without serialising again. Any other line (re-serialised by a log
        # shipper, another writer) is canonicalised from its parsed value.
        hashed = without_hash(raw.rstrip(b"\r\n"), alg, record["integrity"]["chain"], stored)
        if hashed is not None:
            computed = hashlib.sha256(hashed).digest() if key is None else hmac.digest(key, hashed, "sha256")
            if hmac.compare_digest(computed, stored_bytes):
                if key_id is not None:
                    self.key_ok[key_id] = self.key_ok.get(key_id, 0) + 1
                return _OK
        try:
            data = canonical(record)
        except Exception:  # not representable (e.g. an integer beyond 2**53): it was not what the writer hashed
            return 0
        computed = hashlib.sha256(data).digest() if key is None else hmac.digest(key, data, "sha256")
        if hmac.compare_digest(computed, stored_bytes):
            if key_id is not None:
                self.key_ok[key_id] = self.key_ok.get(key_id, 0) + 1
            return _OK
        return 0

    def note_unkeyed(self, pos: int) -> None:
        if not self.unkeyed:
            self.unkeyed_first = pos
        self.unkeyed += 1

    def place(self, chain: _Chain, seq: int, stored: bytes, prev: bytes, status: int, pos: int) -> None:
        index = chain.slot(seq)
        if index is None:
            self.problem(
                "forged",
                f"seq {seq} is far outside the rest of the chain (seq {chain.base}-{chain.base + len(chain.flags)})",
                pos,
                chain.id,
                seq,
            )
            return
        flags = chain.flags[index]
        if flags & _PRESENT:
            first = chain.pos[index]
            where = "{}:{}".format(*self.where(first))
            same = chain.hash_at(index) == stored
            if status and flags & (_OK | _UNKNOWN):
                if same:
                    self.problem("duplicate", f"a second copy of the record at {where}", pos, chain.id, seq)
                else:
                    self.problem(
                        "conflict", f"seq {seq} is also held by a different record at {where}", pos, chain.id, seq
                    )
                return
            if not status:
                self.problem("forged", f"claims seq {seq}, held by the record at {where}", pos, chain.id, seq)
                return
            # The record found first did not verify and this one does: the first was the forgery.
            self.problem("forged", "does not verify; a valid record for its seq follows", first, chain.id, seq)
        elif seq < chain.max_seq:
            later = "{}:{}".format(*self.where(chain.max_pos))
            hint = ""
            if chain.max_pos >> _POS_SHIFT != pos >> _POS_SHIFT:
                hint = " (files must be given oldest first)"
            self.problem("reordered", f"comes after seq {chain.max_seq} at {later}{hint}", pos, chain.id, seq)
        chain.hashes[index * _HASH_SIZE : (index + 1) * _HASH_SIZE] = stored
        chain.prevs[index * _HASH_SIZE : (index + 1) * _HASH_SIZE] = prev
        chain.pos[index] = pos
        chain.flags[index] = _PRESENT | status
        if status and seq > chain.max_seq:  # a record that does not verify does not move the chain's head
            chain.max_seq = seq
            chain.max_pos = pos

    # -------------------------------------------------------------------------------------- checkpoints

    def checkpoint(self, record: dict[str, Any], pos: int) -> None:
        self.report.checkpoints += 1
        chain_id = record.get("chain")
        seq = record.get("seq")
        head = record.get("hash")
        alg = record.get("alg")
        key_id = record.get("key_id")
        signature = record.pop("signature", None)
        lost = record.get("lost", [])
        try:
            if type(chain_id) is not str or not chain_id or type(seq) is not int or seq < 0:
                raise ValueError
            if not (isinstance(head, str) and _HEX64.match(head) and isinstance(signature, str)):
                raise ValueError
            if not _HEX64.match(signature) or alg not in (ALG_HMAC, ALG_SHA256):
                raise ValueError
            head_bytes = bytes.fromhex(head)
            signature_bytes = bytes.fromhex(signature)
            if not isinstance(lost, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(type(n) is int for n in r) for r in lost
            ):
                raise ValueError
        except (ValueError, TypeError):
            self.problem("malformed", "a checkpoint lacks a valid chain, seq, hash, alg or signature", pos)
            return
        key: bytes | None = None
        if alg == ALG_HMAC:
            key = self.keys.get(key_id) if isinstance(key_id, str) else None
            if key is None:
                if isinstance(key_id, str):
                    first, count = self.missing_keys.get(key_id, (pos, 0))
                    self.missing_keys[key_id] = (first, count + 1)
                else:
                    self.problem("malformed", "an HMAC checkpoint without key_id", pos, chain_id, seq)
                return
        elif self.keys:
            self.note_unkeyed(pos)
        try:
            valid = hmac.compare_digest(bytes.fromhex(digest(canonical(record), key)), signature_bytes)
        except Exception:
            valid = False
        if not valid:
            found = self.problem(
                "bad_checkpoint", "its signature does not match: modified or forged", pos, chain_id, seq
            )
            if isinstance(key_id, str) and key is not None:
                self.key_bad.setdefault(key_id, []).append(found)
            return
        if isinstance(key_id, str):
            self.key_ok[key_id] = self.key_ok.get(key_id, 0) + 1
        chain = self.chains.get(chain_id)
        if chain is None:
            chain = self.chains[chain_id] = _Chain(chain_id)
        pid = record.get("pid")
        chain.pid = pid if type(pid) is int else chain.pid
        sampled = record.get("sampled_out")
        if isinstance(sampled, dict) and seq >= chain.sampled_out[0]:
            chain.sampled_out = (seq, {str(k): v for k, v in sampled.items() if type(v) is int})
        chain.checkpoints.append((seq, head_bytes, record.get("final") is True, pos, lost))

    # ------------------------------------------------------------------------------------------ the end

    def finish(self) -> None:
        for chain in self.chains.values():
            self.check_chain(chain)
        for key_id, (first, count) in self.missing_keys.items():
            self.problem(
                "missing_key",
                f"{count:,} record{_s(count)} signed with key id {key_id!r}, and no key given for it "
                "(--key ID=KEY or --key-file ID=PATH)",
                first,
            )
        if self.unkeyed:
            count = self.unkeyed
            self.problem(
                "unkeyed",
                f"{count:,} record{_s(count)} use plain SHA-256 although keys were given: anyone could have "
                "rewritten them",
                self.unkeyed_first,
            )
        for key_id, bad in self.key_bad.items():
            if self.key_ok.get(key_id, 0) == 0 and bad:
                example = bad[0]
                gone = {id(p) for p in bad}
                self.report.problems = [p for p in self.report.problems if id(p) not in gone]
                self.report.problem_count -= len(bad)
                found = self.problem(
                    "wrong_key",
                    f"none of the {len(bad):,} record{_s(len(bad))} signed with key id {key_id!r} verifies with "
                    "the key given: wrong key (or every one of them forged)",
                )
                found.file, found.line, found.chain, found.seq = example.file, example.line, example.chain, example.seq
        self.report.problems.sort(key=lambda p: (self.paths.index(p.file) if p.file in self.paths else -1, p.line or 0))
        counts: dict[str, int] = {}
        for p in self.report.problems:
            if p.chain:
                counts[p.chain] = counts.get(p.chain, 0) + 1
        for summary in self.report.chains:
            summary.problems = counts.get(summary.chain, 0)

    def check_chain(self, chain: _Chain) -> None:
        cid = chain.id
        checkpoints = sorted(chain.checkpoints)
        # A record that does not verify is part of the chain only when something that verified vouches for its
        # hash (the next record's prev, or a checkpoint): then it was modified. Otherwise it was forged, and it
        # must not shape the chain (a forged far-off seq would make gaps that are not there).
        present = []
        for index, flags in enumerate(chain.flags):
            if flags & _PRESENT:
                if flags & (_OK | _UNKNOWN) or self.bad_record(chain, index, checkpoints):
                    present.append(index)
                else:
                    chain.flags[index] = 0
        lost: set[int] = set()
        for _, _, _, _, ranges in checkpoints:
            for low, high in ranges:
                if high - low <= _SEQ_WINDOW:
                    lost.update(range(low, high + 1))
        base = chain.base
        first_seq = base + present[0] if present else None
        last_seq = base + present[-1] if present else None
        if first_seq is not None and first_seq > 1 and not self.allow_missing_start:
            self.problem(
                "start_missing",
                f"the chain's first record here has seq {first_seq}: seq 1-{first_seq - 1} are not in these files",
                chain.pos[present[0]],
                cid,
                1,
                first_seq - 1,
            )
        # Gaps, links and records that do not verify, in seq order.
        previous: int | None = None
        for index in present:
            seq = base + index
            pos = chain.pos[index]
            if previous is None:
                if seq == 1 and chain.prev_at(index) != bytes.fromhex(GENESIS):
                    self.problem("broken_link", "the first record's prev is not the genesis value", pos, cid, seq)
            elif index == previous + 1:
                if chain.prev_at(index) != chain.hash_at(previous):
                    self.problem("broken_link", f"prev does not match the hash of seq {seq - 1}", pos, cid, seq)
            else:
                self.gap(chain, previous, index, lost)
            previous = index
        # Checkpoints: a head beyond the last record means a missing tail.
        closed = False
        for seq, head, _final, pos, _ in checkpoints:
            index = seq - base
            found = seq and present and 0 <= index < len(chain.flags) and chain.flags[index] & _PRESENT
            if found and chain.hash_at(index) != head:
                self.problem(
                    "checkpoint_mismatch",
                    "the checkpoint at {}:{} names another hash for this seq".format(*self.where(pos)),
                    chain.pos[index],
                    cid,
                    seq,
                )
        if checkpoints:
            top_seq, _, _, top_pos, _ = max(checkpoints, key=lambda c: (c[0], c[2]))
            if last_seq is None or top_seq > last_seq:
                start = (last_seq or 0) + 1
                self.tail(chain, start, top_seq, top_pos, present, lost)
            finals = [c for c in checkpoints if c[2]]
            if finals:
                final_seq = min(c[0] for c in finals)
                after = [base + i for i in present if base + i > final_seq]
                if after:
                    self.problem(
                        "after_final",
                        f"{len(after):,} record{_s(len(after))} after the final checkpoint at seq {final_seq}",
                        chain.pos[after[0] - base],
                        cid,
                        after[0],
                        after[-1],
                    )
                closed = (last_seq is not None and last_seq <= final_seq) or (last_seq is None and final_seq == 0)
        if self.require_final and not closed and present:
            self.problem(
                "not_closed",
                "no final checkpoint: the process may still run or have crashed, or the tail was cut",
                chain.pos[present[-1]],
                cid,
                last_seq,
            )
        files = sorted({chain.pos[i] >> _POS_SHIFT for i in present})
        self.report.chains.append(
            ChainSummary(
                chain=cid,
                alg=sorted(chain.algs),
                key_ids=sorted(chain.key_ids),
                records=chain.records,
                first_seq=first_seq,
                last_seq=last_seq,
                files=[self.paths[i] for i in files],
                checkpoints=len(checkpoints),
                checkpoint_seq=max((c[0] for c in checkpoints), default=None),
                closed=closed,
                pid=chain.pid,
                sampled_out=chain.sampled_out[1],
            )
        )

    def gap(self, chain: _Chain, before: int, after: int, lost: set[int]) -> None:
        low, high = chain.base + before + 1, chain.base + after - 1
        pos_before, pos_after = chain.pos[before], chain.pos[after]
        file_before, line_before = self.where(pos_before)
        file_after, line_after = self.where(pos_after)
        for start, end, is_lost in _runs(low, high, lost):
            count = end - start + 1
            if is_lost:
                kind = "lost"
                message = f"{count:,} record{_s(count)} the writer could not export (listed in its checkpoints)"
            elif pos_before >> _POS_SHIFT != pos_after >> _POS_SHIFT:
                kind = "rotation_gap"
                message = (
                    f"{count:,} record{_s(count)} missing at the seam between {file_before} (ends at line "
                    f"{line_before}, seq {low - 1}) and {file_after} (line {line_after}, seq {high + 1})"
                )
            else:
                kind = "missing"
                message = (
                    f"{count:,} record{_s(count)} deleted between line {line_before} (seq {low - 1}) and "
                    f"line {line_after} (seq {high + 1})"
                )
            self.problem(kind, message, pos_after, chain.id, start, end)

    def tail(
        self, chain: _Chain, start: int, end: int, checkpoint_pos: int, present: list[int], lost: set[int]
    ) -> None:
        last_pos = chain.pos[present[-1]] if present else checkpoint_pos
        cp_file, cp_line = self.where(checkpoint_pos)
        for low, high, is_lost in _runs(start, end, lost):
            count = high - low + 1
            if is_lost:
                self.problem(
                    "lost",
                    f"{count:,} record{_s(count)} the writer could not export (listed in its checkpoints)",
                    last_pos,
                    chain.id,
                    low,
                    high,
                )
            else:
                self.problem(
                    "tail_missing",
                    f"{count:,} record{_s(count)} missing after the last one found; the checkpoint at "
                    f"{cp_file}:{cp_line} says the chain reached seq {end}",
                    last_pos,
                    chain.id,
                    low,
                    high,
                )

    def bad_record(self, chain: _Chain, index: int, checkpoints: list[tuple[int, bytes, bool, int, Any]]) -> bool:
        """Report a record that does not verify: ``modified`` when a verified record or a checkpoint vouches for
        its hash (returns True: it holds its place in the chain), else ``forged`` (returns False)."""
        seq = chain.base + index
        stored = chain.hash_at(index)
        following = index + 1
        vouched = (
            following < len(chain.flags)
            and chain.flags[following] & (_OK | _UNKNOWN) != 0
            and chain.prev_at(following) == stored
        ) or any(c[0] == seq and c[1] == stored for c in checkpoints)
        if vouched:
            found = self.problem("modified", PROBLEM_KINDS["modified"], chain.pos[index], chain.id, seq)
        else:
            found = self.problem(
                "forged",
                "the record does not verify and neither the next record nor a checkpoint refers to it",
                chain.pos[index],
                chain.id,
                seq,
            )
        key_ids = chain.key_ids
        if len(key_ids) == 1:
            (key_id,) = key_ids
            self.key_bad.setdefault(key_id, []).append(found)
        return bool(vouched)


def _runs(low: int, high: int, lost: set[int]) -> Iterator[tuple[int, int, bool]]:
    """Split ``low..high`` into runs that are all in ``lost`` or all outside it."""
    if not lost:
        yield low, high, False
        return
    start = low
    state = low in lost
    for seq in range(low + 1, high + 1):
        now = seq in lost
        if now != state:
            yield start, seq - 1, state
            start, state = seq, now
    yield start, high, state


def _open(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def verify_files(
    paths: Iterable[str | os.PathLike[str]],
    keys: Mapping[str, bytes] | None = None,
    *,
    require_final: bool = False,
    allow_missing_start: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Verify JSON-lines trail files, given oldest first; ``keys`` maps key ids to HMAC keys.

    ``progress(n)`` is called with the bytes read since its last call. ``require_final`` reports chains that lack
    a final checkpoint; ``allow_missing_start`` accepts chains whose first records are not in the files (older
    rotated files already removed).
    """
    names = [os.fspath(p) for p in paths]
    verifier = _Verifier(names, keys or {}, require_final=require_final, allow_missing_start=allow_missing_start)
    return verifier.run(progress)
