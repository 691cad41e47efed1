"""Application processes for the library tests: a real server (gunicorn, runserver, an aiohttp app, a Celery
worker, a Kafka consumer) in its own process, under ``opentelemetry-instrument`` (zero code) or setting gotrails up
itself, writing its trails to a file that the test reads."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import collect_trails, trails_in_file
from .services import free_port, stop_pid, wait_port

APPS = Path(__file__).parent / "apps"
BASE_ENV = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_SERVICE_NAME": "shop-service",
    "PYTHONPATH": str(APPS),
    "GOTRAILS_GRACE_MS": "300",
}


def instrument_bin() -> str:
    found = shutil.which("opentelemetry-instrument")
    if found is None:
        pytest.skip("opentelemetry-instrument is not installed")
    return found


def app_env(trails: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an application process: no OTEL_/GOTRAILS_ settings of the caller, trails to a file."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GOTRAILS_"))}
    full.update(BASE_ENV)
    full.update({"GOTRAILS_EXPORTER": "file", "GOTRAILS_FILE": str(trails)})
    full.update(env or {})
    return full


class AppProcess:
    """One application process; ``zero_code`` runs it under ``opentelemetry-instrument``."""

    def __init__(
        self,
        command: list[str],
        trails: Path,
        env: dict[str, str] | None = None,
        *,
        zero_code: bool = True,
        port: int | None = None,
        ready: Callable[[AppProcess], bool] | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else ""
        self.trails_path = trails
        self.log = trails.with_suffix(".log")
        self._log_file = self.log.open("wb")
        prefix = [instrument_bin()] if zero_code else []
        self.process = subprocess.Popen(
            [*prefix, *command],
            env=app_env(trails, env),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers are stopped with it (signal to the process group)
        )
        try:
            if port is not None:
                wait_port(port, timeout=60)
            elif ready is not None:
                import time

                deadline = time.monotonic() + 60
                while not ready(self):
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise TimeoutError("the process did not become ready")
                    time.sleep(0.05)
        except TimeoutError:
            self.stop()
            raise AssertionError(self.log.read_text()) from None

    def lines(self) -> list[dict[str, Any]]:
        return trails_in_file(self.trails_path)

    def trails(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        return collect_trails(self.lines, count, timeout, lambda: f"; log:\n{self.log.read_text()}")

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                stop_pid(self.process.pid, timeout=0)
                self.process.wait(timeout=10)
        self._log_file.close()


def start_apps(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    """The body of an ``apps`` fixture: start application processes; every one is stopped when the test ends."""
    started: list[AppProcess] = []

    def start(command: list[str], env: dict[str, str] | None = None, name: str = "app", **kwargs: Any) -> AppProcess:
        process = AppProcess(command, tmp_path / f"{name}.jsonl", env, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


__all__ = ["APPS", "AppProcess", "app_env", "free_port", "instrument_bin", "start_apps"]
