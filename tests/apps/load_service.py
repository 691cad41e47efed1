"""A FastAPI service for the load tests, run under ``opentelemetry-instrument`` (no gotrails code but metadata).

``POST /async/{n}``: an async endpoint that calls the upstream (UPSTREAM_URL) with ``httpx.AsyncClient``.
``POST /sync/{n}``: a sync endpoint (thread pool) that writes and reads Redis (REDIS_URL).
Both answer ``{"n": n, ...}`` and record ``n`` as metadata, so a trail can be matched to its request.
``POST /leave-open``: answers at once, leaving a child span open.
"""

import os

import httpx
import redis
from fastapi import FastAPI
from opentelemetry import trace

import gotrails_otel as gt

app = FastAPI()
UPSTREAM = os.environ.get("UPSTREAM_URL", "")
_client: httpx.AsyncClient | None = None
_redis: redis.Redis | None = None
_open_spans: list[trace.Span] = []


def client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=30)
    return _client


def cache() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["REDIS_URL"], max_connections=100)
    return _redis


@app.post("/async/{n}")
async def call_upstream(n: int, payload: dict) -> dict:
    gt.set_metadata(n=n)
    reply = await client().post(f"{UPSTREAM}/echo/{n}", json={"n": n, "item": payload.get("item")})
    return {"n": n, "upstream": reply.json()}


@app.post("/sync/{n}")
def use_redis(n: int, payload: dict) -> dict:
    gt.set_metadata(n=n)
    cache().set(f"order:{n}", str(payload.get("item")))
    value = cache().get(f"order:{n}")
    return {"n": n, "cached": value.decode() if value else None}


@app.post("/leave-open")
async def leave_open() -> dict:
    """Answers at once but leaves a child span open (work that would go on after the response)."""
    gt.set_metadata(kind="leave-open")
    _open_spans.append(trace.get_tracer("app").start_span("still-running"))
    return {"n": -1}
