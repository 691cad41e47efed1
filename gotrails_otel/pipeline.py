"""The flush pipeline, off the request path: the flush thread and the export queue.

Per trail, on the flush thread (``gotrails-flush``)::

    fold → Policy.apply (mask and limit) → stages (sampling, integrity stamp) → seal → export queue

then, on the export thread (``gotrails-export``), the sealed trails go to the exporter, a run of them at a time, with
a deadline (see :class:`ExportQueue`). The flush thread also keeps the trails' deadlines (grace, age), checked
between every two trails, so they hold whatever the load, and watches the export deadline: an export that has not
returned in time is abandoned to its thread, counted, and a new export thread takes over the queue. The export queue
is bounded by count and bytes; what does not fit is counted (``trails.export_queue_full``), never held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import context as otel_context

from .buffer import FLUSH_DELAY_S, FlushReason, Trail, TrailBuffer
from .config import TrailConfig
from .exporters import ExportError, Failure, TrailExporter, batch_method, exporter_name, failures_of
from .fold import FoldInput, fold
from .integrity import Chain
from .metrics import Counters, FailureLog
from .redact import Policy
from .sampling import TrailSampler
from .sealed import SealedTrail, seal

__all__ = ["DropTrail", "ExportQueue", "FlushWorker", "Stage", "build_stages"]

_log = logging.getLogger("gotrails_otel")


def _spawn(target: Callable[..., None], name: str, *args: Any) -> threading.Thread | None:
    """Start a daemon thread; ``None`` where no thread can start any more (the interpreter is exiting: Python 3.12+
    refuses new threads once ``atexit`` handlers run, which is when the SDK shuts the processors down)."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:
        _log.debug("gotrails: no new thread at interpreter shutdown; %s work runs on the calling thread", name)
        return None
    return thread


Stage = Callable[[dict[str, Any]], "dict[str, Any] | None"]
"""A step between the masking policy and the seal: takes the folded, masked trail and returns it (changed or not),
or ``None`` (or raises :class:`DropTrail`) to drop it. Stages run in order on the flush thread, one trail at a time,
in the order trails are exported."""

# Exports that did not return before their deadline and still hold their thread; past this, exporting pauses (the
# queue fills and its overflow is counted) until one of them returns.
MAX_ABANDONED_EXPORTS = 2
# Sealed trails handed to the export thread at once (one wake-up per batch, not per trail).
_EXPORT_BATCH = 32
# Sealed trails the export thread takes from its queue at once (one lock round trip, and one call of an exporter's
# export_batch), and their bytes (a single larger trail is taken alone).
_BATCH_TRAILS = 64
_BATCH_BYTES = 1 << 20


class DropTrail(Exception):
    """Raised by a stage to drop the trail; counted as ``trails.<reason>`` in the dropped metrics (unless the stage
    counted it already: ``counted=True``)."""

    def __init__(self, reason: str, *, counted: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counted = counted


def build_stages(config: TrailConfig, sampler: TrailSampler) -> list[Stage]:
    """The stages between the masking policy and the integrity stamp, in order: tail sampling (a trail it drops is
    counted by reason, never stamped). The integrity stamp itself always comes last, just before the seal, so that
    the hash covers exactly what is exported."""
    stages: list[Stage] = []
    if sampler.active:

        def sample(document: dict[str, Any]) -> dict[str, Any]:
            reason = sampler.decide(document)  # counts what it drops (sampled_out.<reason>)
            if reason is not None:
                raise DropTrail(reason, counted=True)
            return document

        stages.append(sample)
    return stages


def _suppressed() -> object:
    """Attach a context that suppresses instrumentation on this (gotrails') thread: its I/O makes no spans."""
    return otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))


