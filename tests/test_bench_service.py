"""The web-service benchmark still runs: a few requests per framework and setup (no timing is asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_service.py"


@pytest.mark.service
def test_bench_service_smoke(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed on this machine")
    raw = tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--smoke-requests", "20", "--json", str(raw)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = json.loads(raw.read_text())
    assert sorted((r["framework"], r["setup"]) for r in runs) == sorted(
        (framework, setup) for framework in ("fastapi", "flask") for setup in ("none", "otel", "gotrails")
    )
    for run in runs:
        assert run["errors"] == 0, run
        assert run["requests"] == 20, run
        assert run["cpu_seconds"] >= 0, run  # 20 requests may stay below the OS's 10 ms accounting tick
        if run["setup"] == "gotrails":
            # bench_service checked each trail file: one trail per request, body captured, card number masked
            assert run["trails"] == run["completed_total"], run
    assert any(run["cpu_seconds"] > 0 for run in runs), runs
    assert "gotrails CPU/request as a share of what OTel adds" in done.stdout
