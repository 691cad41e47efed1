"""gotrails-otel's pytest plugin (entry point ``pytest11``): the ``captured_trails`` fixture.

.. code-block:: python

    def test_payment_is_audited(client, captured_trails):
        client.post("/v1/payments", json={"amount": 150000})
        [trail] = captured_trails
        assert trail["response"]["status"] == 201

Disable it with ``-p no:gotrails_otel``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import CapturedTrails, capture_trails

__all__ = ["captured_trails"]


@pytest.fixture
def captured_trails() -> Iterator[CapturedTrails]:
    """The trails exported while the test runs (see :func:`gotrails_otel.testing.capture_trails`)."""
    with capture_trails() as trails:
        yield trails