class _Job:
    __slots__ = ("arg", "deadline", "done", "kind", "result", "size")

    def __init__(self, kind: str, arg: Any, size: int = 0) -> None:
        self.kind = kind  # "export", "force_flush", "shutdown"
        self.arg = arg  # the sealed trail, or the timeout in milliseconds
        self.size = size
        self.deadline = 0.0
        self.done: threading.Event | None = None if kind == "export" else threading.Event()
        self.result = False

    def finish(self, result: bool) -> None:
        """The job ran: tell its caller, if one waits (``force_flush``, ``shutdown``)."""
        if self.done is not None:
            self.result = result
            self.done.set()


class _Batch:
    """Export jobs the export thread took from the queue together, and who owns each of their trails.

    A trail leaves ``pending`` when the export thread takes it (``popleft``) to hand it to the exporter, or when the
    watchdog abandons the batch (or the queue closes) and takes what is left; a deque's operations are atomic, so
    each trail goes to exactly one of them, without the queue's lock. What is in the exporter is in ``inflight``
    while the call runs: the thread pops it when the call returns, the watchdog when it abandons the call, and
    whoever pops it accounts for those trails (exported, failed or lost), once.
    """

    __slots__ = ("deadline", "inflight", "pending", "size")

    def __init__(self, jobs: list[_Job], size: int) -> None:
        self.pending: deque[_Job] = deque(jobs)
        self.inflight: deque[list[_Job]] = deque()
        self.size = size  # bytes of its trails still counted in the queue's bytes (until the batch is done)
        self.deadline = 0.0

    def claim_pending(self) -> list[_Job]:
        """Take the jobs not handed to the exporter yet, in order."""
        taken: list[_Job] = []
        while True:
            try:
                taken.append(self.pending.popleft())
            except IndexError:
                return taken


