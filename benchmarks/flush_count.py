"""The flush side alone, on distinct realistic trails: CPU time per stage, or a fixed amount of work to count.

    python benchmarks/flush_count.py                      # CPU us per trail and per stage (distinct trails)
    python benchmarks/flush_count.py --trails 200 --only  # just the work, for an instruction counter

Each trail is one request of ``bench_core``'s payment service (its own body, ids and amounts, so the masking
caches hit only what repeats from request to request, as in a real service), collected as the processor hands it
to the fold. The flush work is what the flush thread does per trail: fold, mask and limit, the stages (none by
default), the integrity stamp and the seal (``FlushWorker._fold`` and ``FlushWorker._stages_and_seal``).

CPU time on a machine shared with other work moves with that work; instruction counts do not. Count the
instructions of the flush work as the difference between two runs that differ only in the number of trails::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/flush_count.py --trails 0 --only
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/flush_count.py --trails 200 --only

(``Collected`` in each summary; the difference divided by 200 is the instructions per trail.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core
from opentelemetry.sdk.trace import TracerProvider

from gotrails_otel import TrailConfig, TrailProcessor
from gotrails_otel import pipeline as pipeline_module
from gotrails_otel.fold import FoldInput

WARMUP = 50
_served = [0]  # requests made so far: every trail of a run is a different request


def collect(count: int) -> list[FoldInput]:
    """The fold inputs of ``count`` distinct realistic requests, as the processor hands them to the fold."""
    seen: list[FoldInput] = []
    real_fold = pipeline_module.fold

    def keep(data: FoldInput, *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(data)
        return real_fold(data, *args, **kwargs)

    provider = TracerProvider(resource=bench_core.RESOURCE)
    trails = TrailProcessor(bench_core.NullTrailExporter(), TrailConfig(max_trails=count * 2 + 10))
    provider.add_span_processor(trails)
    pipeline_module.fold = keep  # type: ignore[attr-defined]
    try:
        with bench_core.httpx_send_wrapper():
            service = bench_core.Service(provider, hooks=True)
            service.number = _served[0]
            for _ in range(count):
                service()
            _served[0] = service.number
            trails.force_flush()
    finally:
        pipeline_module.fold = real_fold  # type: ignore[attr-defined]
        provider.shutdown()
    if len(seen) != count:
        raise SystemExit(f"expected {count} trails, got {len(seen)}")
    return seen


def worker() -> Any:
    """A fresh processor's flush worker (integrity on, as by default), never started."""
    return TrailProcessor(bench_core.NullTrailExporter(), TrailConfig())._worker


def run(inputs: list[FoldInput], flush: Any) -> None:
    for data in inputs:
        flush._stages_and_seal(flush._fold(None, data))


def stages(inputs: list[FoldInput], flush: Any) -> dict[str, float]:
    """CPU us per trail for each stage: fold, mask and limit, stamp and seal."""
    clock = time.thread_time
    spent = {"fold": 0.0, "mask and limit": 0.0, "stamp and seal": 0.0}
    policy = flush.policy
    fold = pipeline_module.fold
    for data in inputs:
        start = clock()
        document = fold(data)
        folded = clock()
        document = policy.apply(document)
        masked = clock()
        flush._stages_and_seal(document)
        end = clock()
        spent["fold"] += folded - start
        spent["mask and limit"] += masked - folded
        spent["stamp and seal"] += end - masked
    return {stage: seconds * 1e6 / len(inputs) for stage, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trails", type=int, default=500, help="distinct trails per round (default 500)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="store_true", help="do the flush work once, print nothing")
    args = parser.parse_args()
    inputs = collect(WARMUP + args.trails)
    flush = worker()
    run(inputs[:WARMUP], flush)  # imports, compiled expressions and the caches of what repeats
    if args.only:
        run(inputs[WARMUP:], flush)
        return
    whole: list[float] = []
    by_stage: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        batch = collect(args.trails)
        start = time.thread_time()
        run(batch, flush)
        whole.append((time.thread_time() - start) * 1e6 / args.trails)
        for stage, micros in stages(collect(args.trails), flush).items():
            by_stage.setdefault(stage, []).append(micros)
    print(f"Flush side per distinct realistic trail, CPU us, median of {args.rounds} rounds [min-max]")
    for stage, values in by_stage.items():
        print(f"  {stage:16} {bench_core.spread(values):>22}")
    print(f"  {'all (pipeline)':16} {bench_core.spread(whole):>22}")


if __name__ == "__main__":
    main()
