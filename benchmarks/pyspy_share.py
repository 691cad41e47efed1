"""Who spends the CPU in a py-spy profile of the service: gotrails, OpenTelemetry, or the rest; and where in gotrails.

    py-spy record --gil --threads --full-filenames -d 30 -f raw -o profile.txt --pid <server pid>
    python benchmarks/pyspy_share.py profile.txt

Each sample (with ``--gil``: a moment a thread held the GIL, i.e. ran Python) goes to the package of its innermost
frame outside the standard library, so time in ``threading`` or ``re`` counts for whoever called them; every sample of
gotrails' flush thread counts for gotrails. Then gotrails' samples are broken down: the flush thread by step, the
request path by hook or processor entry point, and by function (inclusive and innermost).
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterator

_STDLIB = re.compile(r"/lib/python3\.\d+/(?!site-packages)|<frozen ")
_PACKAGE = re.compile(r"site-packages/([^/]+)")
_STDLIB_DIR = re.compile(r"^.*/lib/python3\.\d+/")


def component(frame: str) -> str | None:
    """The package a frame belongs to; ``None`` for the standard library."""
    _, _, location = frame.partition(" (")
    if _STDLIB.search(location):
        return None
    path = location.rsplit(":", 1)[0]
    if "/gotrails_otel/" in path:
        return "gotrails"
    if "/opentelemetry/" in path:
        return "opentelemetry"
    if "/benchmarks/" in path:
        return "service_app"
    found = _PACKAGE.search(path)
    return found.group(1).removesuffix(".py") if found else path


def label(frame: str) -> str:
    """``function (path inside its package)``."""
    name, _, location = frame.partition(" (")
    path = location.rstrip(")").rpartition(":")[0]
    for marker in ("/gotrails_otel/", "site-packages/"):
        if marker in path:
            path = path.split(marker)[-1]
            break
    return f"{name} ({_STDLIB_DIR.sub('', path)})"


def samples(path: str) -> Iterator[tuple[str, list[str], int]]:
    """``(thread name, frames outermost first, count)`` of each line of a py-spy raw profile."""
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            frames = stack.split(";")
            thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread (") else ""
            yield thread, frames[1:] if thread else frames, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="py-spy raw output (record -f raw, with --threads --full-filenames)")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    total = 0
    owners: collections.Counter[str] = collections.Counter()
    flush_total = 0
    flush_steps: collections.Counter[str] = collections.Counter()
    entries: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    innermost: collections.Counter[str] = collections.Counter()
    for thread, frames, count in samples(args.profile):
        total += count
        owned = [i for i, frame in enumerate(frames) if component(frame) is not None]
        last = owned[-1] if owned else None
        owner = component(frames[last]) if last is not None else "stdlib"
        flush = thread.startswith("gotrails")
        if flush:
            owner = "gotrails"
        owners[owner or "stdlib"] += count
        if owner != "gotrails":
            continue
        innermost[label(frames[last]) if last is not None else "(stdlib)"] += count
        for name in {label(frame) for frame in frames if "/gotrails_otel/" in frame}:
            inclusive[name] += count
        if flush:
            flush_total += count
            emit = next((i for i, frame in enumerate(frames) if "._process (" in frame), None)
            if emit is None:
                flush_steps["worker loop: " + (label(frames[-1]) if frames else "(no Python frame)")] += count
            else:
                flush_steps[" > ".join(label(f).split(" (")[0] for f in frames[emit + 1 : emit + 3]) or "_process"] += (
                    count
                )
        elif last is not None:
            first = last  # the outermost gotrails frame of the innermost run of them: the hook or processor entry
            while first > 0 and component(frames[first - 1]) in ("gotrails", None):
                first -= 1
            while component(frames[first]) != "gotrails":
                first += 1
            entries[label(frames[first])] += count
    gotrails, otel = owners["gotrails"], owners["opentelemetry"]
    print(f"{total} samples")
    for name, count in owners.most_common(12):
        print(f"  {count / total:6.1%}  {name}")
    print(
        f"\ngotrails {gotrails / total:.1%} of the samples (flush thread {flush_total / total:.1%}, request path "
        f"{(gotrails - flush_total) / total:.1%}); OpenTelemetry {otel / total:.1%}; gotrails / OpenTelemetry "
        f"{gotrails / otel if otel else float('nan'):.2f}"
    )
    sections = (
        ("flush thread, by step", flush_steps, flush_total),
        ("request path, by gotrails entry point", entries, gotrails - flush_total),
        ("gotrails, inclusive", inclusive, gotrails),
        ("gotrails, innermost frame", innermost, gotrails),
    )
    for title, counter, base in sections:
        print(f"\n{title} (share of {base} samples)")
        for name, count in counter.most_common(args.top):
            print(f"  {count / max(base, 1):6.1%}  {name}")


if __name__ == "__main__":
    main()
