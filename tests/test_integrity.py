"""The hash chain: RFC 8785 canonical form, the integrity block, HMAC keys that never leak, a new chain after fork,
checkpoints (periodic, final, with what could not be exported), and seq order equal to export order."""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind

import gotrails_otel as gt
from gotrails_otel import ConfigError, TrailConfig
from gotrails_otel.integrity import GENESIS, Chain, canonical, digest
from gotrails_otel.verify import verify_files

from .conftest import TrailHarness, validate_trail
from .forking import fork, requires_fork

KEY = "k3y-for-tests-0123456789abcdef"  # a test key: it must never appear in any output


def _request(h: TrailHarness, path: str = "/v1/payments", **metadata: Any) -> None:
    tracer = h.tracer("opentelemetry.instrumentation.fastapi")
    attributes = {"http.request.method": "POST", "url.path": path, "http.response.status_code": 201}
    with tracer.start_as_current_span(f"POST {path}", kind=SpanKind.SERVER, attributes=attributes), gt.step("Check"):
        gt.set_metadata(**metadata)


def _unhashed(trail: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(trail))
    del copy["integrity"]["hash"]
    return copy


# ------------------------------------------------------------------------------------------ canonical form

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
_EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 100.0, 1e15, 1e16, 1e21, 1e-5, 1e-6, 1e-7, 5e-324, 1.7976931348623157e308, 0.1]


@given(_JSON)
@settings(max_examples=600, deadline=None)
def test_canonical_equals_the_rfc8785_reference(value: Any) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 5_000, 65_536])
def test_digest_is_sha256_and_hmac_sha256_of_the_whole_data_whatever_its_size(size: int) -> None:
    """The digest is fed in pieces (so that hashlib keeps the GIL): the result is the one-shot hash all the same."""
    data, key = os.urandom(size), os.urandom(32)
    assert digest(data, None) == hashlib.sha256(data).hexdigest()
    assert digest(data, key) == hmac.digest(key, data, "sha256").hex()


@pytest.mark.parametrize("number", _EDGE_FLOATS)
def test_canonical_numbers_are_written_as_ecmascript_writes_them(number: float) -> None:
    document = {"a": number, "b": [number], "c": {"d": number}}
    assert canonical(document) == rfc8785.dumps(document)


def test_canonical_sorts_keys_by_utf16_code_units() -> None:
    document = {"\ue000": 1, "\U0001f600": 2, "a": 3}  # code point order and UTF-16 order differ here
    assert canonical(document) == rfc8785.dumps(document) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()


def test_canonical_refuses_what_rfc8785_cannot_represent() -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical({"offset": 2**60})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical({"text": "\ud800"})


def test_non_finite_floats_are_null_as_every_exporter_writes_them() -> None:
    for document in ({"x": float("nan")}, {"x": float("inf"), "y": 1.0}, [float("-inf")]):
        assert canonical(document) == orjson.dumps(document, option=orjson.OPT_SORT_KEYS).replace(b"1.0", b"1")


# ---------------------------------------------------------------------------------------------- the block


def test_every_trail_links_to_the_one_before(harness: TrailHarness) -> None:
    for n in range(5):
        _request(harness, f"/p/{n}")
    trails = harness.trails(5)
    chain = trails[0]["integrity"]["chain"]
    previous = GENESIS
    for seq, trail in enumerate(trails, start=1):
        block = trail["integrity"]
        assert block["chain"] == chain and block["seq"] == seq and block["prev"] == previous
        assert block["alg"] == "sha256" and "key_id" not in block
        # The hash covers the whole trail except integrity.hash, in RFC 8785 form.
        assert block["hash"] == hashlib.sha256(rfc8785.dumps(_unhashed(trail))).hexdigest()
        previous = block["hash"]


def test_hmac_chain_with_key_id(make_harness: Any) -> None:
    h = make_harness(hmac_key=KEY, hmac_key_id="2026-11")
    _request(h)
    trail = h.one()
    block = trail["integrity"]
    assert block["alg"] == "hmac-sha256" and block["key_id"] == "2026-11"
    expected = hmac.new(KEY.encode(), rfc8785.dumps(_unhashed(trail)), "sha256").hexdigest()
    assert block["hash"] == expected
    assert block["hash"] != hashlib.sha256(rfc8785.dumps(_unhashed(trail))).hexdigest()


