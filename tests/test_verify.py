"""``gotrails-otel verify`` on real files: two processes append HMAC-chained trails to one file through the file
exporter; each kind of tampering is detected and reported at its file, line and seq; an untouched file of 100,000
trails verifies."""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gotrails_otel.integrity import Chain, StampedTrail, canonical, digest
from gotrails_otel.verify import PROBLEM_KINDS, Report, verify_files

KEY = "verify-test-key-0123456789abcdef"
KEYS = {"k1": KEY.encode()}
PER_PROCESS = 150

_WRITER = """
import os, sys, time
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
import gotrails_otel as gt

count, barrier, me = int(sys.argv[1]), sys.argv[2], sys.argv[3]
provider = TracerProvider()
provider.add_span_processor(gt.TrailProcessor())  # configured by GOTRAILS_* variables
server = provider.get_tracer("opentelemetry.instrumentation.fastapi")
http = provider.get_tracer("opentelemetry.instrumentation.httpx")
open(os.path.join(barrier, me), "w").close()  # ready; start when both writers are
deadline = time.monotonic() + 120
while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
    time.sleep(0.001)
for n in range(count):
    attributes = {"http.request.method": "POST", "url.path": f"/v1/payments/{n}", "http.response.status_code": 201}
    with server.start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER, attributes=attributes) as root:
        gt.set_metadata(user_id=f"u-{os.getpid()}-{n}", amount=n * 100, currency="IDR")
        with gt.step("ValidateRequest"):
            pass
        call = {"http.request.method": "POST", "url.full": "https://api.midtrans.com/v2/charge"}
        with http.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=call) as span:
            span.set_attribute("http.response.status_code", 502 if n % 10 == 3 else 201)
        if n % 10 == 3:
            root.set_status(Status(StatusCode.ERROR, "gateway refused"))
    time.sleep(0.003)  # paced, so the two writers' lines interleave whatever the machine's load
    if n % 15 == 0:
        time.sleep(0.02)
provider.shutdown()
"""


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The lines of a file that two processes appended to at the same time (HMAC key k1, periodic checkpoints)."""
    path = tmp_path_factory.mktemp("verify") / "trails.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTRAILS_", "OTEL_"))}
    env.update(
        GOTRAILS_EXPORTER="file",
        GOTRAILS_FILE=str(path),
        GOTRAILS_HMAC_KEY=KEY,
        GOTRAILS_HMAC_KEY_ID="k1",
        GOTRAILS_CHECKPOINT_INTERVAL_S="0.05",
    )
    barrier = path.parent / "barrier"
    barrier.mkdir()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WRITER), str(PER_PROCESS), str(barrier), f"writer{n}"],
            env=env,
            stderr=subprocess.PIPE,
        )
        for n in range(2)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=180)
        assert writer.returncode == 0, err.decode()
    lines = path.read_bytes().splitlines(keepends=True)
    assert KEY.encode() not in path.read_bytes()
    return lines


def _parsed(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


def _chains(lines: list[bytes]) -> dict[str, list[int]]:
    """Chain id -> indexes (0-based) of its trail lines, in file order."""
    found: dict[str, list[int]] = {}
    for index, record in enumerate(_parsed(lines)):
        if "integrity" in record:
            found.setdefault(record["integrity"]["chain"], []).append(index)
    return found


def _chain(lines: list[bytes], which: int) -> list[int]:
    """Indexes of the trail lines of the first (0) or second (1) chain in the file."""
    return list(_chains(lines).values())[which]


def _seq(line: bytes) -> int:
    return int(orjson.loads(line)["integrity"]["seq"])


def _verify(tmp_path: Path, lines: list[bytes], name: str = "trails.jsonl", **options: Any) -> Report:
    path = tmp_path / name
    path.write_bytes(b"".join(lines))
    return verify_files([path], options.pop("keys", KEYS), **options)


def _found(report: Report) -> list[tuple[str, int | None, int | None]]:
    return [(p.kind, p.line, p.seq) for p in report.problems]


def test_the_untouched_file_verifies(written: list[bytes], tmp_path: Path) -> None:
    chains = _chains(written)
    assert len(chains) == 2
    a, b = chains.values()
    assert min(a[-1], b[-1]) > max(a[0], b[0])  # the two processes really wrote at the same time: interleaved
    report = _verify(tmp_path, written)
    assert report.ok, report.to_text()
    assert report.trails == 2 * PER_PROCESS and report.checkpoints >= 4  # periodic ones and two final ones
    assert all(c.closed and c.records == PER_PROCESS and c.first_seq == 1 for c in report.chains)
    assert report.to_text().endswith("OK: every record and every link verified\n")


def test_one_changed_value_is_a_modified_record(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    index = _chain(lines, 0)[40]
    before = lines[index]
    lines[index] = before.replace(b'"currency":"IDR"', b'"currency":"USD"')
    assert lines[index] != before
    report = _verify(tmp_path, lines)
    assert _found(report) == [("modified", index + 1, _seq(before))]
    assert report.problems[0].file == str(tmp_path / "trails.jsonl")
    # Re-serialised by a tool (another key order and spacing), the same change is found the same way.
    record = orjson.loads(before)
    record["metadata"]["amount"] += 1
    lines[index] = json.dumps(record, indent=None, sort_keys=False).encode() + b"\n"
    assert _found(_verify(tmp_path, lines)) == [("modified", index + 1, _seq(before))]


def test_a_reserialised_untouched_record_still_verifies(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    index = _chain(lines, 1)[10]
    record = orjson.loads(lines[index])
    lines[index] = json.dumps(dict(reversed(list(record.items()))), indent=1).replace("\n", " ").encode() + b"\n"
    assert _verify(tmp_path, lines).ok


def test_a_deleted_record_is_missing_at_the_next_record_of_its_chain(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    chain = _chain(lines, 0)
    gone, following = chain[70], chain[71]
    seq = _seq(lines[gone])
    del lines[gone]
    report = _verify(tmp_path, lines)
    assert _found(report) == [("missing", following, seq)]  # the next record moved up one line
    assert report.problems[0].seq_end == seq


def test_an_inserted_copy_is_a_duplicate(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    chain = _chain(lines, 1)
    copied = lines[chain[5]]
    lines.insert(chain[90], copied)
    report = _verify(tmp_path, lines)
    assert _found(report) == [("duplicate", chain[90] + 1, _seq(copied))]


def test_a_line_written_twice_is_a_duplicate(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    index = _chain(lines, 0)[20]
    lines.insert(index + 1, lines[index])
    assert _found(_verify(tmp_path, lines)) == [("duplicate", index + 2, _seq(lines[index]))]


def test_two_swapped_records_are_reordered(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    chain = _chain(lines, 0)
    first, second = chain[30], chain[31]
    lines[first], lines[second] = lines[second], lines[first]
    report = _verify(tmp_path, lines)
    assert _found(report) == [("reordered", second + 1, _seq(lines[second]))]
    assert f"comes after seq {_seq(lines[first])} at" in report.problems[0].message


def test_a_cut_last_line_is_truncated(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    report = _verify(tmp_path, lines)
    assert _found(report) == [("truncated", len(lines), None)]


def test_records_cut_from_the_end_are_a_missing_tail_per_the_checkpoint(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    chain = _chain(lines, 0)
    last_seq = _seq(lines[chain[-1]])
    for index in sorted(chain[-3:], reverse=True):  # the trails go, the final checkpoint stays
        del lines[index]
    report = _verify(tmp_path, lines)
    assert [(p.kind, p.seq, p.seq_end) for p in report.problems] == [("tail_missing", last_seq - 2, last_seq)]
    assert report.problems[0].line == chain[-4] + 1  # reported after the last record that is left


def test_a_cut_file_with_an_outside_copy_of_the_checkpoints(written: list[bytes], tmp_path: Path) -> None:
    """Cut in the middle, the file loses its final checkpoints too; the copy that reached another destination (the
    OTel log exporter's backend, say) still tells that the tail is missing."""
    checkpoints = [line for line in written if b'"record":"gotrails.checkpoint"' in line]
    (tmp_path / "anchors.jsonl").write_bytes(b"".join(checkpoints))
    cut = written[: len(written) * 2 // 3]
    (tmp_path / "trails.jsonl").write_bytes(b"".join(cut))
    alone = verify_files([tmp_path / "trails.jsonl"], KEYS)
    assert alone.ok  # nothing in the cut file itself shows the cut
    report = verify_files([tmp_path / "trails.jsonl", tmp_path / "anchors.jsonl"], KEYS)
    assert sorted({p.kind for p in report.problems}) == ["tail_missing"]
    assert len(report.problems) == 2  # both chains lost their tail
    assert not verify_files([tmp_path / "trails.jsonl"], KEYS, require_final=True).ok


def test_a_record_forged_without_the_key(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    chain = _chain(lines, 0)
    genuine = orjson.loads(lines[chain[50]])
    forged = json.loads(json.dumps(genuine))
    forged["metadata"]["amount"] = 1_000_000
    del forged["integrity"]["hash"]
    forged["integrity"]["hash"] = hmac.new(b"an attacker's own key", canonical(forged), "sha256").hexdigest()
    # Inserted before the genuine record of the same seq, and appended at the end as the chain's next record.
    lines.insert(chain[50], orjson.dumps(forged) + b"\n")
    tail = json.loads(json.dumps(forged))
    tail["integrity"]["seq"] = _seq(lines[chain[-1] + 1]) + 1
    tail["integrity"]["prev"] = orjson.loads(lines[chain[-1] + 1])["integrity"]["hash"]
    lines.append(orjson.dumps(tail) + b"\n")
    report = _verify(tmp_path, lines)
    assert _found(report) == [
        ("forged", chain[50] + 1, genuine["integrity"]["seq"]),
        ("forged", len(lines), tail["integrity"]["seq"]),
    ]
    # A forgery that claims a far-off seq is reported once and leaves the rest of the chain alone.
    far = json.loads(json.dumps(forged))
    far["integrity"]["seq"] = 100_000
    lines = list(written)
    lines.insert(chain[10], orjson.dumps(far) + b"\n")
    assert _found(_verify(tmp_path, lines)) == [("forged", chain[10] + 1, 100_000)]


def test_a_record_rehashed_without_the_key_is_a_downgrade(written: list[bytes], tmp_path: Path) -> None:
    """Someone without the key rewrites a record and recomputes a plain SHA-256 hash for it."""
    lines = list(written)
    chain = _chain(lines, 1)
    record = orjson.loads(lines[chain[60]])
    record["metadata"]["amount"] = 0
    record["integrity"] = {k: v for k, v in record["integrity"].items() if k not in ("hash", "key_id")}
    record["integrity"]["alg"] = "sha256"
    record["integrity"]["hash"] = digest(canonical(record), None)
    lines[chain[60]] = orjson.dumps(record) + b"\n"
    report = _verify(tmp_path, lines)
    kinds = {(p.kind, p.line) for p in report.problems}
    assert ("unkeyed", chain[60] + 1) in kinds  # plain SHA-256 where keys were given
    assert ("broken_link", chain[61] + 1) in kinds  # and the next record no longer links to it


def test_the_wrong_key_is_reported_once(written: list[bytes], tmp_path: Path) -> None:
    report = _verify(tmp_path, list(written), keys={"k1": b"not-the-key-0123456789"})
    assert [p.kind for p in report.problems] == ["wrong_key"]
    assert "'k1'" in report.problems[0].message and report.problems[0].line is not None


def test_a_missing_key_is_reported(written: list[bytes], tmp_path: Path) -> None:
    report = _verify(tmp_path, list(written), keys={})
    assert [p.kind for p in report.problems] == ["missing_key"]


def test_a_modified_checkpoint_is_reported(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    index = next(i for i, line in enumerate(lines) if b'"final":true' in line)
    record = orjson.loads(lines[index])
    record["seq"] += 5
    lines[index] = orjson.dumps(record) + b"\n"
    report = _verify(tmp_path, lines)
    assert _found(report) == [("bad_checkpoint", index + 1, record["seq"])]


def test_non_trail_lines_are_reported_and_skipped(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    lines.insert(3, b"INFO starting worker 2\n")
    lines.insert(10, b'{"level": "info", "msg": "ready"}\n')
    lines.insert(20, b"\n")
    report = _verify(tmp_path, lines)
    assert report.ok
    assert report.skipped_count == 2 and [(line, r) for _, line, r in report.skipped] == [
        (4, "not JSON"),
        (11, "not a trail or checkpoint"),
    ]
    assert "skipped 2 lines that are not trails" in report.to_text()


def test_a_damaged_record_and_a_trail_without_a_block(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    chain = _chain(lines, 0)
    lines[chain[3]] = lines[chain[3]][:-40] + b"\n"  # damaged in place: not JSON any more
    record = orjson.loads(lines[chain[8]])
    del record["integrity"]
    lines[chain[8]] = orjson.dumps(record) + b"\n"
    report = _verify(tmp_path, lines)
    kinds = [(p.kind, p.line) for p in report.problems]
    assert ("unreadable", chain[3] + 1) in kinds and ("unchained", chain[8] + 1) in kinds
    assert ("missing", chain[4] + 1) in kinds and ("missing", chain[9] + 1) in kinds


def _rotated(written: list[bytes], tmp_path: Path, split: int) -> tuple[Path, Path]:
    older, current = tmp_path / "trails.jsonl.1", tmp_path / "trails.jsonl"
    older.write_bytes(b"".join(written[:split]))
    current.write_bytes(b"".join(written[split:]))
    return older, current


def test_rotated_files_given_oldest_first_verify(written: list[bytes], tmp_path: Path) -> None:
    older, current = _rotated(written, tmp_path, len(written) // 2)
    report = verify_files([older, current], KEYS)
    assert report.ok, report.to_text()
    assert all(c.files == [str(older), str(current)] for c in report.chains)


def test_a_gap_at_the_rotation_seam(written: list[bytes], tmp_path: Path) -> None:
    chain = _chain(written, 0)
    split = chain[80] + 1  # the older file ends with this chain's seq 81
    lines = list(written)
    seq = _seq(lines[chain[80]])
    del lines[chain[80]]
    older, current = _rotated(lines, tmp_path, split - 1)
    report = verify_files([older, current], KEYS)
    assert [(p.kind, p.file, p.seq) for p in report.problems] == [("rotation_gap", str(current), seq)]
    assert f"between {older}" in report.problems[0].message


def test_rotated_files_in_the_wrong_order(written: list[bytes], tmp_path: Path) -> None:
    older, current = _rotated(written, tmp_path, len(written) // 2)
    report = verify_files([current, older], KEYS)
    assert {p.kind for p in report.problems} == {"reordered"}
    assert "files must be given oldest first" in report.problems[0].message


def test_missing_older_files(written: list[bytes], tmp_path: Path) -> None:
    _, current = _rotated(written, tmp_path, len(written) // 2)
    report = verify_files([current], KEYS)
    assert {p.kind for p in report.problems} == {"start_missing"}
    assert verify_files([current], KEYS, allow_missing_start=True).ok


def _write(path: Path, records: list[Any]) -> Path:
    """Records as the exporters write them: a stamped trail's bytes as they were hashed, anything else as JSON."""
    path.write_bytes(b"".join(_line(record) for record in records))
    return path


def _line(record: Any) -> bytes:
    data = getattr(record, "data", None)
    return (data if isinstance(data, bytes) else orjson.dumps(record)) + b"\n"


def _stamped(chain: Chain, n: int) -> StampedTrail:
    trail: dict[str, Any] = {"request": {"path": f"/{n}"}, "metadata": {"n": n}}
    return StampedTrail(trail, chain.stamp(trail))


def test_records_after_the_final_checkpoint(tmp_path: Path) -> None:
    chain = Chain(KEY.encode(), "k1")
    records: list[Any] = [_stamped(chain, n) for n in range(3)]
    records.append(chain.checkpoint(final=True))
    records.append(_stamped(chain, 3))  # only someone holding the key can do this
    report = verify_files([_write(tmp_path / "t.jsonl", records)], KEYS)
    assert _found(report) == [("after_final", 5, 4)]


def test_two_valid_records_for_one_seq_conflict_and_checkpoints_disagree(tmp_path: Path) -> None:
    one, other = Chain(KEY.encode(), "k1"), Chain(KEY.encode(), "k1")
    other.chain_id = one.chain_id  # two writers that share a chain id: never the case for gotrails' own chains
    first, second = _stamped(one, 1), _stamped(other, 2)
    records = [first, second, other.checkpoint()]
    report = verify_files([_write(tmp_path / "t.jsonl", records)], KEYS)
    assert _found(report) == [("checkpoint_mismatch", 1, 1), ("conflict", 2, 1)]


def test_a_plain_chain_rewritten_in_the_middle_breaks_the_next_link(tmp_path: Path) -> None:
    chain = Chain()
    records: list[Any] = [_stamped(chain, n) for n in range(4)]
    rewritten = dict(records[1])
    rewritten["metadata"] = {"n": 99}
    del rewritten["integrity"]
    rewritten["integrity"] = {k: v for k, v in records[1]["integrity"].items() if k != "hash"}
    rewritten["integrity"]["hash"] = digest(canonical(rewritten), None)
    records[1] = rewritten
    report = verify_files([_write(tmp_path / "t.jsonl", records)])
    assert _found(report) == [("broken_link", 3, 3)]
    assert "plain SHA-256 chains show damage" in report.to_text()


def test_a_malformed_block(tmp_path: Path) -> None:
    chain = Chain()
    records: list[Any] = [_stamped(chain, n) for n in range(3)]
    broken = json.loads(orjson.dumps(records[2]))
    broken["integrity"]["seq"] = "3"
    records[2] = broken
    report = verify_files([_write(tmp_path / "t.jsonl", records)])
    assert _found(report) == [("malformed", 3, None)]


def test_another_spelling_of_a_hash_is_a_change(written: list[bytes], tmp_path: Path) -> None:
    lines = list(written)
    chain = _chain(lines, 1)
    record = orjson.loads(lines[chain[33]])
    lines[chain[33]] = lines[chain[33]].replace(
        record["integrity"]["hash"].encode(), record["integrity"]["hash"].upper().encode()
    )
    report = _verify(tmp_path, lines)
    assert _found(report) == [("malformed", chain[33] + 1, 34), ("missing", chain[34] + 1, 34)]


def test_the_report_tells_how_much_sampling_left_out(tmp_path: Path) -> None:
    chain = Chain(KEY.encode(), "k1")
    records: list[Any] = [_stamped(chain, n) for n in range(2)]
    records.append(chain.checkpoint(final=True, extra={"sampled_out": {"ratio": 7, "sampler": 2}}))
    report = verify_files([_write(tmp_path / "t.jsonl", records)], KEYS)
    assert report.ok and report.chains[0].sampled_out == {"ratio": 7, "sampler": 2}
    assert "2 trails  (9 sampled out)  closed  OK" in report.to_text()
    assert report.to_json()["chains"][0]["sampled_out"] == {"ratio": 7, "sampler": 2}


def test_every_problem_kind_is_documented() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    for kind in PROBLEM_KINDS:
        assert f"`{kind}`" in readme, kind


# ------------------------------------------------------------------------------------------ 100,000 trails


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """100,000 distinct trails in one HMAC chain, as the processor's stamp makes them and the exporters write them."""
    path = tmp_path_factory.mktemp("large") / "trails.jsonl"
    chain = Chain(KEY.encode(), "k1")
    stream = path.open("ab")
    for n in range(100_000):
        trail = {
            "timestamp": f"2026-11-28T05:{n // 6000 % 60:02d}:{n // 100 % 60:02d}.{n % 1000:03d}Z",
            "trace_id": f"{n:032x}",
            "request_id": f"req-{n}",
            "service": "payment-service",
            "request": {"method": "POST", "path": f"/v1/payments/{n}", "body": {"amount": n * 10, "ok": True}},
            "response": {"status": 201, "body": {"id": f"pay-{n}"}},
            "latency_ms": n % 977 / 7,
            "internal_steps": [{"name": "ValidateRequest", "start_offset_ms": 0.1, "latency_ms": 0.05}],
            "metadata": {"user_id": f"u-{n % 313}"},
            "status": "ok",
        }
        stream.write(chain.stamp(trail) + b"\n")  # one line per trail, as the file exporter appends it
    final = chain.checkpoint(final=True)
    assert final is not None
    stream.write(orjson.dumps(final) + b"\n")
    stream.close()
    yield path


def test_an_untouched_file_of_100000_trails_verifies(large_file: Path) -> None:
    report = verify_files([large_file], KEYS)
    assert report.ok, report.to_text()
    assert report.trails == 100_000 and report.chains[0].closed and report.chains[0].last_seq == 100_000


def test_one_change_among_100000_trails_is_found(large_file: Path, tmp_path: Path) -> None:
    data = large_file.read_bytes()
    target = b'"request_id":"req-73519"'
    start = data.index(target)
    changed = data[:start] + b'"request_id":"req-73510"' + data[start + len(target) :]
    path = tmp_path / "trails.jsonl"
    path.write_bytes(changed)
    report = verify_files([path], KEYS)
    assert _found(report) == [("modified", 73520, 73520)]


# ---------------------------------------------------------------------------------------------------- CLI


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GOTRAILS_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gotrails_otel.cli", "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full,
        check=False,
    )


def test_cli_exit_codes_reports_and_keys(written: list[bytes], tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(written))
    result = _cli("--key", f"k1={KEY}", str(good))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every record and every link verified" in result.stdout and "closed" in result.stdout
    assert _cli(str(good), env={"GOTRAILS_HMAC_KEY": KEY, "GOTRAILS_HMAC_KEY_ID": "k1"}).returncode == 0
    key_file = tmp_path / "k1.key"
    key_file.write_text(KEY + "\n")
    assert _cli("--key-file", f"k1={key_file}", str(good)).returncode == 0
    by_env_file = {"GOTRAILS_HMAC_KEY_FILE": str(key_file), "GOTRAILS_HMAC_KEY_ID": "k1"}
    assert _cli(str(good), env=by_env_file).returncode == 0

    lines = list(written)
    index = _chain(lines, 0)[12]
    lines[index] = lines[index].replace(b'"currency":"IDR"', b'"currency":"EUR"')
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    result = _cli("--key", f"k1={KEY}", str(bad))
    assert result.returncode == 1
    assert f"{bad}:{index + 1} chain " in result.stdout and ": modified: " in result.stdout
    assert result.stdout.rstrip().endswith("FAILED: 1 problem in 1 chain")

    result = _cli("--json", "--key", f"k1={KEY}", str(bad))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["problem_count"] == 1 and report["problems_by_kind"] == {"modified": 1}
    problem = report["problems"][0]
    assert (problem["file"], problem["line"], problem["kind"]) == (str(bad), index + 1, "modified")
    assert len(report["chains"]) == 2 and report["trails"] == 2 * PER_PROCESS

    wrong = _cli("--key", "k1=wrong-key-0123456789", str(good))
    assert wrong.returncode == 1 and "wrong_key" in wrong.stdout

    assert _cli(str(tmp_path / "absent.jsonl")).returncode == 2
    for output in (result.stdout, result.stderr, wrong.stdout, wrong.stderr):
        assert KEY not in output and "wrong-key-0123456789" not in output


def test_cli_never_echoes_a_malformed_key(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"")
    result = _cli("--key", "secret-without-an-id", str(path))
    assert result.returncode == 2 and "ID=KEY" in result.stderr
    assert "secret-without-an-id" not in result.stderr + result.stdout


def test_cli_progress_bar(large_file: Path) -> None:
    result = _cli("--progress", "--key", f"k1={KEY}", str(large_file))
    assert result.returncode == 0, result.stderr
    assert "100,000 trails in 1 chain" in result.stdout
