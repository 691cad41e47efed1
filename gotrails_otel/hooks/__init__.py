"""Capture hooks, one module per instrumented library.

Each module offers ``instrumentor_kwargs()`` — the hook arguments to pass to that library's contrib instrumentor
(``HTTPXClientInstrumentor().instrument(**gotrails_otel.hooks.httpx.instrumentor_kwargs())``) — and, where a hook
alone cannot see a payload, ``install()``/``uninstall()`` for a small wrapper (an httpx ``send`` wrapper for response
bodies, SQLAlchemy engine listeners for arguments and row counts, a gRPC server interceptor, …). Hooks write into
the capture store of the trail that owns the span; they never raise into the application.
"""