def test_the_stamped_bytes_are_the_canonical_form_of_the_stamped_trail() -> None:
    chain = Chain(KEY.encode(), "k1")
    trail: dict[str, Any] = {"b": [1.5, 2.0, "x"], "a": {"z": None, "y": "ünï"}, "request": {"n": 10}}
    line = chain.stamp(trail)
    assert line == rfc8785.dumps(trail)  # with integrity.hash in its sorted place
    assert orjson.loads(line) == trail


def test_integers_beyond_2_53_become_strings_before_hashing() -> None:
    chain = Chain()
    trail: dict[str, Any] = {"response": {"offset": 2**60, "small": 7, "flag": True}}
    line = chain.stamp(trail)
    assert trail["response"] == {"offset": str(2**60), "small": 7, "flag": True}
    assert orjson.loads(line)["response"]["offset"] == "1152921504606846976"


def test_a_trail_that_cannot_be_stamped_leaves_the_chain_unchanged() -> None:
    chain = Chain()
    trail: dict[str, Any] = {"text": "x", "bad": {1: "an integer key: no canonical JSON form"}}
    with pytest.raises(rfc8785.CanonicalizationError):
        chain.stamp(trail)
    assert "integrity" not in trail and chain.head == (0, GENESIS)


def test_a_trail_that_cannot_be_stamped_is_exported_without_a_link_and_counted(make_harness: Any) -> None:
    def misbehaving(trail: Any) -> None:  # a sampler must not change the trail; this one does, for the test
        if trail["entry"]["name"] == "POST /x":
            trail["metadata"]["bad"] = {1: "an integer key: no canonical JSON form"}
        return None

    h = make_harness(sampler=misbehaving)
    _request(h, "/x")
    _request(h, "/next")
    trails = h.trails(2)
    assert "integrity" not in trails[0] and "bad" in trails[0]["metadata"]
    assert trails[1]["integrity"]["seq"] == 1  # the chain did not skip a seq
    assert h.processor.stats()["failures.integrity"] == 1


def test_stamped_trails_match_the_schema_and_a_broken_block_does_not(make_harness: Any) -> None:
    h = make_harness(hmac_key=KEY)
    _request(h)
    trail = h.one()
    validate_trail(trail)
    validator = jsonschema.Draft202012Validator(gt.trail_schema())
    for change in (
        lambda b: b.pop("hash"),
        lambda b: b.pop("key_id"),
        lambda b: b.update(seq=0),
        lambda b: b.update(prev="x"),
        lambda b: b.update(alg="md5"),
        lambda b: b.update(extra=1),
    ):
        broken = json.loads(json.dumps(trail))
        change(broken["integrity"])
        assert not validator.is_valid(broken)
    unkeyed = json.loads(json.dumps(trail))
    unkeyed["integrity"]["alg"] = "sha256"
    assert not validator.is_valid(unkeyed)  # key_id only with an HMAC


def test_integrity_off(make_harness: Any) -> None:
    h = make_harness(integrity=False)
    _request(h)
    assert "integrity" not in h.one()
    h.processor.shutdown()
    assert h.exporter.get_finished_records() == h.exporter.get_finished_trails()


