"""Sealed trails and the hash chain: sealing happens after the stamp, every exporter receives the same read-only
trail whose bytes are exactly what was hashed, and no exporter can change what another sees or what was hashed."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from opentelemetry.trace import SpanKind

import gotrails_otel as gt
from gotrails_otel.verify import verify_files

from .conftest import TrailHarness

sealed = pytest.importorskip("gotrails_otel.sealed", reason="the sealed trail type lands with the export pipeline")

KEY = "sealed-test-key-0123456789abcdef"


class _Vandal:
    """An exporter that tries to change the trail it was given, at the top and deep inside, then keeps it."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.refused: list[str] = []
        self.changed: list[str] = []

    def export(self, trail: Any) -> None:
        self.received.append(trail)
        attempts = (
            ("set a field", lambda: trail.__setitem__("status", "ok-after-all")),
            ("delete a field", lambda: trail.__delitem__("errors")),
            ("change metadata", lambda: trail["metadata"].__setitem__("amount", 0)),
            ("change the chain", lambda: trail["integrity"].__setitem__("seq", 1)),
            ("append an error", lambda: trail["errors"].append({"source": "x", "message": "y"})),
            ("change a step", lambda: trail["internal_steps"][0].__setitem__("name", "Other")),
        )
        for what, attempt in attempts:
            try:
                attempt()
            except TypeError:
                self.refused.append(what)
            except (KeyError, IndexError):  # a checkpoint has no such field
                continue
            else:
                self.changed.append(what)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def _request(h: TrailHarness, path: str) -> None:
    tracer = h.tracer("opentelemetry.instrumentation.fastapi")
    attributes = {"http.request.method": "POST", "url.path": path, "http.response.status_code": 201}
    with tracer.start_as_current_span(f"POST {path}", kind=SpanKind.SERVER, attributes=attributes):
        gt.set_metadata(amount=1250, currency="IDR")
        gt.record_error("fraud-check", "score unavailable")
        with gt.step("ValidateRequest"):
            pass


def test_no_exporter_can_change_what_another_sees_or_what_was_hashed(make_harness: Any, tmp_path: Path) -> None:
    path = tmp_path / "trails.jsonl"
    h = make_harness(hmac_key=KEY, hmac_key_id="k1", exporters=("file",), file_path=str(path))
    first, second = _Vandal(), _Vandal()
    h.processor.exporter = gt.exporters._MultiExporter([first, gt.FileTrailExporter(path), h.exporter, second])
    for n in range(3):
        _request(h, f"/pay/{n}")
    h.processor.shutdown()

    every = [
        "set a field",
        "delete a field",
        "change metadata",
        "change the chain",
        "append an error",
        "change a step",
    ]
    for vandal in (first, second):
        assert vandal.changed == []
        assert vandal.refused[: len(every) * 3] == every * 3  # every change to the three trails refused
    for a, b in zip(first.received, second.received, strict=True):
        assert a is b or a.data == b.data  # the same sealed trail for every exporter
        assert isinstance(a, Mapping) and isinstance(a, sealed.SealedTrail)
    lines = path.read_bytes().splitlines()
    assert [t.data for t in first.received] == lines  # the file holds exactly the sealed bytes
    for trail in first.received[:3]:
        record = orjson.loads(trail.data)
        block = record["integrity"]
        assert record["status"] == "ok" and record["metadata"]["amount"] == 1250 and block["seq"] >= 1
        unhashed = {**record, "integrity": {k: v for k, v in block.items() if k != "hash"}}
        expected = hmac.new(KEY.encode(), rfc8785.dumps(unhashed), hashlib.sha256).hexdigest()
        assert block["hash"] == expected  # what was hashed is what every exporter got
    assert verify_files([path], {"k1": KEY.encode()}).ok
    # The in-memory exporter hands out fresh plain dicts decoded from the sealed bytes.
    trails = h.exporter.get_finished_trails()
    trails[0]["status"] = "changed by a test"
    assert h.exporter.get_finished_trails()[0]["status"] == "ok"


def test_sealing_happens_after_the_stamp(harness: TrailHarness) -> None:
    received = _Vandal()
    harness.processor.exporter = received
    _request(harness, "/one")
    harness.processor.force_flush()
    (trail,) = received.received
    assert trail["integrity"]["seq"] == 1 and "hash" in trail["integrity"]
    assert orjson.loads(trail.data) == dict(orjson.loads(trail.data))
    assert orjson.loads(trail.data)["integrity"] == {
        k: trail["integrity"][k] for k in ("alg", "chain", "hash", "prev", "seq")
    }
