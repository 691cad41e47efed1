"""Would folding in a separate process pay? The flush work in-process against what the application's process would
still pay to hand each trail to a fold process (and take the sealed trail back), on distinct realistic trails.

    python benchmarks/fold_process.py            # 2,000 trails per round, 5 rounds
    python benchmarks/fold_process.py --quick

In-process: fold, mask and limit, stamp and seal on the calling thread (as the flush thread does). Out of process:
the application's process turns each trail's records into plain, picklable ones (the root span as a compact record,
captured bodies without their link to the buffer), pickles them and writes them to a pipe; a worker process
unpickles, folds, masks, seals (the stamp would have to stay in one place: here the worker's) and writes the sealed
bytes back, which a thread of the application's process reads. Figures are CPU time from the OS: the application's
process (all its threads) and the worker's, per trail, and the wall time of the whole batch.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import statistics
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flush_count

from gotrails_otel import TrailConfig
from gotrails_otel.fold import FoldInput, fold
from gotrails_otel.integrity import Chain
from gotrails_otel.records import SpanRecord
from gotrails_otel.store import BodyCapture


def to_wire(data: FoldInput) -> FoldInput:
    """``data`` with nothing that cannot cross a process boundary: the root as a compact record, captured bodies
    copied without their trail and buffer (which hold locks)."""
    captures: dict[int, dict[str, Any]] = {}
    for span_id, capture in data.captures.items():
        captures[span_id] = {key: _plain_section(value) for key, value in capture.items()}
    root = _record(data.root if type(data.root) is SpanRecord else SpanRecord(data.root))
    return replace(data, root=root, spans=[_record(s) for s in data.spans], captures=captures)  # type: ignore[arg-type]


_STAND_INS: dict[int, SimpleNamespace] = {}


def _record(record: Any) -> SpanRecord:
    """A copy of a span record whose instrumentation scope and resource (which hold locks) are plain stand-ins
    with what the fold reads of them."""
    copy = object.__new__(SpanRecord)
    for name in SpanRecord.__slots__:
        setattr(copy, name, getattr(record, name))
    scope, resource = record.instrumentation_scope, record.resource
    if scope is not None:
        copy.instrumentation_scope = _STAND_INS.get(id(scope)) or _STAND_INS.setdefault(
            id(scope), SimpleNamespace(name=scope.name, version=scope.version)
        )
    if resource is not None:
        copy.resource = _STAND_INS.get(id(resource)) or _STAND_INS.setdefault(
            id(resource), SimpleNamespace(attributes=dict(resource.attributes))
        )
    return copy


def _plain_section(value: Any) -> Any:
    if type(value) is dict:
        return {key: _plain_body(item) for key, item in value.items()}
    return _plain_body(value)


def _plain_body(value: Any) -> Any:
    if type(value) is BodyCapture:
        body = BodyCapture(value.limit, value.content_type, value.content_encoding)
        body.total, body.streamed = value.total, value.streamed
        body._chunks, body._kept = [value.data()], value._kept
        return body
    return value


def worker(conn: Connection) -> None:
    """The fold process: trails in, sealed bytes out; its CPU time per trail at the end."""
    config = TrailConfig()
    policy = config.policy()
    chain = Chain.from_config(config)
    assert chain is not None
    count = 0
    start = time.process_time()
    while True:
        message = conn.recv_bytes()
        if not message:
            break
        data = pickle.loads(message)
        conn.send_bytes(chain.stamp(policy.apply(fold(data), total=False), policy.fit))
        count += 1
    conn.send_bytes(pickle.dumps((time.process_time() - start) * 1e6 / max(count, 1)))


def in_process(inputs: list[FoldInput]) -> tuple[float, float]:
    flush = flush_count.worker()
    start, wall = time.process_time(), time.perf_counter()
    flush_count.run(inputs, flush)
    return (time.process_time() - start) * 1e6 / len(inputs), (time.perf_counter() - wall) * 1e6 / len(inputs)


def out_of_process(inputs: list[FoldInput]) -> tuple[float, float, float, float]:
    """Per trail: the application's CPU (convert + pickle + send + receive), of it convert+pickle alone, the
    worker's CPU, and the wall time."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(target=worker, args=(theirs,), daemon=True)
    process.start()
    received: list[bytes] = []

    def receive() -> None:
        received.extend(ours.recv_bytes() for _ in inputs)

    reader = threading.Thread(target=receive)
    start, wall = time.process_time(), time.perf_counter()
    reader.start()
    packing = 0.0
    for data in inputs:
        began = time.thread_time()
        message = pickle.dumps(to_wire(data), protocol=pickle.HIGHEST_PROTOCOL)
        packing += time.thread_time() - began
        ours.send_bytes(message)
    reader.join()
    spent, elapsed = time.process_time() - start, time.perf_counter() - wall
    ours.send_bytes(b"")
    child = pickle.loads(ours.recv_bytes())
    process.join()
    assert len(received) == len(inputs)
    n = len(inputs)
    return spent * 1e6 / n, packing * 1e6 / n, child, elapsed * 1e6 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    trails, rounds = (300, 3) if args.quick else (args.trails, args.rounds)
    warm = flush_count.collect(50)
    flush_count.run(warm, flush_count.worker())
    results: dict[str, list[float]] = {}
    for number in range(rounds):
        first, second = flush_count.collect(trails), flush_count.collect(trails)
        if number % 2:
            first, second = second, first
        cpu, wall = in_process(first)
        app, packing, child, elapsed = out_of_process(second)
        for name, value in (
            ("in-process: CPU of the application's process", cpu),
            ("in-process: wall", wall),
            ("separate process: CPU left in the application's process", app),
            ("  of it: records made picklable + pickled", packing),
            ("separate process: CPU of the fold process", child),
            ("separate process: wall (pipelined)", elapsed),
        ):
            results.setdefault(name, []).append(value)
    print(f"Flush work per distinct realistic trail, {trails} trails x {rounds} rounds, us, median [min-max]")
    for name, values in results.items():
        print(f"  {name:58} {flush_count.bench_core.spread(values):>22}")
    cpu = statistics.median(results["in-process: CPU of the application's process"])
    app = statistics.median(results["separate process: CPU left in the application's process"])
    child = statistics.median(results["separate process: CPU of the fold process"])
    print(
        f"moved out of the application's process: {cpu - app:.0f} us per trail; added CPU in total: "
        f"{app + child - cpu:.0f} us per trail"
    )


if __name__ == "__main__":
    main()
