"""What gotrails costs a real web service, next to what OpenTelemetry itself costs: side by side, as ratios.

    python benchmarks/bench_service.py                      # FastAPI and Flask, 5 interleaved rounds (~10 min)
    python benchmarks/bench_service.py --rounds 9 --duration 20
    python benchmarks/bench_service.py --long               # memory over 100,000 requests (gotrails setup)
    python benchmarks/bench_service.py --smoke              # a few requests per setup: does the harness work?

Needs ``pip install -e '.[bench]'`` and ``redis-server`` on the PATH.

The service (``service_app.py``): per ``POST /v1/payments`` a JSON body of about 1 KiB, two SQLAlchemy queries on
SQLite, one Redis ``SET`` on a redis-server started here, one httpx ``POST`` to a local upstream stub
(``upstream.py``, its own process) and a JSON response of about 1 KiB. FastAPI is served by uvicorn (one process,
uvloop and httptools); Flask by gunicorn (one worker, the threaded ``gthread`` worker class). Three setups:

* ``none``      no OpenTelemetry;
* ``otel``      the OTel SDK, the framework, SQLAlchemy, Redis and httpx instrumentations, a BatchSpanProcessor with
                an exporter that drops every batch;
* ``gotrails``  the same plus ``gotrails_otel.instrument()``: body capture on, default masking, the file exporter.

Each run starts a fresh server, lets the load client (``load_client.py``, its own process: 16 keep-alive connections
in a closed loop) warm it up, then measures a window: requests per second, and the server's CPU time per request
read from the OS (the server process and its descendants, user + system), so other load on the machine does not
count as the server's. Rounds are interleaved (every setup once per round, in a rotating order) and the figures are
medians with their spread (min-max over rounds). The ratios are paired within a round:

* throughput with gotrails / with OTel alone (target >= 0.90);
* gotrails' share: (CPU/request with gotrails - with OTel) / (CPU/request with OTel - without OTel) (target <= 25 %).

Trails are checked after each gotrails run: one per request, with the request body captured and the card masked.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gotrails_otel.demo.servers import free_port, redis_server, wait_port  # noqa: E402

FRAMEWORKS = ("fastapi", "flask")
SETUPS = ("none", "otel", "gotrails")
SETUP_LABELS = {
    "none": "no OpenTelemetry",
    "otel": "OTel SDK + instrumentations + BatchSpanProcessor (null exporter)",
    "gotrails": "the same + gotrails (bodies, default masking, file exporter)",
}
SERVERS = {"fastapi": "uvicorn, 1 process (uvloop, httptools)", "flask": "gunicorn, 1 gthread worker"}


@dataclass
class Run:
    framework: str
    setup: str
    round: int
    rps: float
    cpu_us: float
    rss_mib: float
    result: dict[str, Any] = field(repr=False)


# ------------------------------------------------------------------------------------------------ processes


@contextlib.contextmanager
def upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), str(port)])
    try:
        wait_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def server_command(framework: str, port: int, threads: int) -> list[str]:
    if framework == "fastapi":
        return [
            *(sys.executable, "-m", "uvicorn", "--factory", "service_app:fastapi_app", "--app-dir", str(HERE)),
            *("--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"),
            *("--loop", "uvloop", "--http", "httptools", "--backlog", "256"),
        ]
    return [
        *(sys.executable, "-m", "gunicorn", "--chdir", str(HERE), "--workers", "1", "--worker-class", "gthread"),
        *("--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--log-level", "warning"),
        *("--keep-alive", "30", "--backlog", "256", "service_app:flask_app()"),
    ]


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait until the app answers (gunicorn listens before its worker has loaded the app)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before it was ready")
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                connection.close()
                return
        time.sleep(0.1)
    raise SystemExit(f"the server on port {port} was not ready after {timeout:.0f} s")


def run_once(
    framework: str, setup: str, number: int, args: argparse.Namespace, redis_url: str, upstream_url: str
) -> dict[str, Any]:
    """One fresh server, one load-client run against it; the client's JSON result plus the trail check."""
    folder = Path(tempfile.mkdtemp(prefix=f"gotrails-bench-{framework}-{setup}-"))
    port = free_port()
    trails = folder / "trails.jsonl"
    env = {
        **os.environ,
        "BENCH_SETUP": setup,
        "BENCH_DB": str(folder / "service.db"),
        "BENCH_REDIS_URL": redis_url,
        "BENCH_UPSTREAM_URL": upstream_url,
        "GOTRAILS_EXPORTER": "file",
        "GOTRAILS_FILE": str(trails),
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p),
    }
    for name in [
        k for k in env if k.startswith(("OTEL_", "GOTRAILS_")) and k not in ("GOTRAILS_EXPORTER", "GOTRAILS_FILE")
    ]:
        del env[name]  # the setups are chosen here, not by the caller's environment
    process = subprocess.Popen(server_command(framework, port, args.threads), env=env)
    try:
        wait_healthy(port, process)
        if args.long:
            print(f"  {framework}/{setup}: server pid {process.pid} (py-spy can attach to it now)", flush=True)
        client = [sys.executable, str(HERE / "load_client.py"), "--port", str(port), "--pid", str(process.pid)]
        client += ["--connections", str(args.connections)]
        if args.long:
            client += ["--requests", str(args.long_requests), "--warmup-requests", "0"]
            client += ["--rss-every", str(max(args.long_requests // 20, 1))]
        elif args.smoke:
            client += ["--requests", str(args.smoke_requests), "--warmup-requests", str(args.connections)]
        else:
            client += ["--warmup", str(args.warmup), "--duration", str(args.duration)]
        out = subprocess.run(client, check=True, stdout=subprocess.PIPE, text=True).stdout
        result: dict[str, Any] = json.loads(out)
    finally:
        process.terminate()  # graceful: the processors flush at exit
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    try:
        if setup == "gotrails":
            result["trails"] = check_trails(trails, result["completed_total"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if result["errors"]:
        print(f"  ! {result['errors']} failed requests: {result['error_samples']}", file=sys.stderr)
        if result["errors"] > max(result["completed_total"] // 100, 0):
            raise SystemExit(f"{framework}/{setup}: too many failed requests ({result['errors']})")
    return result


def check_trails(path: Path, requests: int) -> int:
    """The trails of the payment requests: one per request, body captured, card number masked."""
    count = 0
    sample: dict[str, Any] | None = None
    if path.exists():
        with path.open("rb") as lines:
            for line in lines:
                trail = json.loads(line)
                if trail.get("request", {}).get("path") == "/v1/payments":
                    count += 1
                    sample = sample or trail
    if count != requests:
        raise SystemExit(f"expected {requests} trails of POST /v1/payments, found {count} in {path}")
    assert sample is not None
    body = sample["request"].get("body")
    if not isinstance(body, dict) or body.get("card", {}).get("number") != "***":
        raise SystemExit(f"the trail's request body is not captured and masked as expected: {body!r}")
    kinds = sorted(i["type"] for i in sample["integrations"])
    if kinds != ["cache", "database", "database", "http"]:
        raise SystemExit(f"the trail's integrations are not the service's calls: {kinds}")
    return count


# ------------------------------------------------------------------------------------------------- figures


def spread(values: Sequence[float], fmt: str) -> str:
    """``median [min-max]``; the spread is what a noisy machine shows."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def _paired(by_round: dict[tuple[int, str], Run], rounds: Sequence[int], fn: Any, *needed: str) -> list[float]:
    """``fn`` of the runs of ``needed`` setups, for each round that has them all (ratios within one round); rounds
    where ``fn`` gives ``None`` are left out."""
    values = [
        fn(*(by_round[(number, s)] for s in needed))
        for number in rounds
        if all((number, s) in by_round for s in needed)
    ]
    return [v for v in values if v is not None]


def _share(gotrails: Run, otel: Run, none: Run) -> float | None:
    """gotrails' CPU per request as a percentage of what OTel adds; none when OTel added nothing measurable."""
    added = otel.cpu_us - none.cpu_us
    return (gotrails.cpu_us - otel.cpu_us) / added * 100 if added > 0 else None


def report(runs: list[Run], frameworks: Sequence[str], setups: Sequence[str]) -> None:
    for framework in frameworks:
        mine = [r for r in runs if r.framework == framework]
        rounds = sorted({r.round for r in mine})
        print()
        print(f"{framework} ({SERVERS[framework]}), {len(rounds)} round(s); median [min-max]")
        print(f"{'setup':66} {'requests/s':>20} {'CPU us/request':>22} {'RSS MiB':>16}")
        for setup in setups:
            these = [r for r in mine if r.setup == setup]
            print(
                f"{SETUP_LABELS[setup]:66} {spread([r.rps for r in these], '.0f'):>20} "
                f"{spread([r.cpu_us for r in these], ',.0f'):>22} {spread([r.rss_mib for r in these], '.0f'):>16}"
            )
        by_round = {(r.round, r.setup): r for r in mine}
        paired = functools.partial(_paired, by_round, rounds)

        if "otel" in setups and "none" in setups:
            ratio = paired(lambda o, n: o.rps / n.rps, "otel", "none")
            added = paired(lambda o, n: o.cpu_us - n.cpu_us, "otel", "none")
            print(
                f"  OTel alone: throughput x{spread(ratio, '.2f')} of none, adds {spread(added, ',.0f')} us CPU/request"
            )
        if "gotrails" in setups and "otel" in setups:
            ratio = paired(lambda g, o: g.rps / o.rps, "gotrails", "otel")
            added = paired(lambda g, o: g.cpu_us - o.cpu_us, "gotrails", "otel")
            print(
                f"  gotrails: throughput x{spread(ratio, '.2f')} of OTel alone (target >= 0.90), "
                f"adds {spread(added, ',.0f')} us CPU/request"
            )
            if "none" in setups:
                share = paired(_share, "gotrails", "otel", "none")
                print(f"  gotrails CPU/request as a share of what OTel adds: {spread(share, '.0f')} % (target <= 25 %)")


def report_long(framework: str, setup: str, result: dict[str, Any]) -> None:
    samples = result["rss_samples"]
    print()
    print(f"{framework} / {SETUP_LABELS[setup]}: RSS over {result['completed_total']:,} requests")
    print(f"{'requests':>10} {'RSS MiB':>9}")
    for done, rss in samples:
        print(f"{done:10,d} {rss / 2**20:9.1f}")
    if len(samples) >= 4:
        half = len(samples) // 2
        first, last = samples[half][1], samples[-1][1]
        per_10k = (last - first) / 2**20 / ((samples[-1][0] - samples[half][0]) / 10_000)
        print(f"second half: {first / 2**20:.1f} -> {last / 2**20:.1f} MiB ({per_10k:+.2f} MiB per 10,000 requests)")
    print(f"throughput {result['rps']:.0f} requests/s, CPU {result['cpu_us_per_request']:,.0f} us/request")


def versions() -> str:
    names = ("opentelemetry-sdk", "fastapi", "flask", "uvicorn", "gunicorn", "sqlalchemy", "redis", "httpx")
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cpu = f"{os.cpu_count()} cores {model or platform.machine()}"
    return f"{cpu}, {platform.system()} {platform.release()}, CPython {platform.python_version()}"


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma separated: fastapi,flask")
    parser.add_argument("--setups", default=None, help="comma separated: none,otel,gotrails (default: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measured window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=16, help="gunicorn threads (Flask)")
    parser.add_argument("--long", action="store_true", help="memory over --long-requests requests instead")
    parser.add_argument("--long-requests", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="one round of --smoke-requests requests per setup")
    parser.add_argument("--smoke-requests", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write every run's raw result here")
    args = parser.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    default_setups = "gotrails" if args.long else ",".join(SETUPS)
    setups = [s for s in (args.setups or default_setups).split(",") if s]
    for name, allowed in ((frameworks, FRAMEWORKS), (setups, SETUPS)):
        unknown = set(name) - set(allowed)
        if unknown:
            parser.error(f"unknown: {', '.join(sorted(unknown))} (choose from {', '.join(allowed)})")
    rounds = 1 if (args.smoke or args.long) else args.rounds

    print(f"bench_service, {datetime.date.today().isoformat()}: {machine()}")
    print(versions())
    if args.long:
        what = f"{args.long_requests:,} requests per run"
    elif args.smoke:
        what = f"smoke: {args.smoke_requests} requests per run"
    else:
        what = f"{rounds} interleaved rounds, {args.warmup:g} s warm-up + {args.duration:g} s measured per run"
    print(f"{args.connections} keep-alive connections; {what}; load average at start {os.getloadavg()[0]:.2f}")

    runs: list[Run] = []
    raw: list[dict[str, Any]] = []
    with redis_server() as redis, upstream() as upstream_url:
        for number in range(rounds):
            for index, framework in enumerate(frameworks):
                shift = (number + index) % len(setups)
                for setup in setups[shift:] + setups[:shift]:  # a rotating order: no setup always goes first
                    result = run_once(framework, setup, number, args, redis.url, upstream_url)
                    runs.append(
                        Run(
                            framework,
                            setup,
                            number,
                            result["rps"],
                            result["cpu_us_per_request"],
                            result["rss_end"] / 2**20,
                            result,
                        )
                    )
                    raw.append({"framework": framework, "setup": setup, "round": number, **result})
                    checked = f", {result['trails']} trails checked" if "trails" in result else ""
                    print(
                        f"  round {number + 1} {framework:8} {setup:9} {result['rps']:7.0f} req/s "
                        f"{result['cpu_us_per_request']:8,.0f} us CPU/req  RSS {result['rss_end'] / 2**20:6.1f} MiB  "
                        f"p50 {result['latency_ms']['p50']:.1f} ms  load {result['loadavg'][0]:.2f}{checked}",
                        flush=True,
                    )
                    if args.long:
                        report_long(framework, setup, result)
    if not args.long:
        report(runs, frameworks, setups)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
