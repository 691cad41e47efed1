"""The per-request buffer: each trail's spans and payloads from its root span's start until it is sealed.

Every structure here is guarded by :attr:`TrailBuffer.lock` (one lock per processor). A trail moves through
:class:`TrailState`: ``OPEN`` ⇄ ``DRAINING`` (a processing hold taken while it drains opens it again) → ``FLUSHED`` →
``SEALED``; it is queued for the fold exactly once, by :meth:`TrailBuffer.finish`, the only place that leaves
``OPEN``/``DRAINING`` for ``FLUSHED``.

Spans and payloads that arrive after a trail was flushed are *late*: they are counted — on the trail while it waits
for the fold, in the metrics always — and never start a second trail.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict, deque
from itertools import islice, repeat
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span

from .metrics import Counters
from .records import SpanRecord

__all__ = ["FlushReason", "Trail", "TrailBuffer", "TrailState"]

# Ids of the spans of sealed trails, remembered so that late spans and payloads can be counted (at least the newest
# this many).
MAX_LATE_IDS = 16_384
# Bytes charged for remembering one span id (a span dropped by the span limit, a late span).
ID_BYTES = 120
MAX_METADATA_KEYS = 1_000
# While requests are in flight the flush thread looks for flushed trails this often and takes them all at once,
# instead of being woken for each one; a trail waits for it at most this long (a flush when nothing else is in flight,
# a full batch, a deadline or a drain wakes it at once). Folding a batch in one go, rather than a trail or two between
# request threads, costs a fifth less CPU per trail on a loaded service (benchmarks/README.md).
FLUSH_DELAY_S = 0.1
# Flushed trails waiting that wake the flush thread before its next look.
WAKE_BATCH = 64
_NOT_WAITING = -1.0


class FlushReason(str, enum.Enum):
    """Why a trail was flushed; the value is what the trail's ``flush_reason`` says."""

    COMPLETE = "complete"
    """The root span, every child span and every hold have ended."""
    GRACE_EXPIRED = "grace_expired"
    """The request was over, but child spans or payload holds were still open after the grace period."""
    MAX_AGE = "max_age"
    """The trail was still open ``max_age_ms`` after its root span started."""
    CAPACITY = "capacity"
    """More than ``max_trails`` trails were in flight: the oldest was flushed."""
    MEMORY = "memory"
    """The trails in flight held more than ``max_buffer_bytes``: the oldest was flushed."""
    SHUTDOWN = "shutdown"
    """The processor was shut down while the trail was still open."""

    def __str__(self) -> str:
        return self.value


class TrailState(enum.Enum):
    """Where a trail is in its life."""

    OPEN = "open"
    """The request is running: its root span has not ended, or its processing is held (an ASGI app that has not
    returned, a Kafka record being processed)."""
    DRAINING = "draining"
    """The request is over; the trail waits (at most the grace period) for child spans and payload holds."""
    FLUSHED = "flushed"
    """Out of the buffer, queued for the fold; late spans and payloads are counted on it."""
    SEALED = "sealed"
    """Folded; late spans and payloads are counted in the metrics only."""


_OPEN = TrailState.OPEN
_DRAINING = TrailState.DRAINING
_FLUSHED = TrailState.FLUSHED
_SEALED = TrailState.SEALED


class Folded:
    """What the ids of a folded trail's spans point to, once the trail is gone: late arrivals under them are counted
    in the metrics only (as for any sealed trail). One shared instance (:data:`FOLDED`), so that remembering the ids
    keeps nothing of the trail alive — not its root span with its attributes and events."""

    __slots__ = ()
    state = TrailState.SEALED


FOLDED = Folded()


