"""The README's first command: ``gotrails-otel demo``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gotrails_otel.verify import verify_files

from .conftest import validate_trail

pytestmark = pytest.mark.service


def _demo(tmp_path: Path, path_env: str | None = None) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    output = tmp_path / "trails.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GOTRAILS_"))}
    if path_env is not None:
        env["PATH"] = path_env
    script = shutil.which("gotrails-otel") or ""
    command = [script] if script else [sys.executable, "-m", "gotrails_otel.cli"]
    result = subprocess.run(
        [*command, "demo", "--output", str(output)], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    records = [orjson.loads(line) for line in output.read_bytes().splitlines()] if output.exists() else []
    if records:  # the file's hash chain verifies, checkpoints included
        assert verify_files([output]).ok
    return result, [r for r in records if "record" not in r]  # the trails, without the chain's checkpoints


def test_demo_runs_every_scenario_and_writes_valid_trails(tmp_path: Path) -> None:
    result, trails = _demo(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for title in ("a successful payment", "a validation failure", "a failing upstream", "X-Trace-ID"):
        assert title in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    for trail in trails:
        validate_trail(trail)
    requests = [t for t in trails if t["request"].get("path") == "/v1/payments"]
    assert [t["response"]["status"] for t in requests] == [201, 422, 502, 201]
    ok, rejected, failed, flow = requests
    assert [i["type"] for i in ok["integrations"]] == ["database", "cache", "http", "http", "kafka", "grpc"]
    (recorded,) = [i for i in ok["integrations"] if i["name"] == "ledger.record"]  # requests
    assert recorded["request"]["body"]["amount"] == 150000 and recorded["response"]["status"] == 201
    # The ledger (Django on SQLite) made a trail of its own for each successful payment, in the same flow.
    ledger = [t for t in trails if t["request"].get("path") == "/ledger/entries"]
    assert len(ledger) == 2
    assert ledger[0]["otel"]["trace_id"] == ok["otel"]["trace_id"]
    assert ledger[0]["request"]["body"] == recorded["request"]["body"]
    # Django opens a connection per request (CONN_MAX_AGE 0): its set-up statements (PRAGMA ...) come first.
    statements = [i["name"] for i in ledger[0]["integrations"]]
    assert statements[-2:] == ["sqlite.ledger_entry.insert", "sqlite.ledger_entry.select"], statements
    assert set(statements[:-2]) <= {"sqlite.pragma", "sqlite.select"}, statements
    insert = ledger[0]["integrations"][-2]
    assert 150000 in insert["request"]["args"]
    assert [i["name"] for i in ledger[1]["integrations"]] == statements
    assert ledger[1]["trace_id"] == "checkout-flow-0001"
    assert rejected["integrations"] == []
    assert failed["errors"][0]["source"] == "midtrans.charge"
    assert flow["trace_id"] == "checkout-flow-0001"
    raw = b"".join(orjson.dumps(t) for t in trails)
    assert b"4111 1111 1111 1111" not in raw and b"demo-secret-token" not in raw
    assert f"trails written as JSON lines to {tmp_path / 'trails.jsonl'}" in result.stdout


def test_demo_without_redis_skips_it_with_one_line(tmp_path: Path) -> None:
    bin_dir = os.path.dirname(shutil.which("gotrails-otel") or sys.executable)
    result, trails = _demo(tmp_path, path_env=bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("skipped: redis-server is not installed") == 1
    ok = next(t for t in trails if t["request"].get("path") == "/v1/payments")
    assert [i["type"] for i in ok["integrations"]] == ["database", "http", "http", "kafka", "grpc"]


def test_demo_reads_only_whole_lines_while_other_processes_append(tmp_path: Path) -> None:
    """The demo reads the trails file while the ledger's and the UserService's processes append to it: a line caught
    half-written (no newline yet) is left for the next read, not parsed."""
    from gotrails_otel.demo.run import _complete_lines, _next_request_trail

    path = tmp_path / "trails.jsonl"
    whole = orjson.dumps({"entry": {"kind": "http", "name": "POST /v1/payments"}, "request": {"path": "/v1/payments"}})
    path.write_bytes(whole + b"\n" + whole[:40])
    assert _complete_lines(path) == [whole]
    trail, others, seen = _next_request_trail(path, 0, timeout=1)
    assert (trail["request"]["path"], others, seen) == ("/v1/payments", [], 1)
    with pytest.raises(TimeoutError):  # the half line is not read as a trail, however long it stays half
        _next_request_trail(path, 1, timeout=0.2)
    with path.open("ab") as stream:
        stream.write(whole[40:] + b"\n")
    assert _next_request_trail(path, 1, timeout=1)[2] == 2
