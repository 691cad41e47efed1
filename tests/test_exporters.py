"""Exporters: stdout, file, OTel logs through a real SDK LoggerProvider, and the default choice."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

import gotrails_otel as gt
from gotrails_otel.exporters import exporter_from_config
from gotrails_otel.integrity import is_checkpoint

from .conftest import TrailHarness, validate_trail
from .forking import fork, requires_fork


def _request(h: TrailHarness, path: str = "/v1/payments") -> None:
    with h.instrumented().fastapi_request("POST", "/v1/payments", path, 201):
        with gt.step("ValidateRequest"):
            pass
        h.instrumented().httpx("POST", "https://api.midtrans.com/v2/charge", 201)


def test_stdout_exporter_writes_one_compact_line_per_trail(harness: TrailHarness) -> None:
    stream = io.BytesIO()
    harness.processor.exporter = gt.StdoutTrailExporter(stream)
    _request(harness, "/one")
    _request(harness, "/two")
    harness.processor.force_flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert all(b"\n" not in line and not line.startswith(b" ") for line in lines)
    trails = [orjson.loads(line) for line in lines]
    for trail in trails:
        validate_trail(trail)
    assert [t["request"]["path"] for t in trails] == ["/one", "/two"]


def test_file_exporter_appends_json_lines(harness: TrailHarness, tmp_path: Path) -> None:
    path = tmp_path / "trails" / "audit.jsonl"
    first = gt.FileTrailExporter(path)
    harness.processor.exporter = first
    _request(harness, "/a")
    harness.processor.force_flush()
    first.shutdown()
    harness.processor.exporter = gt.FileTrailExporter(path)  # a restart appends, it does not truncate
    _request(harness, "/b")
    harness.processor.force_flush()
    trails = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [t["request"]["path"] for t in trails] == ["/a", "/b"]
    with pytest.raises(RuntimeError, match="shut down"):
        first.export(gt.SealedTrail(orjson.dumps(trails[0])))


def test_otel_log_exporter_emits_one_linked_record(harness: TrailHarness) -> None:
    logs = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    harness.processor.exporter = gt.OTelLogTrailExporter(provider)
    _request(harness)
    assert harness.processor.force_flush()
    records = logs.get_finished_logs()
    assert len(records) == 1
    record = records[0].log_record
    body: dict[str, Any] = record.body  # type: ignore[assignment]
    validate_trail(body)
    assert record.event_name == "gotrails.trail"
    assert format(record.trace_id, "032x") == body["otel"]["trace_id"]
    assert format(record.span_id, "016x") == body["otel"]["span_id"]
    assert record.timestamp is not None
    assert abs(record.timestamp // 1_000_000 - _ms_since_epoch(body["timestamp"])) <= 1
    assert record.severity_text == "INFO"
    assert records[0].instrumentation_scope.name == "gotrails_otel"
    assert record.attributes is not None and record.attributes["gotrails.status"] == "ok"
    provider.shutdown()


def _ms_since_epoch(stamp: str) -> int:
    from datetime import datetime

    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def test_exporters_from_config(tmp_path: Path) -> None:
    config = gt.TrailConfig.from_env({"GOTRAILS_EXPORTER": "stdout,file", "GOTRAILS_FILE": str(tmp_path / "t.jsonl")})
    exporter = exporter_from_config(config)
    kinds = sorted(type(e).__name__ for e in exporter.exporters)  # type: ignore[attr-defined]
    assert kinds == ["FileTrailExporter", "StdoutTrailExporter"]
    exporter.shutdown()
    assert isinstance(exporter_from_config(gt.TrailConfig(exporters=("otel",))), gt.OTelLogTrailExporter)


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTRAILS_", "OTEL_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        check=False,
    )


_SCRIPT = """
    import logging
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind
    import gotrails_otel as gt

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    {setup}
    provider = TracerProvider()
    processor = gt.TrailProcessor()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    for path in ("/a", "/b"):
        with tracer.start_as_current_span("GET " + path, kind=SpanKind.SERVER, attributes={{"http.method": "GET"}}):
            pass
    provider.shutdown()