class Trail:
    """The buffer of one request."""

    __slots__ = (
        "captures",
        "created",
        "dropped",
        "dropped_ids",
        "errors",
        "grace_deadline",
        "holds",
        "metadata",
        "nbytes",
        "open",
        "processing",
        "reason",
        "root",
        "root_ended",
        "root_id",
        "span_ids",
        "spans",
        "state",
    )

    def __init__(self, root: Span, created: float) -> None:
        self.root: ReadableSpan = root
        self.root_id: int = root.context.span_id
        self.root_ended: ReadableSpan | None = None  # the root as it ended
        self.state = TrailState.OPEN
        self.reason: FlushReason | None = None
        self.spans: list[SpanRecord] = []
        self.span_ids: list[int] = [self.root_id]  # every id that maps to this trail in the owner map
        self.open = 0  # child spans started and not ended
        self.holds = 0  # payload holds: an HTTP response body, a broker acknowledgement (bounded by the grace)
        self.processing = 0  # processing holds: the request is still being handled (bounded by the age limit)
        self.captures: dict[int, dict[str, Any]] = {}
        self.metadata: dict[str, Any] = {}
        self.errors: list[dict[str, Any]] = []
        self.dropped: dict[str, int] = {}
        self.dropped_ids: set[int] | None = None  # spans dropped by the span limit (their children are dropped too)
        self.created = created
        self.grace_deadline = 0.0
        self.nbytes = 0

    def count(self, what: str, n: int = 1) -> None:
        self.dropped[what] = self.dropped.get(what, 0) + n

    def release_data(self) -> None:
        """Let go of what was folded; the trail stays as a small record for late arrivals."""
        self.spans = []
        self.captures = {}
        self.metadata = {}
        self.errors = []
        self.dropped_ids = None


