"""The export queue hands the exporter runs of trails: batches, their deadlines, what an abandoned or failing batch
costs (each trail counted once), and the file and stdout exporters' batch writes."""

from __future__ import annotations

import errno
import io
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

import gotrails_otel as gt
from gotrails_otel.exporters import ExportError, _MultiExporter
from gotrails_otel.metrics import Counters, FailureLog
from gotrails_otel.pipeline import ExportQueue
from gotrails_otel.sealed import SealedTrail


def _trail(n: int, size: int = 100) -> SealedTrail:
    return SealedTrail(orjson.dumps({"n": n, "pad": "x" * size}))


def _numbers(trails: Sequence[SealedTrail]) -> list[int]:
    return [trail["n"] for trail in trails]


class _Queue:
    """An export queue on its own (no flush thread: the test calls the watchdog itself)."""

    def __init__(self, exporter: Any, *, timeout_s: float = 10.0, max_items: int = 10_000) -> None:
        self.counters = Counters(None)
        self.lost: list[SealedTrail] = []
        self.queue = ExportQueue(
            exporter,
            timeout_s=timeout_s,
            max_items=max_items,
            max_bytes=1 << 30,
            counters=self.counters,
            failures=FailureLog(),
            own_threads=set(),
            on_lost=self.lost.append,
        )

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()

    def drain(self, timeout: float = 5.0) -> bool:
        return self.queue.drain(time.monotonic() + timeout)

    def close(self) -> None:
        self.queue.close()


@pytest.fixture
def queues() -> Iterator[list[_Queue]]:
    made: list[_Queue] = []
    yield made
    for queue in made:
        queue.close()