def test_seq_order_is_export_order_under_concurrent_requests(harness: TrailHarness) -> None:
    def worker(n: int) -> None:
        for i in range(25):
            _request(harness, f"/w/{n}/{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trails = harness.trails(200)
    assert [t["integrity"]["seq"] for t in trails] == list(range(1, 201))
    assert all(b["integrity"]["prev"] == a["integrity"]["hash"] for a, b in itertools.pairwise(trails))


def test_the_file_holds_exactly_the_bytes_that_were_hashed(harness: TrailHarness, tmp_path: Path) -> None:
    path = tmp_path / "trails.jsonl"
    harness.processor.exporter = gt.FileTrailExporter(path)
    _request(harness, "/a", amount=100.0, note="ä")
    harness.processor.force_flush()
    line = path.read_bytes().splitlines()[0]
    trail = orjson.loads(line)
    block = trail["integrity"]
    hashed = line.replace(b'"hash":"' + block["hash"].encode() + b'",', b"")
    assert hashed == rfc8785.dumps(_unhashed(trail))
    assert hashlib.sha256(hashed).hexdigest() == block["hash"]


# ------------------------------------------------------------------------------------------ keys never leak


def test_the_key_never_appears_in_output_repr_logs_or_errors(
    make_harness: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gotrails_otel")
    stream = io.BytesIO()
    h = make_harness(hmac_key=KEY, hmac_key_id="k1", checkpoint_interval_s=0.05)
    h.processor.exporter = gt.StdoutTrailExporter(stream)
    _request(h, "/a")
    time.sleep(0.2)
    h.processor.shutdown()
    output = stream.getvalue()
    assert b"gotrails.checkpoint" in output and b'"key_id":"k1"' in output
    config = h.processor.config
    texts = [output.decode(), repr(config), str(config), repr(h.processor.chain), str(h.processor.stats())]
    texts.append(caplog.text)
    for short in ("short", b"short"):
        with pytest.raises(ConfigError) as raised:
            TrailConfig(hmac_key=short)
        texts.append(str(raised.value))
    with pytest.raises(ConfigError) as from_env:
        TrailConfig.from_env({"GOTRAILS_HMAC_KEY": "tiny-secret"})
    texts.append(str(from_env.value))
    assert "GOTRAILS_HMAC_KEY" in str(from_env.value)
    for text in texts:
        assert KEY not in text and "tiny-secret" not in text and "short" not in text.replace("shorter", "")


def test_the_key_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_bytes(KEY.encode() + b"\n")
    config = TrailConfig.from_env({"GOTRAILS_HMAC_KEY_FILE": str(key_file), "GOTRAILS_HMAC_KEY_ID": "k1"})
    assert config.hmac_key == KEY.encode()
    chain = Chain.from_config(config)
    assert chain is not None and chain.alg == "hmac-sha256"
    trail: dict[str, Any] = {"a": 1}
    chain.stamp(trail)
    assert trail["integrity"]["hash"] == hmac.new(KEY.encode(), rfc8785.dumps(_unhashed(trail)), "sha256").hexdigest()
    with pytest.raises(ConfigError, match="GOTRAILS_HMAC_KEY_FILE") as raised:
        TrailConfig.from_env({"GOTRAILS_HMAC_KEY_FILE": str(tmp_path / "absent.key")})
    assert "No such file" in str(raised.value)
    short = tmp_path / "short.key"
    short.write_bytes(b"tiny-secret\n")
    with pytest.raises(ConfigError) as too_short:
        TrailConfig.from_env({"GOTRAILS_HMAC_KEY_FILE": str(short)})
    assert "GOTRAILS_HMAC_KEY_FILE" in str(too_short.value) and "tiny-secret" not in str(too_short.value)


def test_key_settings_from_the_environment() -> None:
    config = TrailConfig.from_env(
        {
            "GOTRAILS_HMAC_KEY": KEY,
            "GOTRAILS_HMAC_KEY_ID": "2026-q4",
            "GOTRAILS_CHECKPOINT_INTERVAL_S": "2.5",
            "GOTRAILS_INTEGRITY": "true",
        }
    )
    assert config.hmac_key == KEY and config.hmac_key_id == "2026-q4" and config.checkpoint_interval_s == 2.5
    assert TrailConfig().integrity and TrailConfig().checkpoint_interval_s == 10.0
    assert not TrailConfig.from_env({"GOTRAILS_INTEGRITY": "false"}).integrity
    with pytest.raises(ConfigError, match="GOTRAILS_HMAC_KEY_ID"):
        TrailConfig.from_env({"GOTRAILS_HMAC_KEY_ID": "bad id!"})
    with pytest.raises(ConfigError, match="GOTRAILS_CHECKPOINT_INTERVAL_S"):
        TrailConfig.from_env({"GOTRAILS_CHECKPOINT_INTERVAL_S": "-1"})


# ----------------------------------------------------------------------------------------------- fork


@requires_fork
def test_a_forked_child_starts_a_new_chain() -> None:
    chain = Chain(KEY.encode(), "k1")
    chain.stamp({"n": 1})
    chain.stamp({"n": 2})
    read, write = os.pipe()
    pid = fork()
    if pid == 0:  # the child: report its first stamp and exit at once
        try:
            trail: dict[str, Any] = {"n": 3}
            chain.stamp(trail)
            os.write(write, json.dumps(trail["integrity"]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as stream:
        child = json.loads(stream.read())
    os.waitpid(pid, 0)
    parent: dict[str, Any] = {"n": 3}
    chain.stamp(parent)
    assert child["chain"] != parent["integrity"]["chain"]
    assert (child["seq"], child["prev"]) == (1, GENESIS)
    assert parent["integrity"]["seq"] == 3


_PRELOAD = """
import os, sys, warnings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
import gotrails_otel as gt

warnings.filterwarnings("ignore", r".*use of fork\\(\\) may lead to deadlocks", DeprecationWarning)  # expected here

provider = TracerProvider()
provider.add_span_processor(gt.TrailProcessor(config=gt.TrailConfig.from_env()))
tracer = provider.get_tracer("opentelemetry.instrumentation.wsgi")

def request(path):
    with tracer.start_as_current_span("GET " + path, kind=SpanKind.SERVER, attributes={"http.method": "GET"}):
        pass

request("/parent-before-fork")
provider.force_flush()
children = []
for n in range(2):  # a pre-forking server: the workers serve requests after fork()
    pid = os.fork()
    if pid == 0:
        for i in range(3):
            request(f"/child-{n}/{i}")
        provider.shutdown()
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
request("/parent-after-fork")
provider.shutdown()
"""


@requires_fork
def test_each_forked_worker_writes_its_own_chain_to_the_shared_file(tmp_path: Path) -> None:
    path = tmp_path / "trails.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTRAILS_", "OTEL_"))}
    env.update(GOTRAILS_EXPORTER="file", GOTRAILS_FILE=str(path), GOTRAILS_HMAC_KEY=KEY, GOTRAILS_HMAC_KEY_ID="k1")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PRELOAD)], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    report = verify_files([path], {"k1": KEY.encode()}, require_final=True)
    assert report.ok, report.to_text()
    by_pid = {c.pid: c for c in report.chains}
    assert len(by_pid) == 3 and all(c.closed for c in report.chains)
    assert sorted(c.records for c in report.chains) == [2, 3, 3]  # the parent's chain goes on across the forks