class TrailBuffer:
    """The trails of one processor in flight, and the queue of flushed trails waiting for the fold.

    Args:
        grace_s, max_age_s: the deadlines of a trail whose request is over, and of any trail.
        max_trails, max_bytes: how many trails and how many (estimated) bytes may be buffered.
        max_spans: spans kept per trail.
        counters: where drops and flushes are counted.
    """

    def __init__(
        self,
        *,
        grace_s: float,
        max_age_s: float,
        max_trails: int,
        max_bytes: int,
        max_spans: int,
        max_errors: int,
        counters: Counters,
    ) -> None:
        self.grace_s = grace_s
        self.max_age_s = max_age_s
        self.max_trails = max_trails
        self.max_bytes = max_bytes
        self.max_spans = max_spans
        self.max_errors = max_errors
        self.counters = counters
        self.reset()

    def reset(self) -> None:
        """Empty buffers and a fresh lock (also in a forked child: a lock held at ``fork()`` would stay held)."""
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.trails: OrderedDict[int, Trail] = OrderedDict()  # open and draining trails, oldest first
        self.owner: dict[int, Trail] = {}  # span id -> its trail, until the trail is sealed
        self.late: dict[int, Trail | Folded] = {}  # span ids of sealed trails (the newest 16,384 to 32,768 kept)
        self.grace: deque[tuple[float, Trail]] = deque()  # grace deadlines, in deadline order
        self.ready: deque[Trail] = deque()  # flushed trails, in flush order
        self.open_bytes = 0  # estimated bytes held by the trails in flight (open and draining)
        self.queued_bytes = 0  # estimated bytes held by flushed trails waiting for the fold
        self.closed = False
        # When the waiting flush thread looks again (monotonic; ``inf``: only when woken); -1 while it is not waiting.
        self.worker_wake_at = _NOT_WAITING

    # ----------------------------------------------------------------------------------------- span events

    def open_trail(self, span: Span) -> None:
        """With the lock held: a new request (its root span started). Deadlines that are due are acted on here too,
        so under traffic they hold even while the flush thread is busy with a long fold."""
        now = time.monotonic()
        grace, trails = self.grace, self.trails
        if (grace and grace[0][0] <= now) or (trails and next(iter(trails.values())).created + self.max_age_s <= now):
            self.expire(now)
        trail = Trail(span, now)
        while len(self.trails) >= self.max_trails:
            self.finish(next(iter(self.trails.values())), FlushReason.CAPACITY)
        self.trails[trail.root_id] = trail
        self.owner[trail.root_id] = trail

    def start_child(self, trail: Trail, span_id: int, parent_id: int) -> None:
        """With the lock held: a span started under ``parent_id``, which belongs to ``trail``."""
        if trail.state is TrailState.FLUSHED or trail.state is TrailState.SEALED:
            # Started after the trail was flushed: remembered, and counted as late when it ends.
            trail.span_ids.append(span_id)
            self.owner[span_id] = trail
            return
        dropped = trail.dropped_ids
        if (dropped is not None and parent_id in dropped) or len(trail.span_ids) >= self.max_spans:
            # Over the span limit, or under a dropped span: dropped and counted, and remembered so that its own
            # children are counted too.
            if dropped is None:
                dropped = trail.dropped_ids = set()
            dropped.add(span_id)
            trail.span_ids.append(span_id)
            self.owner[span_id] = trail
            trail.count("spans")
            self.counters.dropped("spans", "max_spans_per_trail")
            self.charge(trail, ID_BYTES)
            return
        trail.span_ids.append(span_id)
        trail.open += 1
        self.owner[span_id] = trail

    def end_span(self, trail: Trail, span: ReadableSpan, span_id: int, record: SpanRecord | None = None) -> None:
        """With the lock held: a span of ``trail`` ended (the processor inlines the common case: a child span of a
        trail in flight ends while its request is running)."""
        state = trail.state
        if state is _FLUSHED or state is _SEALED:
            self.count_late(trail, "spans")
            return
        if span_id == trail.root_id:
            trail.root = span
            trail.root_ended = span
            self.settle(trail)
            return
        if trail.dropped_ids is not None and span_id in trail.dropped_ids:
            return  # counted when it started
        if record is None:
            record = SpanRecord(span)
        trail.spans.append(record)
        trail.open -= 1
        self.charge(trail, record.size)
        if trail.root_ended is not None:
            self.settle(trail)

    def start_late_child(self, trail: Trail | Folded, span_id: int) -> None:
        """With the lock held: a span started under a span of a sealed trail (counted as late when it ends)."""
        self.late[span_id] = trail

    def count_late(self, trail: Trail | Folded | None, what: str) -> None:
        """With the lock held: a span or payload arrived after its trail was flushed."""
        if isinstance(trail, Trail) and trail.state is TrailState.FLUSHED:
            trail.count(f"late_{what}")
        self.counters.dropped(what, "late")

    # --------------------------------------------------------------------------------------------- holds

    def hold(self, trail: Trail, processing: bool) -> bool:
        """With the lock held: keep ``trail`` open until :meth:`release`; ``False`` when it was already flushed."""
        if trail.state is TrailState.FLUSHED or trail.state is TrailState.SEALED:
            return False
        if processing:
            trail.processing += 1
            trail.state = TrailState.OPEN
        else:
            trail.holds += 1
        return True

    def release(self, trail: Trail, processing: bool) -> None:
        """With the lock held: end a hold taken with :meth:`hold`."""
        if trail.state is TrailState.FLUSHED or trail.state is TrailState.SEALED:
            return
        if processing:
            trail.processing -= 1
        else:
            trail.holds -= 1
        self.settle(trail)

    # ------------------------------------------------------------------------------------------ lifecycle

    def settle(self, trail: Trail) -> None:
        """With the lock held: flush ``trail`` when it is complete; start its grace period when its request is over."""
        if trail.root_ended is None or trail.processing > 0:
            return
        if trail.open <= 0 and trail.holds <= 0:
            self.finish(trail, FlushReason.COMPLETE)
        elif trail.state is TrailState.OPEN:
            trail.state = TrailState.DRAINING
            trail.grace_deadline = deadline = time.monotonic() + self.grace_s
            self.grace.append((deadline, trail))
            if deadline < self.worker_wake_at:  # sooner than the flush thread would look again
                self.wake_worker()

    def finish(self, trail: Trail, reason: FlushReason) -> None:
        """With the lock held: take ``trail`` out of the buffer and queue it for the fold (exactly once)."""
        if trail.state is not TrailState.OPEN and trail.state is not TrailState.DRAINING:
            return
        trail.state = TrailState.FLUSHED
        trail.reason = reason
        self.trails.pop(trail.root_id, None)
        self.open_bytes -= trail.nbytes
        if self.ready and self.queued_bytes + trail.nbytes > self.max_bytes:
            # The fold is behind by a whole buffer: this trail cannot be kept. Counted; its memory goes now, and
            # the worker only forgets it (reason None).
            trail.reason = None
            self.counters.dropped("trails", "fold_queue_full")
            trail.nbytes = 0
            trail.release_data()
        self.queued_bytes += trail.nbytes
        ready = self.ready
        ready.append(trail)
        wake_at = self.worker_wake_at
        # The flush thread takes flushed trails in batches: it is woken only when it would not look again soon (it
        # waits for no deadline), when a batch is full, or at shutdown.
        if wake_at >= 0.0 and (len(ready) >= WAKE_BATCH or self.closed or wake_at - time.monotonic() > FLUSH_DELAY_S):
            self.wake_worker()

    def wake_worker(self) -> None:
        """With the lock held: wake the flush thread now if it waits."""
        if self.worker_wake_at >= 0.0:
            self.worker_wake_at = _NOT_WAITING  # once: it looks at everything when it wakes
            self.wakeup.notify()

    def worker_wait(self, timeout: float | None, now: float) -> None:
        """With the lock held, on the flush thread: wait until woken or ``timeout`` seconds (``None``: until woken)."""
        self.worker_wake_at = float("inf") if timeout is None else now + timeout
        try:
            self.wakeup.wait(timeout)
        finally:
            self.worker_wake_at = _NOT_WAITING

    def expire(self, now: float) -> float | None:
        """With the lock held: flush every trail past its grace or age; return the next deadline (monotonic)."""
        grace = self.grace
        while grace:
            deadline, trail = grace[0]
            if trail.state is TrailState.DRAINING and trail.grace_deadline == deadline:
                if deadline > now:
                    break
                self.finish(trail, FlushReason.GRACE_EXPIRED)
            grace.popleft()
        trails = self.trails
        while trails:
            oldest = next(iter(trails.values()))
            if oldest.created + self.max_age_s > now:
                break
            self.finish(oldest, FlushReason.MAX_AGE)
        next_deadline = grace[0][0] if grace else None
        if trails:
            age = next(iter(trails.values())).created + self.max_age_s
            next_deadline = age if next_deadline is None else min(next_deadline, age)
        return next_deadline

    def charge(self, trail: Trail, nbytes: int) -> None:
        """With the lock held: account ``nbytes`` more held by ``trail`` (in flight); past the budget, flush the
        oldest trails."""
        trail.nbytes += nbytes
        self.open_bytes += nbytes
        if self.open_bytes > self.max_bytes:
            self.evict()

    def evict(self) -> None:
        """With the lock held: flush the oldest trails until the trails in flight are within the byte budget."""
        while self.trails and self.open_bytes > self.max_bytes:
            self.finish(next(iter(self.trails.values())), FlushReason.MEMORY)

    def take_ready(self) -> list[Trail]:
        """With the lock held: every flushed trail waiting for the fold, in flush order."""
        batch = list(self.ready)
        self.ready.clear()
        return batch

    def seal(self, trail: Trail) -> None:
        """With the lock held: the fold starts; from now on late arrivals count in the metrics only."""
        trail.state = TrailState.SEALED
        self.queued_bytes -= trail.nbytes
        trail.nbytes = 0

    def forget(self, trail: Trail) -> None:
        """With the lock held: the trail was folded; free its memory and remember its span ids as late."""
        span_ids = trail.span_ids
        late = self.late
        # Into the late ids first, then out of the owner map: a span event that reads them without the lock always
        # finds its id in one of the two.
        late.update(dict.fromkeys(span_ids, FOLDED))
        deque(map(self.owner.pop, span_ids, repeat(None)), maxlen=0)  # drop them all, at C speed
        if len(late) > 2 * MAX_LATE_IDS:  # keep the newest (a dict keeps insertion order)
            self.late = dict(islice(late.items(), len(late) - MAX_LATE_IDS, None))
        trail.span_ids = []
        trail.release_data()

    def close(self) -> None:
        """With the lock held: flush every trail in flight (``shutdown``); no new trail starts."""
        self.closed = True
        for trail in list(self.trails.values()):
            self.finish(trail, FlushReason.SHUTDOWN)