"""


def test_default_without_a_logger_provider_is_stdout_with_one_notice() -> None:
    result = _run(_SCRIPT.format(setup=""))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3  # two trails, then the hash chain's final checkpoint
    for line in lines[:2]:
        validate_trail(orjson.loads(line))
    assert orjson.loads(lines[2])["record"] == "gotrails.checkpoint"
    assert result.stderr.count("no OpenTelemetry SDK LoggerProvider with a logs exporter is configured") == 1


def test_an_sdk_logger_provider_without_exporters_is_not_a_destination() -> None:
    setup = """
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    set_logger_provider(LoggerProvider())  # what the SDK configurator sets up when OTEL_LOGS_EXPORTER is none
    """
    result = _run(_SCRIPT.format(setup=textwrap.indent(textwrap.dedent(setup), "    ")))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3  # the trails (and checkpoint) went to stdout instead of vanishing
    assert "with a logs exporter" in result.stderr


def test_default_with_an_sdk_logger_provider_is_otel_logs() -> None:
    setup = """
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor, InMemoryLogRecordExporter
    import atexit, json
    logs = InMemoryLogRecordExporter()
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    set_logger_provider(lp)
    atexit.register(lambda: print(json.dumps([r.log_record.event_name for r in logs.get_finished_logs()])))
    """
    result = _run(_SCRIPT.format(setup=textwrap.indent(textwrap.dedent(setup), "    ")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '["gotrails.trail", "gotrails.trail", "gotrails.checkpoint"]'
    assert "LoggerProvider" not in result.stderr


def test_invalid_environment_fails_at_startup_naming_the_variable() -> None:
    result = _run(_SCRIPT.format(setup=""), {"GOTRAILS_GRACE_MS": "soon"})
    assert result.returncode != 0
    assert "GOTRAILS_GRACE_MS='soon'" in result.stderr


# ------------------------------------------------------------------------------- processes, pipes, files (#9)

_APP_LINE = re.compile(r"^app-line \d+ \d+ y*$")


def _lines(stdout: bytes) -> tuple[list[dict[str, Any]], list[bytes], list[bytes]]:
    """Trails, application lines and broken lines of a process's output."""
    trails, app, broken = [], [], []
    for line in stdout.split(b"\n"):
        if not line:
            continue
        if line.startswith(b"{"):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
            else:
                if not is_checkpoint(record):  # the hash chain's checkpoints are whole lines too
                    trails.append(record)
                continue
        elif _APP_LINE.match(line.decode("utf-8", "replace")):
            app.append(line)
            continue
        broken.append(line)
    return trails, app, broken


_TRAILS_SCRIPT = """
import os, sys, threading, random
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
import gotrails_otel as gt

provider = TracerProvider()
processor = gt.TrailProcessor(config=gt.TrailConfig(exporters=({exporter!r},), file_path={path!r}, grace_ms=50))
provider.add_span_processor(processor)
tracer = provider.get_tracer("app")

def requests(tag, count, size):
    for n in range(count):
        with tracer.start_as_current_span("GET /", kind=SpanKind.SERVER, attributes={{"http.method": "GET"}}):
            gt.set_metadata(tag=tag, n=n, blob="z" * size)

{body}
"""


