"""``gotrails-otel demo``: a payment service whose requests become trails, with everything it needs embedded."""