# ---------------------------------------------------------------------------------------------- checkpoints


def _signature_ok(record: dict[str, Any], key: bytes | None) -> bool:
    body = {k: v for k, v in record.items() if k != "signature"}
    return bool(digest(rfc8785.dumps(body), key) == record["signature"])


def test_periodic_checkpoints_anchor_the_head_and_stop_when_idle(make_harness: Any) -> None:
    h = make_harness(hmac_key=KEY, hmac_key_id="k1", checkpoint_interval_s=0.2)
    _request(h, "/a")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [r for r in h.exporter.get_finished_records() if "record" in r]:
        time.sleep(0.02)
    records = h.exporter.get_finished_records()
    trail, checkpoint = records
    assert checkpoint["record"] == "gotrails.checkpoint" and checkpoint["final"] is False
    assert (checkpoint["chain"], checkpoint["seq"], checkpoint["hash"]) == (
        trail["integrity"]["chain"],
        1,
        trail["integrity"]["hash"],
    )
    assert checkpoint["alg"] == "hmac-sha256" and checkpoint["key_id"] == "k1" and checkpoint["pid"] == os.getpid()
    assert _signature_ok(checkpoint, KEY.encode()) and not _signature_ok(checkpoint, None)
    time.sleep(0.6)  # idle: nothing new to anchor, so no new checkpoint
    assert len(h.exporter.get_finished_records()) == 2
    _request(h, "/b")
    _request(h, "/c")
    h.processor.shutdown()
    records = h.exporter.get_finished_records()
    final = records[-1]
    assert final["final"] is True and final["seq"] == 3 and final["hash"] == records[-2]["integrity"]["hash"]
    assert _signature_ok(final, KEY.encode())


def test_interval_zero_checkpoints_only_at_shutdown(make_harness: Any) -> None:
    h = make_harness(checkpoint_interval_s=0)
    _request(h)
    h.settle(0.3)
    assert [r for r in h.exporter.get_finished_records() if "record" in r] == []
    h.processor.shutdown()
    kinds = [r.get("record") for r in h.exporter.get_finished_records()]
    assert kinds == [None, "gotrails.checkpoint"]


def test_a_processor_without_trails_emits_no_checkpoint(make_harness: Any) -> None:
    h = make_harness()
    h.processor.shutdown()
    assert h.exporter.get_finished_records() == []


class _FailOnce:
    """A file exporter whose write of the trail for ``path`` fails (a full disk, say)."""

    def __init__(self, target: Path, path: str) -> None:
        self.inner = gt.FileTrailExporter(target)
        self.path = path

    def export(self, trail: dict[str, Any]) -> None:
        if trail.get("request", {}).get("path") == self.path:
            raise OSError("no space left on device")
        self.inner.export(trail)

    def shutdown(self) -> None:
        self.inner.shutdown()