class _Recorder:
    """Records every call; the first call waits for ``gate`` (so that the test can queue more behind it)."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def _record(self, call: Any) -> None:
        with self._lock:
            first = not self.calls
            self.calls.append(call)
        if first:
            self.entered.set()
            assert self.gate.wait(10)

    def export(self, trail: SealedTrail) -> None:
        self._record(trail["n"])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self._record("force_flush")
        return True

    def shutdown(self) -> None:
        self._record("shutdown")


class _BatchRecorder(_Recorder):
    def export_batch(self, trails: Sequence[SealedTrail]) -> None:
        self._record(_numbers(trails))


def _queue_behind_the_first(queue: _Queue, recorder: _Recorder, numbers: range) -> None:
    """Trail 0 goes out alone and waits in the exporter; ``numbers`` queue up behind it."""
    queue.queue.put([_trail(0)])
    assert recorder.entered.wait(5)
    queue.queue.put([_trail(n) for n in numbers])


def test_an_exporter_with_export_batch_gets_a_burst_in_one_call(queues: list[_Queue]) -> None:
    recorder = _BatchRecorder()
    queues.append(q := _Queue(recorder))
    _queue_behind_the_first(q, recorder, range(1, 101))
    assert len(q.queue) == 100
    recorder.gate.set()
    assert q.drain()
    # At most 64 trails a call, in order, none twice.
    assert recorder.calls == [[0], list(range(1, 65)), list(range(65, 101))]
    assert q.lost == [] and "failures.export" not in q.stats()
    assert q.queue.nbytes == 0 and len(q.queue) == 0


def test_a_plain_exporter_gets_the_trails_one_by_one_in_order(queues: list[_Queue]) -> None:
    recorder = _Recorder()
    queues.append(q := _Queue(recorder))
    _queue_behind_the_first(q, recorder, range(1, 101))
    recorder.gate.set()
    assert q.drain()
    assert recorder.calls == list(range(101))
    assert q.queue.nbytes == 0 and len(q.queue) == 0


def test_a_run_stops_at_a_force_flush_which_keeps_its_place(queues: list[_Queue]) -> None:
    recorder = _BatchRecorder()
    queues.append(q := _Queue(recorder))
    _queue_behind_the_first(q, recorder, range(1, 4))
    flushed: list[bool] = []
    caller = threading.Thread(target=lambda: flushed.append(q.queue.call("force_flush", 5)))
    caller.start()
    deadline = time.monotonic() + 5
    while len(q.queue) < 4 and time.monotonic() < deadline:  # three trails and the flush
        time.sleep(0.001)
    q.queue.put([_trail(n) for n in range(4, 7)])
    recorder.gate.set()
    caller.join(5)
    assert flushed == [True]
    assert q.drain()
    assert recorder.calls == [[0], [1, 2, 3], "force_flush", [4, 5, 6]]


def test_a_slow_plain_exporter_is_not_abandoned_for_the_length_of_a_run(queues: list[_Queue]) -> None:
    class Slow(_Recorder):
        def export(self, trail: SealedTrail) -> None:
            super().export(trail)
            time.sleep(0.05)

    slow = Slow()
    queues.append(q := _Queue(slow, timeout_s=0.5))
    _queue_behind_the_first(q, slow, range(1, 25))
    slow.gate.set()
    assert q.drain()  # checks the deadline every 0.25 s while it waits: 24 trails take 1.2 s, each 0.05 s
    assert slow.calls == list(range(25))
    assert "failures.export_timeout" not in q.stats()


class _Hanging:
    """Hangs in the call that gets trail ``hang_at`` until ``release`` is set; records what it finished."""

    def __init__(self, hang_at: int) -> None:
        self.hang_at = hang_at
        self.release = threading.Event()
        self.hanging = threading.Event()
        self.done: list[int] = []

    def _take(self, numbers: list[int]) -> None:
        if self.hang_at in numbers:
            self.hanging.set()
            assert self.release.wait(10)
        self.done.extend(numbers)

    def export(self, trail: SealedTrail) -> None:
        self._take([trail["n"]])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class _HangingBatches(_Hanging):
    def export_batch(self, trails: Sequence[SealedTrail]) -> None:
        self._take(_numbers(trails))


def _first_thread_done(q: _Queue) -> None:
    deadline = time.monotonic() + 5
    while q.queue._abandoned and time.monotonic() < deadline:  # the abandoned thread has returned
        time.sleep(0.001)
    assert q.queue._abandoned == 0


def test_an_abandoned_batch_loses_each_of_its_trails_once(queues: list[_Queue]) -> None:
    exporter = _HangingBatches(hang_at=5)
    queues.append(q := _Queue(exporter))
    q.queue.put([_trail(n) for n in range(10)])
    assert exporter.hanging.wait(5)
    assert q.queue.supervise(time.monotonic() + 60) is None  # past the deadline: abandoned
    stats = q.stats()
    assert stats["failures.export_timeout"] == 10  # every trail of the call, once
    assert _numbers(q.lost) == list(range(10))
    assert q.queue.nbytes == 0 and len(q.queue) == 0
    q.queue.put([_trail(10)])  # a new thread goes on with the queue
    assert q.drain()
    assert exporter.done == [10]
    exporter.release.set()  # the abandoned call returns now: nothing is counted again
    _first_thread_done(q)
    assert q.stats()["failures.export_timeout"] == 10
    assert "failures.export" not in q.stats()
    assert _numbers(q.lost) == list(range(10))


def test_an_abandoned_plain_export_loses_its_trail_and_the_rest_of_the_run_goes_on(queues: list[_Queue]) -> None:
    exporter = _Hanging(hang_at=3)
    queues.append(q := _Queue(exporter))
    q.queue.put([_trail(n) for n in range(10)])
    assert exporter.hanging.wait(5)
    assert len(q.queue) == 6  # trails 4-9 are in the thread's hands, not given to the exporter yet
    q.queue.supervise(time.monotonic() + 60)
    assert q.drain()
    assert exporter.done == [0, 1, 2, 4, 5, 6, 7, 8, 9]  # in order, by the next thread
    assert _numbers(q.lost) == [3]
    assert q.stats()["failures.export_timeout"] == 1
    exporter.release.set()
    _first_thread_done(q)
    assert exporter.done[-1] == 3  # the abandoned call did return, late; it is not counted again
    assert _numbers(q.lost) == [3] and q.stats()["failures.export_timeout"] == 1
    assert q.queue.nbytes == 0 and len(q.queue) == 0


def test_the_batch_in_hand_counts_in_the_queue_bounds(queues: list[_Queue]) -> None:
    exporter = _HangingBatches(hang_at=0)
    queues.append(q := _Queue(exporter, max_items=10))
    q.queue.put([_trail(n) for n in range(10)])
    assert exporter.hanging.wait(5)
    q.queue.put([_trail(10)])
    assert q.stats()["trails.export_queue_full"] == 1
    exporter.release.set()
    assert q.drain()
    assert exporter.done == list(range(10))


def test_close_counts_the_trails_of_the_batch_not_given_to_the_exporter(queues: list[_Queue]) -> None:
    exporter = _Hanging(hang_at=2)
    q = _Queue(exporter)
    q.queue.put([_trail(n) for n in range(6)])
    assert exporter.hanging.wait(5)
    q.queue.put([_trail(6)])
    q.close()
    assert q.stats()["trails.unexported_at_shutdown"] == 4  # 3, 4, 5 from the batch in hand, and 6
    assert _numbers(q.lost) == [3, 4, 5, 6]
    exporter.release.set()
    deadline = time.monotonic() + 5
    while q.queue.busy() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert exporter.done == [0, 1, 2]
    assert q.queue.nbytes == 0


class _FailingBatches:
    def __init__(self) -> None:
        self.calls = 0

    def export(self, trail: SealedTrail) -> None:
        raise AssertionError("export_batch is used")

    def export_batch(self, trails: Sequence[SealedTrail]) -> None:
        self.calls += 1
        raise OSError("connection refused")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class _GoodBatches(_FailingBatches):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[int] = []

    def export_batch(self, trails: Sequence[SealedTrail]) -> None:
        self.got.extend(_numbers(trails))


def test_a_failing_batch_counts_every_trail_in_it(queues: list[_Queue]) -> None:
    exporter = _FailingBatches()
    queues.append(q := _Queue(exporter))
    q.queue.put([_trail(n) for n in range(20)])
    assert q.drain()
    assert q.stats()["failures.export"] == 20
    assert sorted(_numbers(q.lost)) == list(range(20))


def test_several_exporters_each_get_the_batch_and_each_failure_is_counted_per_trail(queues: list[_Queue]) -> None:
    failing, good = _FailingBatches(), _GoodBatches()
    multi = _MultiExporter([failing, good])
    assert multi.export_batch is not None
    queues.append(q := _Queue(multi))
    q.queue.put([_trail(n) for n in range(20)])
    assert q.drain()
    assert good.got == list(range(20))
    assert q.stats()["failures.export"] == 20
    assert _numbers(q.lost) == list(range(20))  # each once, although it reached one exporter
    # One exporter without batches: trails go one by one (each with its own deadline) to all of them.
    plain = gt.InMemoryTrailExporter()
    assert _MultiExporter([good, plain]).export_batch is None


class _FailsOne:
    def export(self, trail: SealedTrail) -> None:
        if trail["n"] == 3:
            raise ValueError("bad trail")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def test_several_exporters_not_all_taking_batches_fail_only_the_failed_trail(queues: list[_Queue]) -> None:
    memory = gt.InMemoryTrailExporter()
    queues.append(q := _Queue(_MultiExporter([memory, _FailsOne()])))
    q.queue.put([_trail(n) for n in range(6)])
    assert q.drain()
    assert _numbers(memory.get_sealed_trails()) == list(range(6))
    assert q.stats()["failures.export"] == 1
    assert _numbers(q.lost) == [3]


def test_export_error_without_trails_counts_the_whole_batch_for_each_exporter(queues: list[_Queue]) -> None:
    first, second = _FailingBatches(), _FailingBatches()

    class Own(_GoodBatches):
        def export_batch(self, trails: Sequence[SealedTrail]) -> None:
            raise ExportError([(first, OSError("a")), (second, OSError("b"))])

    queues.append(q := _Queue(Own()))
    q.queue.put([_trail(n) for n in range(5)])
    assert q.drain()
    assert q.stats()["failures.export"] == 10  # 5 trails, 2 exporters
    assert _numbers(q.lost) == list(range(5))  # each once


# ------------------------------------------------------------------------------------------- file and stdout


def _writes_to(monkeypatch: pytest.MonkeyPatch, fd_of: Any) -> list[int]:
    sizes: list[int] = []
    real = os.write

    def write(fd: int, data: Any) -> int:
        if fd == fd_of():
            sizes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return sizes


def _lines(path: Path) -> list[int]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [orjson.loads(line)["n"] for line in data.splitlines()]


def test_file_exporter_writes_a_batch_of_whole_lines_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trails.jsonl"
    exporter = gt.FileTrailExporter(path)
    writes = _writes_to(monkeypatch, lambda: exporter._fd)
    exporter.export_batch([_trail(n) for n in range(50)])
    exporter.export(_trail(50))
    assert len(writes) == 2
    assert _lines(path) == list(range(51))
    exporter.shutdown()


def test_file_exporter_batch_crossing_max_bytes_rotates_before_the_line_that_would_pass_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = len(_trail(0).data) + 1  # every trail of this test has this size (one digit)
    path = tmp_path / "trails.jsonl"
    exporter = gt.FileTrailExporter(path, max_bytes=5 * line + line // 2, backups=3)
    writes = _writes_to(monkeypatch, lambda: exporter._fd)
    exporter.export_batch([_trail(n) for n in range(3)])
    # With rotation, a line per write: each process checks the size before each line it appends, so that a file
    # shared by several processes goes past the limit by at most a line per process.
    assert len(writes) == 3
    exporter.export_batch([_trail(n) for n in range(3, 10)])
    assert _lines(Path(f"{path}.1")) == [0, 1, 2, 3, 4]
    assert _lines(path) == [5, 6, 7, 8, 9]
    assert all(p.stat().st_size <= 5 * line + line // 2 for p in tmp_path.iterdir())
    exporter.shutdown()


def test_file_exporter_batch_that_fails_part_way_fails_only_the_lines_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queues: list[_Queue]
) -> None:
    path = tmp_path / "trails.jsonl"
    exporter = gt.FileTrailExporter(path)
    line = len(_trail(0).data) + 1
    real = os.write
    calls = []

    def write(fd: int, data: Any) -> int:
        if fd != exporter._fd:
            return real(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data[: 2 * line + 5]))  # two lines and a bit of the third
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write)
    queues.append(q := _Queue(exporter))
    q.queue.put([_trail(n) for n in range(4)])
    assert q.drain()
    assert q.stats()["failures.export"] == 2
    assert _numbers(q.lost) == [2, 3]


def test_a_subclass_overriding_export_still_sees_every_trail(tmp_path: Path) -> None:
    seen: list[int] = []

    class Mine(gt.FileTrailExporter):
        def export(self, trail: SealedTrail) -> None:
            seen.append(trail["n"])
            super().export(trail)

    exporter = Mine(tmp_path / "trails.jsonl")
    exporter.export_batch([_trail(n) for n in range(3)])
    assert seen == [0, 1, 2]
    assert _lines(tmp_path / "trails.jsonl") == [0, 1, 2]
    exporter.shutdown()


class _Stream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return super().write(data)


def test_stdout_exporter_batch_writes_whole_lines_up_to_pipe_buf_at_once() -> None:
    stream = _Stream()
    exporter = gt.StdoutTrailExporter(stream)
    small = [_trail(n, 200) for n in range(30)]  # ~220 bytes each: about 18 a write
    big = _trail(99, 5000)
    exporter.export_batch([*small[:15], big, *small[15:]])
    assert [orjson.loads(line)["n"] for line in stream.getvalue().splitlines()] == [*range(15), 99, *range(15, 30)]
    assert all(write.endswith(b"\n") for write in stream.writes)
    assert all(len(write) <= 4096 for write in stream.writes if write.count(b"\n") > 1)
    assert len(stream.writes) < 10