class ExportQueue:
    """Sealed trails waiting for the exporter, and the export thread that sends them, in order.

    Bounded by ``max_items`` and ``max_bytes`` (of sealed JSON); the trails of the batch being exported count until
    it is done. Each export, and each ``force_flush``/``shutdown`` of the exporter, runs on the export thread with a
    deadline of ``timeout_s``; callers never run the exporter themselves and wait for it at most their own timeout.

    The export thread takes the run of trails at the head of the queue at once (at most 64 trails or 1 MiB; a
    ``force_flush`` or ``shutdown`` ends the run and keeps its place), with one lock round trip:

    * an exporter with ``export_batch`` gets the run in one call, whose deadline is its start plus ``timeout_s``;
      abandoned past it, every trail of the call is lost (counted in ``failures.export_timeout``, each one, and
      reported to ``on_lost``);
    * any other exporter gets one ``export`` call per trail; each trail's deadline is its own start plus
      ``timeout_s`` (the deadline is moved on as each trail is done, without the lock), so a slow exporter that
      keeps answering is never abandoned for the length of a run. Abandoned past a deadline, the trail in the
      exporter is lost and counted; the trails of the run it had not been given yet go back to the head of the
      queue, in order, for the next export thread, as if they had never been taken.
    """

    def __init__(
        self,
        exporter: TrailExporter,
        *,
        timeout_s: float,
        max_items: int,
        max_bytes: int,
        counters: Counters,
        failures: FailureLog,
        own_threads: set[int],
        on_lost: Callable[[SealedTrail], None] | None = None,
    ) -> None:
        self._exporter = exporter
        self.on_lost = on_lost
        self.timeout_s = timeout_s
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._counters = counters
        self._failures = failures
        self._own_threads = own_threads
        self.reset()

    def reset(self) -> None:
        """Empty, with fresh locks and no thread (also in a forked child)."""
        self.lock = threading.Lock()
        self._work = threading.Condition(self.lock)
        self._idle = threading.Condition(self.lock)
        self._items: deque[_Job] = deque()
        self.nbytes = 0  # of the queued trails and of the batch being exported
        self._held = 0  # trails of the batch being exported, until it is done
        self._current: _Job | _Batch | None = None
        self._generation = 0
        self._abandoned = 0
        self._running = False
        self._closed = False
        self._no_threads = False  # no thread could start (the interpreter is exiting): callers export themselves

    @property
    def exporter(self) -> TrailExporter:
        return self._exporter

    @exporter.setter
    def exporter(self, exporter: TrailExporter) -> None:
        self._exporter = exporter

    def __len__(self) -> int:
        """Queued jobs, with the trails of the batch being exported not handed to the exporter yet."""
        current = self._current
        return len(self._items) + (len(current.pending) if isinstance(current, _Batch) else 0)

    def busy(self) -> bool:
        """Whether anything is queued or being exported."""
        return bool(self._items) or self._current is not None

    # ----------------------------------------------------------------------------------------------- input

    def put(self, trails: list[SealedTrail]) -> None:
        """Queue ``trails`` for export, in order; what does not fit (the queue is full, or closed) is counted."""
        lost: list[SealedTrail] = []
        with self.lock:
            for trail in trails:
                size = len(trail.data)
                if self._closed:
                    self._counters.dropped("trails", "exporter_shut_down")
                    lost.append(trail)
                elif len(self._items) + self._held >= self.max_items or self.nbytes + size > self.max_bytes:
                    self._counters.dropped("trails", "export_queue_full")
                    self._failures.report("queueing a trail for export", self._overflow)
                    lost.append(trail)
                else:
                    self._items.append(_Job("export", trail, size))
                    self.nbytes += size
            if self._items:
                self._start()
                self._work.notify()
        for trail in lost:
            self._lost(trail)

    def _lost(self, trail: SealedTrail) -> None:
        """A sealed trail that will not reach (every) exporter: tell whoever keeps count of them (the hash chain)."""
        if self.on_lost is not None:
            try:
                self.on_lost(trail)
            except Exception:  # never at the cost of the queue
                _log.debug("gotrails: noting a lost trail failed", exc_info=True)

    def _overflow(self) -> OverflowError:
        return OverflowError(
            f"the export queue is full ({len(self._items)} trails, {self.nbytes} bytes; limits {self.max_items} "
            f"trails, {self.max_bytes} bytes): trails are dropped and counted until the exporter catches up"
        )

    def call(self, kind: str, timeout_s: float) -> bool:
        """Run the exporter's ``force_flush`` or ``shutdown`` on the export thread, after what is queued; wait at
        most ``timeout_s``. ``False`` on timeout, failure, or a flush that reports failure."""
        job = _Job(kind, max(int(timeout_s * 1000), 0))
        with self.lock:
            if self._closed:
                return False
            self._items.append(job)
            self._start()
            self._work.notify()
        assert job.done is not None
        deadline = time.monotonic() + timeout_s
        if self._no_threads:
            self._run_here(deadline)
        while not job.done.wait(min(max(deadline - time.monotonic(), 0.0), 0.25)):
            now = time.monotonic()
            self.supervise(now)
            if now >= deadline:
                return False
        return job.result

    def drain(self, deadline: float) -> bool:
        """Wait until nothing is queued or being exported (or ``deadline``, monotonic); ``True`` when drained."""
        if self._no_threads:
            self._run_here(deadline)
        with self.lock:
            while self._items or self._current is not None:
                now = time.monotonic()
                if now >= deadline:
                    return False
                self._supervise(now)
                self._idle.wait(min(deadline - now, 0.25))
            return True

    def _run_here(self, deadline: float) -> None:
        """No export thread can start (the interpreter is exiting, see :func:`_spawn`): run what is queued on the
        calling thread, in order, until ``deadline``; each export is bounded by the exporter's own timeout only."""
        token = _suppressed()
        try:
            while time.monotonic() < deadline:
                with self.lock:
                    if self._running or not self._items:
                        return
                    work = self._take()
                if isinstance(work, _Batch):
                    self._export(work)
                    with self.lock:
                        self._done(work)
                else:
                    work.finish(self._do(work))
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]

    def close(self) -> None:
        """Refuse new work; what is still queued is dropped and counted."""
        with self.lock:
            self._closed = True
            current = self._current
            left = self._claim_pending(current) if isinstance(current, _Batch) else []
            left += [job for job in self._items if job.kind == "export"]
            self._items.clear()
            self.nbytes -= sum(job.size for job in left)  # what is left counts the batch still in the exporter
            self._work.notify_all()
        if left:
            self._counters.dropped("trails", "unexported_at_shutdown", len(left))
            _log.error("gotrails: %d trail(s) were not exported before the shutdown timeout", len(left))
            for job in left:
                self._lost(job.arg)

    # ------------------------------------------------------------------------------------------- watchdog

    def supervise(self, now: float) -> float | None:
        """Abandon an export past its deadline; return the deadline of the export in progress, if any."""
        with self.lock:
            return self._supervise(now)

    def _supervise(self, now: float) -> float | None:
        work = self._current
        if work is None:
            return None
        if work.deadline > now:
            return work.deadline
        # The exporter has not returned in time: leave it to its thread, and let a new thread go on with the queue.
        self._generation += 1
        self._current = None
        self._abandoned += 1
        self._running = False
        name = exporter_name(self._exporter)
        timeout = TimeoutError(f"no answer within {self.timeout_s:g} s; abandoned")
        if isinstance(work, _Batch):
            # What the exporter was not given yet goes back to the head of the queue; what it holds is lost.
            self._items.extendleft(reversed(self._claim_pending(work)))
            try:
                lost = [job.arg for job in work.inflight.pop()]
            except IndexError:  # between two trails: none is in the exporter
                lost = []
            self._done(work)
            self._counters.failed("export_timeout", max(len(lost), 1), exporter=name)
            self._failures.report(f"exporting to {name}", timeout, max(len(lost), 1))
            for trail in lost:
                self._lost(trail)
        else:
            self._counters.failed("export_timeout", exporter=name)
            self._failures.report(f"{work.kind} of {name}", timeout)
            work.finish(False)
        self._start()
        self._idle.notify_all()
        return None

    # ------------------------------------------------------------------------------------------- the thread

    def _start(self) -> None:
        """With the lock held: make sure an export thread runs (unless too many are stuck in the exporter)."""
        if self._running or not self._items or self._abandoned >= MAX_ABANDONED_EXPORTS:
            return
        self._running = True
        if _spawn(self._run, "gotrails-export", self._generation) is None:
            self._running = False
            self._no_threads = True

    def _run(self, generation: int) -> None:
        ident = threading.get_ident()
        self._own_threads.add(ident)
        token = _suppressed()
        try:
            while True:
                with self.lock:
                    while not self._items and generation == self._generation and not self._closed:
                        self._work.wait()
                    if generation != self._generation:
                        return  # the queue was reset (a forked child); this thread no longer serves it
                    if not self._items:  # closed, and nothing left
                        self._running = False
                        return
                    work = self._take()
                    work.deadline = time.monotonic() + self.timeout_s
                    self._current = work
                if isinstance(work, _Batch):
                    self._export(work)
                    result = True
                else:
                    result = self._do(work)
                with self.lock:
                    if generation != self._generation:  # abandoned while it ran: a newer thread owns the queue
                        self._abandoned -= 1
                        self._start()
                        return
                    self._current = None
                    if isinstance(work, _Batch):
                        self._done(work)
                    else:
                        work.finish(result)
                    self._idle.notify_all()
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]
            self._own_threads.discard(ident)

    def _take(self) -> _Job | _Batch:
        """With the lock held and something queued: the ``force_flush``/``shutdown`` at the head, or the run of
        exports at the head (bounded by ``_BATCH_TRAILS`` and ``_BATCH_BYTES``), which stays counted in the queue's
        bounds until it is done."""
        items = self._items
        first = items.popleft()
        if first.kind != "export":
            return first
        jobs, size = [first], first.size
        while items and len(jobs) < _BATCH_TRAILS:
            job = items[0]
            if job.kind != "export" or size + job.size > _BATCH_BYTES:
                break
            jobs.append(items.popleft())
            size += job.size
        self._held = len(jobs)
        return _Batch(jobs, size)

    def _claim_pending(self, batch: _Batch) -> list[_Job]:
        """With the lock held: take the jobs of ``batch`` not handed to the exporter yet off it (and off its count)."""
        jobs = batch.claim_pending()
        taken = sum(job.size for job in jobs)
        batch.size -= taken
        self._held -= len(jobs)
        return jobs

    def _done(self, batch: _Batch) -> None:
        """With the lock held: ``batch`` is done (exported, or abandoned): its trails leave the queue's bounds."""
        self.nbytes -= batch.size
        batch.size = 0
        self._held = 0

    def _export(self, batch: _Batch) -> None:
        """Export the trails of ``batch``, in order: in one ``export_batch`` call when the exporter has it, else one
        ``export`` per trail, each with its own deadline. A trail the watchdog took back (or accounted as lost) is
        left alone; every failure is counted, per trail and per failing exporter."""
        exporter = self._exporter
        export_batch = batch_method(exporter)
        if export_batch is not None:
            jobs = batch.claim_pending()
            if jobs:
                self._hand_over(exporter, batch, jobs, export_batch)
            return
        export = exporter.export

        def export_one(trails: Sequence[SealedTrail]) -> None:
            export(trails[0])

        pending = batch.pending
        while True:
            try:
                job = pending.popleft()
            except IndexError:  # every trail exported, or the rest taken back by the watchdog
                return
            if not self._hand_over(exporter, batch, [job], export_one):
                return
            batch.deadline = time.monotonic() + self.timeout_s  # the next trail's deadline (read by the watchdog)

    def _hand_over(
        self, exporter: TrailExporter, batch: _Batch, jobs: list[_Job], send: Callable[[Sequence[SealedTrail]], None]
    ) -> bool:
        """Give the trails of ``jobs`` to ``exporter`` through ``send``, in flight in ``batch`` while the call runs;
        count what failed. ``False`` when the watchdog abandoned the call meanwhile (it counted them as lost)."""
        trails = [job.arg for job in jobs]
        batch.inflight.append(jobs)
        failures: list[Failure] = []
        try:
            send(trails)
        except Exception as error:  # an exporter failure must not stop the other trails
            failures = failures_of(exporter, error, trails)
        try:
            batch.inflight.pop()
        except IndexError:  # abandoned meanwhile
            return False
        if failures:
            self._export_failed(failures)
        return True

    def _export_failed(self, failures: list[Failure]) -> None:
        """Count each failing exporter once per trail it did not take; each of those trails is lost, once."""
        lost: dict[int, SealedTrail] = {}
        for exporter, error, trails in failures:
            name = exporter_name(exporter)
            self._counters.failed("export", len(trails), exporter=name)
            self._failures.report(f"exporting to {name}", error, len(trails))
            for trail in trails:
                lost.setdefault(id(trail), trail)
        for trail in lost.values():
            self._lost(trail)

    def _do(self, job: _Job) -> bool:
        """Run the exporter's ``force_flush`` or ``shutdown``."""
        exporter = self._exporter
        try:
            if job.kind == "force_flush":
                flush = getattr(exporter, "force_flush", None)
                return bool(flush(job.arg)) if callable(flush) else True
            exporter.shutdown()
            return True
        except ExportError as errors:  # several exporters: report each one that failed
            for failed, error in errors.failures:
                self._failed(job, exporter_name(failed), error)
        except Exception as error:  # an exporter failure must not stop the other trails
            self._failed(job, exporter_name(exporter), error)
        return False

    def _failed(self, job: _Job, name: str, error: BaseException) -> None:
        self._counters.failed(f"exporter_{job.kind}", exporter=name)
        self._failures.report(f"{job.kind} of {name}", error)


