"""A FastAPI app whose factory sets OpenTelemetry and gotrails up, as many applications do — run as
``uvicorn setup_in_app:create_app --factory``, not under ``opentelemetry-instrument``. uvicorn calls the factory
while its own signal handlers are in place, so gotrails' SIGTERM handler cannot be installed, and uvicorn ends the
process by re-raising SIGTERM with its default action (no ``atexit`` handlers): the trails of answered requests
must be written at the ASGI lifespan's shutdown instead.

The trail exporter is the file exporter slowed down by ``EXPORT_DELAY_S`` per trail, as a remote exporter is.
"""

import asyncio
import os
import signal
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from gotrails_otel import FileTrailExporter, SealedTrail, TrailConfig, TrailProcessor
from gotrails_otel.hooks import instrument_libraries

DELAY_S = float(os.environ.get("EXPORT_DELAY_S", "0"))


class SlowFileExporter(FileTrailExporter):
    def export(self, trail: SealedTrail) -> None:
        time.sleep(DELAY_S)
        super().export(trail)


def create_app() -> Any:
    handler = signal.getsignal(signal.SIGTERM)
    provider = TracerProvider()
    provider.add_span_processor(TrailProcessor(SlowFileExporter(os.environ["TRAILS_FILE"]), TrailConfig.from_env()))
    trace.set_tracer_provider(provider)
    instrument_libraries()
    from fastapi import FastAPI  # after the instrumentation, which replaces the class

    app = FastAPI()

    @app.get("/sigterm-handler")
    async def sigterm_handler() -> dict:
        return {"at_setup": getattr(handler, "__qualname__", repr(handler))}

    @app.post("/slow/{n}")
    async def slow(n: int, payload: dict) -> dict:
        await asyncio.sleep(0.2)
        return {"n": n, "item": payload.get("item")}

    return app
