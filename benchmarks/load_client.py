"""The load client of ``bench_service.py``, a process of its own: N keep-alive connections, each sending the next
``POST /v1/payments`` as soon as the previous answer arrived (a closed loop), for a time or a number of requests.

    python benchmarks/load_client.py --port PORT --pid SERVER_PID [--connections 16]
        (--warmup SECONDS --duration SECONDS | --warmup-requests N --requests N) [--rss-every N]

It is a small asyncio HTTP/1.1 client (no library parsing on the hot path, so it takes little of the CPU the server
competes for). The server's CPU time (user + system, the process given by ``--pid`` and all its descendants, read
from the OS through psutil) and its resident memory are sampled at the start and the end of the measured window, so
the figures are the server's own whatever else runs on the machine. One JSON document is printed on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import psutil
from payloads import payment_request

_HEAD = (
    "POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1:%(port)d\r\nUser-Agent: gotrails-bench/1\r\n"
    "Accept: application/json\r\nAuthorization: Bearer bench-token-%(n)d\r\n"
    "Content-Type: application/json\r\nContent-Length: %(length)d\r\n\r\n"
)


def request_bytes(port: int, n: int) -> bytes:
    """Request number ``n``: about 1 KiB of JSON, different text in every request (no cache hit by accident)."""
    body = payment_request(n)
    return (_HEAD % {"port": port, "n": n, "length": len(body)}).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = psutil.Process(args.pid)
        self.sent = 0
        self.completed = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.window_open = False
        self.latencies: list[float] = []
        self.stop = False
        self.rss_samples: list[tuple[int, int]] = []

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.server, *self.server.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.tree():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def rss(self) -> int:
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def next_number(self) -> int | None:
        if self.stop:
            return None
        limit = self.args.requests
        if limit is not None and self.sent >= limit + self.args.warmup_requests:
            return None
        self.sent += 1
        return self.sent

    def done_one(self, started: float, ok: bool) -> None:
        self.completed += 1
        if self.window_open:
            self.latencies.append(time.perf_counter() - started)
        every = self.args.rss_every
        if every and self.completed % every == 0:
            self.rss_samples.append((self.completed, self.rss()))
        if self.args.requests is not None and self.completed == self.args.warmup_requests:
            self.open_window()

    def open_window(self) -> None:
        self.t0, self.cpu0, self.count0, self.rss0 = time.perf_counter(), self.cpu_seconds(), self.completed, self.rss()
        self.window_open = True

    async def connection(self) -> None:
        port = self.args.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (n := self.next_number()) is not None:
                started = time.perf_counter()
                try:
                    writer.write(request_bytes(port, n))
                    status = await _read_response(reader)
                    ok = 200 <= status < 300
                    if not ok:
                        self._error(f"HTTP {status}")
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    ok = False
                    self._error(f"{type(exc).__name__}: {exc}")
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                self.done_one(started, ok)
        finally:
            writer.close()

    def _error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message)

    async def run(self) -> dict[str, Any]:
        args = self.args
        if args.requests is not None and args.warmup_requests == 0:
            self.open_window()
        tasks = [asyncio.create_task(self.connection()) for _ in range(args.connections)]
        if args.requests is None:
            await asyncio.sleep(args.warmup)
            self.open_window()
            await asyncio.sleep(args.duration)
        else:
            await asyncio.gather(*tasks)  # every connection stops once the last request was sent and answered
        t1, cpu1, count1, rss1 = time.perf_counter(), self.cpu_seconds(), self.completed, self.rss()
        self.window_open = False
        self.stop = True
        await asyncio.gather(*tasks)
        requests = count1 - self.count0
        seconds = t1 - self.t0
        cpu = cpu1 - self.cpu0
        latencies = sorted(self.latencies)
        return {
            "requests": requests,
            "seconds": seconds,
            "rps": requests / seconds if seconds > 0 else 0.0,
            "cpu_seconds": cpu,
            "cpu_us_per_request": cpu * 1e6 / requests if requests else 0.0,
            "rss_start": self.rss0,
            "rss_end": rss1,
            "completed_total": self.completed,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "latency_ms": {
                "p50": statistics.median(latencies) * 1000 if latencies else None,
                "p99": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
            },
            "rss_samples": self.rss_samples,
            "loadavg": list(psutil.getloadavg()),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server process (its descendants are counted too)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the measured window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--requests", type=int, help="measure this many requests instead of a duration")
    parser.add_argument("--warmup-requests", type=int, default=0, help="requests before the window (with --requests)")
    parser.add_argument("--rss-every", type=int, default=0, help="sample the server's RSS every N requests")
    args = parser.parse_args(argv)
    result = asyncio.run(Load(args).run())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
