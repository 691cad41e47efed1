"""CPU time of a running Python server, thread by thread: which thread spends what, per request.

    python benchmarks/bench_service.py --long --frameworks fastapi --setups gotrails   # prints the server's pid
    python benchmarks/thread_cpu.py <pid> --seconds 10 --rps 250

Threads are named from ``py-spy dump`` (``MainThread``, ``AnyIO worker thread``, ``gotrails-flush``,
``gotrails-export``, ``OtelBatchSpanRecordProcessor`` …) and grouped by name; for each group: user and system CPU as a
share of one core over the window, voluntary and involuntary context switches per second, and, with ``--rps`` (the
server's requests per second over the same window), CPU microseconds and context switches per request. Linux only
(``/proc/<pid>/task``); needs ``py-spy`` on the PATH for the names (threads it does not list are shown as ``?``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time

_NAMED = re.compile(r'Thread (\d+) \([^)]*\): "([^"]+)"')


def sample(pid: int) -> dict[int, tuple[float, float, int, int]]:
    """Per thread id: user and system CPU seconds, voluntary and involuntary context switches so far."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{name}/stat") as stream:
                stat = stream.read()
            with open(f"/proc/{pid}/task/{name}/status") as stream:
                status = stream.read()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        voluntary = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
        involuntary = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M)
        found[int(name)] = (
            int(fields[11]) / tick,
            int(fields[12]) / tick,
            int(voluntary.group(1)) if voluntary else 0,
            int(involuntary.group(1)) if involuntary else 0,
        )
    return found


def names(pid: int) -> dict[int, str]:
    """Thread id -> Python thread name, from ``py-spy dump``."""
    try:
        dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return {}
    return {int(m.group(1)): m.group(2) for m in _NAMED.finditer(dump.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pid", type=int)
    parser.add_argument("--seconds", type=float, default=10.0, help="the window (default 10)")
    parser.add_argument("--rps", type=float, default=None, help="the server's requests per second in the window")
    args = parser.parse_args()
    named = names(args.pid)
    before, start = sample(args.pid), time.monotonic()
    time.sleep(args.seconds)
    after, elapsed = sample(args.pid), time.monotonic() - start
    groups: dict[str, list[float]] = {}
    for tid, now in after.items():
        then = before.get(tid, (0.0, 0.0, 0, 0))
        group = groups.setdefault(named.get(tid, "?"), [0.0, 0.0, 0.0, 0.0, 0.0])
        for index in range(4):
            group[index] += now[index] - then[index]
        group[4] += 1
    print(f"{'threads':34} {'user':>6} {'sys':>6} {'vol/s':>7} {'invol/s':>7}", end="")
    print(f" {'CPU us/req':>10} {'switches/req':>12}" if args.rps else "")
    for name, (user, system, voluntary, involuntary, count) in sorted(groups.items(), key=lambda kv: -sum(kv[1][:2])):
        line = (
            f"{name[:28]:28} x{int(count):3d} {user / elapsed:6.1%} {system / elapsed:6.1%} "
            f"{voluntary / elapsed:7.0f} {involuntary / elapsed:7.0f}"
        )
        if args.rps:
            per_request = (user + system) / elapsed / args.rps * 1e6
            line += f" {per_request:10.0f} {(voluntary + involuntary) / elapsed / args.rps:12.1f}"
        print(line)


if __name__ == "__main__":
    main()