class FlushWorker:
    """The flush thread: keeps the trails' deadlines, folds, masks, runs the stages, seals and queues for export."""

    def __init__(
        self,
        buffer: TrailBuffer,
        config: TrailConfig,
        policy: Policy,
        counters: Counters,
        failures: FailureLog,
        exports: ExportQueue,
        own_threads: set[int],
        sampler: TrailSampler,
        chain: Chain | None,
    ) -> None:
        self.buffer = buffer
        self.config = config
        self.policy = policy
        self.counters = counters
        self.failures = failures
        self.exports = exports
        self.own_threads = own_threads
        self.stages: list[Stage] = build_stages(config, sampler)
        self.chain = chain
        self._records: list[SealedTrail] = []
        self._checkpoint_retry_at = 0.0
        self.reset()

    def emit(self, record: SealedTrail) -> None:
        """From a stage (on the flush thread): export ``record`` — a record that is not a trail, such as an integrity
        checkpoint — through the same exporters, right after the trail being processed."""
        self._records.append(record)

    def reset(self) -> None:
        """No thread, nothing in progress (also in a forked child, after the buffer's reset)."""
        self._thread: threading.Thread | None = None
        self._busy = False
        self._stopping = False
        self._idle = threading.Condition(self.buffer.lock)
        self._batch: deque[Trail] = deque()  # taken from the buffer, not sealed yet
        self._stop_deadline = float("inf")

    def unsealed(self) -> int:
        """With the buffer's lock held: flushed trails not sealed yet (queued, or in the batch in hand)."""
        return len(self.buffer.ready) + len(self._batch)

    def abandon_unsealed(self) -> int:
        """Give up the flushed trails not sealed yet (shutdown's deadline passed): count them, once, as
        ``trails.unsealed_at_shutdown`` and free them. The trail the thread holds, if any, is not among them: it
        is sealed and queued, or counted where the closed queue refuses it."""
        buffer = self.buffer
        with buffer.lock:
            left = buffer.take_ready()
            left.extend(self._batch)
            self._batch.clear()
            for trail in left:
                buffer.seal(trail)  # its bytes leave the budget
        if left:
            self.counters.dropped("trails", "unsealed_at_shutdown", len(left))
            _log.error("gotrails: %d trail(s) were not sealed before the shutdown timeout", len(left))
        return len(left)

    def ensure_started(self) -> bool:
        """With the buffer's lock held: start the flush thread once; ``False`` when no thread can start (the
        interpreter is exiting: :meth:`stop` then seals what is left on the calling thread)."""
        if self._thread is None:
            self._thread = _spawn(self._run, "gotrails-flush")
        return self._thread is not None

    @property
    def busy(self) -> bool:
        return self._busy

    def _run(self) -> None:
        ident = threading.get_ident()
        self.own_threads.add(ident)
        token = _suppressed()
        buffer = self.buffer
        try:
            while True:
                with buffer.lock:
                    while True:
                        now = time.monotonic()
                        next_deadline = buffer.expire(now)
                        if buffer.ready:
                            self._batch.extend(buffer.take_ready())
                            self._busy = True
                            break
                        if self._stopping or self._checkpoint_due(now):
                            break
                        self._busy = False
                        self._idle.notify_all()
                        wait = self._wait_time(now, next_deadline)
                        if buffer.trails and (wait is None or wait > FLUSH_DELAY_S):
                            # Requests in flight: look again soon and take what they flushed meanwhile in one batch
                            # (they do not wake this thread one by one; see TrailBuffer.finish).
                            wait = FLUSH_DELAY_S
                        buffer.worker_wait(wait, now)
                if self._stopping and not self._batch:
                    return  # every trail is sealed (the final checkpoint follows their export: see the processor)
                batch, check_at = self._batch, 0.0
                sealed: list[SealedTrail] = []
                while batch:
                    if self._stopping and time.monotonic() >= self._stop_deadline:
                        self.exports.put(sealed)
                        self.abandon_unsealed()  # shutdown gave up waiting: what is left is counted, once
                        return
                    try:
                        taken = batch.popleft()
                    except IndexError:  # shutdown abandoned the rest meanwhile (and counted it)
                        break
                    trail = self._process(taken)
                    del taken  # not kept alive (with its root span) while the thread waits for the next batch
                    if trail is not None:
                        sealed.append(trail)
                    if self._records:  # records the stages emitted go out right after the trail they came with
                        sealed.extend(self._records)
                        self._records.clear()
                    if len(sealed) >= _EXPORT_BATCH:
                        self.exports.put(sealed)
                        sealed = []
                    now = time.monotonic()
                    if now >= check_at:  # deadlines hold whatever the backlog: checked between two trails when due
                        check_at = self._check_deadlines(now)
                if sealed:
                    self.exports.put(sealed)
                if self._checkpoint_due(time.monotonic()):
                    self._checkpoint(final=False)
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]
            self.own_threads.discard(ident)
            with buffer.lock:
                self._busy = False
                self._idle.notify_all()

    def _check_deadlines(self, now: float) -> float:
        """Act on the deadlines that are due; return when to look again. A trail that starts to wait for its grace
        period later has a deadline at least ``grace`` away, so looking again then at the latest is enough."""
        with self.buffer.lock:
            next_deadline = self.buffer.expire(now)
        export_deadline = self.exports.supervise(now)
        due = now + max(self.buffer.grace_s, 0.001)
        for deadline in (next_deadline, export_deadline):
            if deadline is not None and deadline < due:
                due = deadline
        return due

    def _wait_time(self, now: float, next_deadline: float | None) -> float | None:
        export_deadline = self.exports.supervise(now)
        if export_deadline is None and self.exports.busy():
            export_deadline = now + min(self.exports.timeout_s, 1.0)  # an export may start while we sleep
        checkpoint_in = self.chain.due_in(now) if self.chain is not None else None
        checkpoint = None if checkpoint_in is None else now + checkpoint_in
        deadlines = [d for d in (next_deadline, export_deadline, checkpoint) if d is not None]
        return max(min(deadlines) - now, 0.0) if deadlines else None

    def _checkpoint_due(self, now: float) -> bool:
        due = self.chain.due_in(now) if self.chain is not None else None
        return due is not None and due <= 0 and now >= self._checkpoint_retry_at

    def final_checkpoint(self) -> None:
        """Export the chain's final checkpoint (at shutdown, once the trails were exported: it lists the lost ones)."""
        self._checkpoint(final=True)

    def _checkpoint(self, *, final: bool) -> None:
        """Export a checkpoint of the hash chain's head (periodic, or the final one)."""
        if self.chain is None:
            return
        counts = self.counters.snapshot()
        sampled = {k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("sampled_out.")}
        try:
            record = self.chain.checkpoint(final=final, extra={"sampled_out": sampled} if sampled else None)
            if record is not None:
                self.exports.put([seal(record)])
        except Exception as error:  # the trails go on; verify reports the missing checkpoint
            self.counters.failed("checkpoint")
            self.failures.report("making a checkpoint of the hash chain", error)
            self._checkpoint_retry_at = time.monotonic() + 1.0

    def drain(self, deadline: float) -> bool:
        """Wait until every flushed trail has been sealed and queued for export (or ``deadline``)."""
        buffer = self.buffer
        with buffer.lock:
            if buffer.ready:
                buffer.wake_worker()  # do not let it wait for its next look
            while buffer.ready or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._idle.wait(remaining)
            return True

    def stop(self, deadline: float) -> bool:
        """Seal what is queued, then end the thread; ``True`` when it ended before ``deadline``."""
        buffer = self.buffer
        with buffer.lock:
            self._stopping = True
            self._stop_deadline = deadline
            started = self.ensure_started() if buffer.ready else self._thread is not None
            thread = self._thread
            buffer.wakeup.notify_all()
        if not started and buffer.ready:
            self._run()  # the interpreter is exiting and no thread can start: seal the rest here, bounded by deadline
            return not buffer.ready
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(max(deadline - time.monotonic(), 0.0))
        return not thread.is_alive()

    # ------------------------------------------------------------------------------------------ one trail

    def _process(self, trail: Trail) -> SealedTrail | None:
        buffer = self.buffer
        with buffer.lock:
            reason = trail.reason
            if reason is None:  # dropped at the flush (the fold was too far behind); counted there
                buffer.forget(trail)
                return None
            buffer.seal(trail)
            data = self._fold_input(trail, reason)
        sealed = None
        try:
            document = self._fold(trail, data)
            self.counters.flushed(reason.value)
            sealed = self._stages_and_seal(document)
        except Exception as error:  # keep the worker alive for every other trail
            self.counters.failed("emit")
            self.failures.report("sealing a trail", error)
        finally:
            with buffer.lock:
                buffer.forget(trail)
        return sealed

    def _fold_input(self, trail: Trail, reason: FlushReason) -> FoldInput:
        config = self.config
        return FoldInput(
            root=trail.root,
            spans=trail.spans,  # type: ignore[arg-type]
            captures=trail.captures,
            metadata=trail.metadata,
            errors=trail.errors,
            flush_reason=reason.value,
            open_spans=max(trail.open, 0),
            dropped=dict(trail.dropped),
            now_ns=time.time_ns(),
            service_name=config.service_name,
            environment=config.environment,
            http_names=config.http_names,
            # The policy's one walk converts the captured payloads as it masks and limits them; a custom field rule
            # sees every value converted already, as it always has.
            raw=self.policy.field_rule is None,
        )

    def _fold(self, trail: Trail, data: FoldInput) -> dict[str, Any]:
        try:
            return self.policy.apply(fold(data), total=False)  # the total size is fitted at the seal
        except Exception as error:  # bad input in one trail yields a marked fallback, never a lost trail
            self.failures.report("folding a trail (a reduced trail is exported instead)", error)
            self.counters.failed("fold")
            reduced = FoldInput(
                root=data.root,
                errors=[{"source": "gotrails", "message": f"fold failed: {type(error).__name__}: {error}"}],
                flush_reason=data.flush_reason,
                open_spans=data.open_spans,
                dropped={**data.dropped, "spans_unfolded": len(data.spans)},
                now_ns=data.now_ns,
                service_name=data.service_name,
                environment=data.environment,
            )
            # Without captured payloads; still masked (span attributes of the root may hold secrets).
            return self.policy.apply(fold(reduced), total=False)

    def _stages_and_seal(self, document: dict[str, Any]) -> SealedTrail | None:
        for stage in self.stages:
            try:
                result = stage(document)
            except DropTrail as drop:
                if not drop.counted:
                    self.counters.dropped("trails", drop.reason)
                return None
            except Exception as error:  # a failing stage is skipped, the trail goes on
                self.counters.failed("stage")
                self.failures.report(f"pipeline stage {getattr(stage, '__name__', stage)!s}", error)
                continue
            if result is None:
                self.counters.dropped("trails", str(getattr(stage, "__name__", "stage")))
                return None
            document = result
        if self.chain is not None:  # last, so that the hash covers exactly what is exported
            try:  # its canonical bytes, exactly as hashed (serialised once: they measure the trail for its limit too)
                return SealedTrail(self.chain.stamp(document, self.policy.fit))
            except Exception as error:  # exported without its link: verify reports it, the chain stays whole
                self.counters.failed("integrity")
                self.failures.report("stamping a trail into the hash chain", error)
        data = getattr(document, "data", None)  # a stage that sealed the trail itself
        if type(data) is bytes:
            return SealedTrail(data)
        sealed = seal(document)
        if self.policy.fit(document, len(sealed.data)):  # too large: its largest payloads trimmed
            sealed = seal(document)
        return sealed
