"""gotrails-otel: one request, one audit trail, folded from OpenTelemetry spans.

Every request (a local root span of kind SERVER or CONSUMER) becomes one JSON trail holding its request and
response, internal steps, integrations, errors and metadata, flushed once through a :class:`TrailExporter` (by
default the configured OpenTelemetry logs exporter). Three ways in: run the service under
``opentelemetry-instrument`` (nothing to import), call :func:`instrument` in an existing OpenTelemetry setup, or add
a :class:`TrailProcessor` to a TracerProvider yourself. The API (:func:`step`, :func:`integration`,
:func:`set_metadata`, :func:`record_error`) adds detail to the current trail; :mod:`gotrails_otel.testing` captures
trails in your own tests.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gotrails-otel")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from .api import (
    IntegrationHandle,
    StepHandle,
    end_step,
    integration,
    record_error,
    set_metadata,
    start_step,
    step,
    trace_step,
)
from .auto import instrument, uninstrument
from .config import ConfigError, TrailConfig
from .exporters import (
    FileTrailExporter,
    InMemoryTrailExporter,
    OTelLogTrailExporter,
    StdoutTrailExporter,
    TrailExporter,
)
from .hooks.kafka import kafka_record
from .processor import CaptureStore, FlushReason, TrailProcessor
from .propagation import GotrailsPropagator
from .schema import trail_schema
from .sealed import SealedTrail

__all__ = [
    "CaptureStore",
    "ConfigError",
    "FileTrailExporter",
    "FlushReason",
    "GotrailsPropagator",
    "InMemoryTrailExporter",
    "IntegrationHandle",
    "OTelLogTrailExporter",
    "SealedTrail",
    "StdoutTrailExporter",
    "StepHandle",
    "TrailConfig",
    "TrailExporter",
    "TrailProcessor",
    "__version__",
    "end_step",
    "instrument",
    "integration",
    "kafka_record",
    "record_error",
    "set_metadata",
    "start_step",
    "step",
    "trace_step",
    "trail_schema",
    "uninstrument",
]