def _run_script(code: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTRAILS_", "OTEL_"))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout, env=env, check=False)


def test_application_prints_never_splice_into_stdout_trail_lines() -> None:
    body = """
stop = threading.Event()
def app(tid):
    i = 0
    while not stop.is_set():
        print(f"app-line {tid} {i} " + "y" * random.randint(20, 3000))
        i += 1
threads = [threading.Thread(target=app, args=(t,)) for t in range(3)]
for t in threads: t.start()
requests("main", 300, 2000)
processor.force_flush()
stop.set()
for t in threads: t.join()
processor.shutdown()
"""
    result = _run_script(_TRAILS_SCRIPT.format(exporter="stdout", path=None, body=body))
    assert result.returncode == 0, result.stderr.decode()
    trails, app, broken = _lines(result.stdout)
    # print() writes its text and its newline in two calls, so the application's own threads can split each
    # other's lines (with or without gotrails); a trail line is never part of a broken line.
    assert [line for line in broken if b'"timestamp"' in line] == []
    assert len(trails) == 300 and len(app) > 300


@requires_fork
def test_forked_workers_sharing_stdout_keep_lines_whole_up_to_pipe_buf() -> None:
    body = """
import select
size = select.PIPE_BUF - 1200  # a trail line shorter than PIPE_BUF: one write, never interleaved
pids = []
for worker in range(2):
    pid = os.fork()
    if pid == 0:
        requests(f"w{worker}", 80, size)
        processor.shutdown()
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""
    result = _run_script(_TRAILS_SCRIPT.format(exporter="stdout", path=None, body=body))
    assert result.returncode == 0, result.stderr.decode()
    trails, _, broken = _lines(result.stdout)
    assert broken == []
    assert sorted(t["metadata"]["tag"] for t in trails) == ["w0"] * 80 + ["w1"] * 80
    assert max(len(orjson.dumps(t)) for t in trails) < 4096


@requires_fork
def test_forked_workers_appending_large_trails_to_one_file_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "trails.jsonl"
    body = """
pids = []
for worker in range(2):
    pid = os.fork()
    if pid == 0:
        requests(f"w{worker}", 40, 100_000)
        processor.shutdown()
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""
    result = _run_script(_TRAILS_SCRIPT.format(exporter="file", path=str(path), body=body))
    assert result.returncode == 0, result.stderr.decode()
    lines = path.read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is one whole record
    trails = [record for record in records if not is_checkpoint(record)]
    assert sorted(t["metadata"]["tag"] for t in trails) == ["w0"] * 40 + ["w1"] * 40
    assert min(len(orjson.dumps(trail)) for trail in trails) > 16_000


def test_file_exporter_reopens_a_moved_or_deleted_file(harness: TrailHarness, tmp_path: Path) -> None:
    path = tmp_path / "trails.jsonl"
    harness.processor.exporter = gt.FileTrailExporter(path)
    _request(harness, "/a")
    assert harness.processor.force_flush()
    os.rename(path, tmp_path / "trails.jsonl.1")  # what logrotate does
    _request(harness, "/b")
    assert harness.processor.force_flush()
    os.unlink(path)  # an operator deletes it
    _request(harness, "/c")
    assert harness.processor.force_flush()

    def paths(file: Path) -> list[str]:
        return [orjson.loads(line)["request"]["path"] for line in file.read_bytes().splitlines()]

    rotated, current = paths(tmp_path / "trails.jsonl.1"), paths(path)
    assert rotated == ["/a"] and current == ["/c"]
    # "/b" went to the file that was then deleted: it was at the path when it was written.


def test_file_exporter_rotates_by_size_with_logrotate_names(harness: TrailHarness, tmp_path: Path) -> None:
    probe = tmp_path / "probe.jsonl"
    harness.processor.exporter = gt.FileTrailExporter(probe)
    _request(harness, "/r00")
    assert harness.processor.force_flush()
    line = probe.stat().st_size  # trails of this shape have (nearly) this size
    path = tmp_path / "trails.jsonl"
    harness.processor.exporter = gt.FileTrailExporter(path, max_bytes=3 * line + line // 2, backups=2)
    for n in range(1, 13):
        _request(harness, f"/r{n:02d}")
    assert harness.processor.force_flush()
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("trails.jsonl"))
    assert files == ["trails.jsonl", "trails.jsonl.1", "trails.jsonl.2", "trails.jsonl.lock"]
    assert all((tmp_path / name).stat().st_size <= 3 * line + line // 2 for name in files)
    order = []
    for name in ["trails.jsonl.2", "trails.jsonl.1", "trails.jsonl"]:  # oldest first
        order += [orjson.loads(text)["request"]["path"] for text in (tmp_path / name).read_bytes().splitlines()]
    assert order == [f"/r{n:02d}" for n in range(4, 13)]  # the newest 9, in order; the oldest rotated away


@requires_fork
def test_several_processes_rotating_one_file_lose_and_break_no_line(tmp_path: Path) -> None:
    path = tmp_path / "trails.jsonl"
    body = f"""
processor.exporter = gt.FileTrailExporter({str(path)!r}, max_bytes=40_000, backups=500)
pids = []
for worker in range(3):
    pid = os.fork()
    if pid == 0:
        requests(f"w{{worker}}", 200, 500)
        processor.shutdown()
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""
    result = _run_script(_TRAILS_SCRIPT.format(exporter="file", path=str(path), body=body))
    assert result.returncode == 0, result.stderr.decode()
    files = [p for p in tmp_path.iterdir() if p.name.startswith("trails.jsonl") and not p.name.endswith(".lock")]
    assert len(files) > 10
    suffixes = sorted(int(p.name.rsplit(".", 1)[1]) for p in files if p.name != "trails.jsonl")
    assert suffixes == list(range(1, len(files)))  # path, path.1 … path.N without gaps
    tags = []
    for file in files:
        data = file.read_bytes()
        lines = data.splitlines()
        # Each process checks the size before its write: a file may go past the limit by a line per process.
        assert len(data) <= 40_000 + 3 * max(len(line) + 1 for line in lines)
        tags += [record["metadata"]["tag"] for record in map(orjson.loads, lines) if not is_checkpoint(record)]
    assert sorted(tags) == ["w0"] * 200 + ["w1"] * 200 + ["w2"] * 200


class _BlockingStream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, data: Any) -> int:
        self.entered.set()
        self.gate.wait()
        return super().write(data)


@requires_fork
def test_fork_during_an_export_leaves_no_exporter_lock_held(harness: TrailHarness, tmp_path: Path) -> None:
    stream = _BlockingStream()
    harness.processor.exporter = gt.StdoutTrailExporter(stream)
    _request(harness, "/parent")
    assert stream.entered.wait(5)  # the export thread is inside the exporter, holding its lock
    out = tmp_path / "child.json"
    pid = fork()
    if pid == 0:  # child
        code = 1
        try:
            stream.gate.set()
            stream.seek(0)
            stream.truncate()
            _request(harness, "/child")
            flushed = harness.processor.force_flush(3000)
            paths = [orjson.loads(line)["request"]["path"] for line in stream.getvalue().splitlines()]
            out.write_bytes(orjson.dumps({"flushed": flushed, "paths": paths}))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    stream.gate.set()
    assert os.waitstatus_to_exitcode(status) == 0
    assert orjson.loads(out.read_bytes()) == {"flushed": True, "paths": ["/child"]}
    assert harness.processor.force_flush(3000)


def test_import_and_construction_work_without_register_at_fork() -> None:
    code = """
import os
del os.register_at_fork, os.fork  # as on Windows
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
import gotrails_otel as gt
exporter = gt.InMemoryTrailExporter()
provider = TracerProvider()
provider.add_span_processor(gt.TrailProcessor(exporter, gt.TrailConfig()))
with provider.get_tracer("x").start_as_current_span("GET /", kind=SpanKind.SERVER, attributes={"http.method": "GET"}):
    pass
provider.shutdown()
print(len(exporter.get_finished_trails()))
"""
    result = _run_script(code)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() == b"1"


# ----------------------------------------------------------------------------------------------- sealed trails


def test_every_exporter_gets_the_same_read_only_sealed_trail(harness: TrailHarness) -> None:
    seen: list[gt.SealedTrail] = []

    class Keep(gt.InMemoryTrailExporter):
        def export(self, trail: gt.SealedTrail) -> None:
            seen.append(trail)
            super().export(trail)

    keep = Keep()
    harness.processor.exporter = keep
    _request(harness, "/sealed")
    assert harness.processor.force_flush()
    (trail,) = seen
    assert isinstance(trail, gt.SealedTrail)
    assert trail.data == orjson.dumps(orjson.loads(trail.data)) and not trail.data.endswith(b"\n")
    assert trail["request"]["path"] == "/sealed" and trail == orjson.loads(trail.data)
    for change in (
        lambda: trail.__setitem__("status", "ok"),
        lambda: trail["request"].__setitem__("path", "/x"),
        lambda: trail["internal_steps"].append({}),
        lambda: trail["internal_steps"][0].update(name="x"),
        lambda: setattr(trail, "data", b"{}"),
    ):
        with pytest.raises(TypeError):
            change()
    fresh = keep.get_finished_trails()[0]
    fresh["request"]["path"] = "/changed"  # a plain dict of its own: the next call decodes again
    assert keep.get_finished_trails()[0]["request"]["path"] == "/sealed"
    assert type(fresh) is dict and type(fresh["internal_steps"]) is list


def test_queue_depths_and_drops_are_metrics(make_harness: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    h = make_harness()
    processor = gt.TrailProcessor(_HangingExporter(), gt.TrailConfig(export_queue_size=5), meter_provider=meters)
    h.processor.shutdown()
    h.processor = processor
    from .conftest import _SWITCH

    _SWITCH.target = processor
    try:
        _request(h, "/a")
        for n in range(20):
            _request(h, f"/q{n}")
        deadline = time.monotonic() + 5
        while processor.stats().get("trails.complete", 0) < 21 and time.monotonic() < deadline:
            time.sleep(0.01)
        points = {}
        for resource_metrics in reader.get_metrics_data().resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        points[(metric.name, tuple(sorted(point.attributes.items())))] = point.value
        assert points[("gotrails.queue.depth", (("queue", "export"),))] >= 4  # one may be in the exporter
        assert points[("gotrails.queue.bytes", (("queue", "export"),))] > 0
        assert points[("gotrails.dropped", (("reason", "export_queue_full"), ("what", "trails")))] >= 10
        assert points[("gotrails.trails", (("reason", "complete"),))] >= 21
    finally:
        processor.shutdown(timeout_millis=100)
        _HangingExporter.gate.set()


class _HangingExporter(gt.InMemoryTrailExporter):
    gate = threading.Event()

    def export(self, trail: gt.SealedTrail) -> None:
        self.gate.wait(10)


_AT_EXIT = """
import atexit, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
import gotrails_otel as gt

provider = TracerProvider()  # shuts its processors down at exit (an atexit handler)
provider.add_span_processor(gt.TrailProcessor(gt.FileTrailExporter(sys.argv[1]), gt.TrailConfig()))
tracer = provider.get_tracer("x")
{before}

def last_request() -> None:  # runs before the provider's handler: atexit is last in, first out
    with tracer.start_as_current_span("GET /late", kind=SpanKind.SERVER, attributes={{"http.method": "GET"}}):
        gt.set_metadata(order="late")

atexit.register(last_request)
"""


@pytest.mark.parametrize("threads_before_exit", [False, True], ids=["no-thread-yet", "threads-running"])
def test_a_trail_made_while_the_interpreter_exits_is_exported_without_a_traceback(
    tmp_path: Path, threads_before_exit: bool
) -> None:
    # Python 3.12+ refuses new threads once atexit handlers run: a process whose gotrails threads never started (a
    # gunicorn --preload master) must still shut down cleanly and export what it holds, on the exiting thread.
    before = (
        'with tracer.start_as_current_span("GET /early", kind=SpanKind.SERVER, attributes={"http.method": "GET"}):\n'
        '    gt.set_metadata(order="early")'
        if threads_before_exit
        else ""
    )
    out = tmp_path / "trails.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTRAILS_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-c", _AT_EXIT.format(before=before), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    trails = [json.loads(line) for line in out.read_text().splitlines() if '"gotrails.checkpoint"' not in line]
    orders = [t["metadata"]["order"] for t in trails]
    assert orders == (["early", "late"] if threads_before_exit else ["late"])
    assert all(t["complete"] for t in trails)


def test_no_thread_at_all_still_exports_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The same refusal, simulated on every Python: each gotrails thread fails to start, as at interpreter exit.
    real_start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name.startswith("gotrails-"):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    exporter = gt.InMemoryTrailExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(gt.TrailProcessor(exporter, gt.TrailConfig()))
    tracer = provider.get_tracer("x")
    for path in ("/a", "/b"):
        with tracer.start_as_current_span(f"GET {path}", kind=SpanKind.SERVER, attributes={"http.method": "GET"}):
            gt.set_metadata(path=path)
    assert list(exporter.get_finished_trails()) == []  # nothing ran: no thread
    provider.shutdown()
    assert [t["metadata"]["path"] for t in exporter.get_finished_trails()] == ["/a", "/b"]
