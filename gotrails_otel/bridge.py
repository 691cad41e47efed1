"""The OpenTelemetry bridge: a trail's metadata also on its root span, so a tracing backend can search by it.

With ``TrailConfig.metadata_on_span`` (``GOTRAILS_SPAN_METADATA=true``), every ``set_metadata(...)`` field is also
set on the request's root span as a ``gotrails.metadata.<key>`` attribute while the request runs. The values pass the
same masking policy as the trail first: a secret masked in the trail is masked on the span too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from ._json import dumps, json_safe
from .redact import Policy

__all__ = ["ATTRIBUTE_PREFIX", "metadata_attributes", "set_span_metadata"]

ATTRIBUTE_PREFIX = "gotrails.metadata."
_log = logging.getLogger("gotrails_otel")
_SCALARS = (str, bool, int, float)


def metadata_attributes(policy: Policy, fields: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """``fields``, masked by ``policy``, as span attributes: scalars and lists of one scalar type as they are,
    anything else as compact JSON text; ``None`` values are left out (OpenTelemetry has no null attribute)."""
    masked = policy.apply({"metadata": json_safe(dict(fields))})["metadata"]
    attributes: dict[str, AttributeValue] = {}
    for key, value in masked.items():
        name = ATTRIBUTE_PREFIX + str(key)
        if value is None:
            continue
        if isinstance(value, _SCALARS):
            attributes[name] = value
        elif (
            isinstance(value, list)
            and value
            and all(type(item) is type(value[0]) for item in value)
            and (isinstance(value[0], _SCALARS))
        ):
            attributes[name] = list(value)
        else:
            attributes[name] = dumps(value).decode("utf-8")
    return attributes


def set_span_metadata(span: Span, policy: Policy, fields: Mapping[str, Any]) -> None:
    """Set ``fields`` (masked) on ``span`` while it records; never raises into the application."""
    try:
        if span.is_recording():
            span.set_attributes(metadata_attributes(policy, fields))
    except Exception:  # the bridge is an extra: a failure here must not break the request
        _log.debug("gotrails: metadata could not be set on the root span", exc_info=True)