def test_a_trail_that_could_not_be_exported_is_listed_in_the_next_checkpoint(
    harness: TrailHarness, tmp_path: Path
) -> None:
    target = tmp_path / "trails.jsonl"
    harness.processor.exporter = _FailOnce(target, "/b")
    for path in ("/a", "/b", "/c"):
        _request(harness, path)
    harness.processor.shutdown()
    checkpoint = orjson.loads(target.read_bytes().splitlines()[-1])
    assert checkpoint["lost"] == [[2, 2]] and checkpoint["seq"] == 3
    report = verify_files([target])
    assert [(p.kind, p.seq, p.line) for p in report.problems] == [("lost", 2, 2)]
    assert harness.processor.stats()["failures.export"] == 1


# ------------------------------------------------------------------------------------- the OTel bridge


def _bridge_pipeline(config: TrailConfig) -> tuple[Any, gt.InMemoryTrailExporter, Any]:
    """A provider of its own with a trail processor and an in-memory span exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    trails = gt.InMemoryTrailExporter()
    provider.add_span_processor(gt.TrailProcessor(trails, config))
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider, trails, spans


def test_metadata_goes_on_the_root_span_masked_while_the_request_runs() -> None:
    provider, trails, spans = _bridge_pipeline(TrailConfig(metadata_on_span=True))
    tracer = provider.get_tracer("opentelemetry.instrumentation.fastapi")
    attributes = {"http.request.method": "POST", "url.path": "/pay"}
    with tracer.start_as_current_span("POST /pay", kind=SpanKind.SERVER, attributes=attributes) as root:
        with tracer.start_as_current_span("Charge"):
            gt.set_metadata(user_id="u-123", attempt=2, tags=["a", "b"], card={"number": "4111111111111111"})
            gt.set_metadata(api_token="tok-SECRET-123", note=None)
        seen_while_running = dict(root.attributes or {})  # type: ignore[attr-defined]
    provider.shutdown()
    (trail,) = trails.get_finished_trails()
    exported = next(s for s in spans.get_finished_spans() if s.name == "POST /pay")
    attrs = dict(exported.attributes or {})
    assert seen_while_running["gotrails.metadata.user_id"] == "u-123"
    assert attrs["gotrails.metadata.user_id"] == "u-123" and attrs["gotrails.metadata.attempt"] == 2
    assert tuple(attrs["gotrails.metadata.tags"]) == ("a", "b")  # type: ignore[arg-type]
    assert attrs["gotrails.metadata.api_token"] == "***"  # masked as in the trail
    assert json.loads(str(attrs["gotrails.metadata.card"])) == trail["metadata"]["card"]
    text = json.dumps({k: str(v) for k, v in attrs.items()})
    assert "4111111111111111" not in text and "tok-SECRET-123" not in text
    assert "gotrails.metadata.note" not in attrs
    assert trail["metadata"]["user_id"] == "u-123"


def test_metadata_stays_off_the_span_by_default() -> None:
    provider, trails, spans = _bridge_pipeline(TrailConfig())
    tracer = provider.get_tracer("opentelemetry.instrumentation.fastapi")
    with tracer.start_as_current_span("POST /p", kind=SpanKind.SERVER, attributes={"http.request.method": "POST"}):
        gt.set_metadata(user_id="u-1")
    provider.shutdown()
    assert trails.get_finished_trails()[0]["metadata"] == {"user_id": "u-1"}
    root = next(s for s in spans.get_finished_spans() if s.name == "POST /p")
    assert not [k for k in (root.attributes or {}) if k.startswith("gotrails.metadata.")]
    assert TrailConfig.from_env({"GOTRAILS_SPAN_METADATA": "true"}).metadata_on_span


_AUTO = """
import os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import SpanKind
import gotrails_otel as gt

provider = TracerProvider()
provider.add_span_processor(gt.TrailProcessor(gt.InMemoryTrailExporter()))
console = ConsoleSpanExporter(formatter=lambda s: s.to_json(indent=None) + "\\n")
provider.add_span_processor(SimpleSpanProcessor(console))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("opentelemetry.instrumentation.flask")
with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes={"http.method": "GET"}):
    gt.set_metadata(merchant_id="m-789", password="pw-SECRET")
provider.shutdown()
"""


def test_bridge_switched_on_by_environment_in_a_fresh_process() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTRAILS_", "OTEL_"))}
    env["GOTRAILS_SPAN_METADATA"] = "true"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_AUTO)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    span = json.loads(result.stdout.splitlines()[0])
    assert span["attributes"]["gotrails.metadata.merchant_id"] == "m-789"
    assert span["attributes"]["gotrails.metadata.password"] == "***"
    assert "pw-SECRET" not in result.stdout
