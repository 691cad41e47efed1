"""redis-py against a real redis-server: commands, keys, replies, pipelines, async, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.trace import SpanKind
from redis.backoff import NoBackoff
from redis.retry import Retry

from gotrails_otel.hooks import redis as redis_hooks

from .conftest import TrailHarness
from .services import free_port


@pytest.fixture
def instrumented(semconv: str) -> Iterator[str]:
    RedisInstrumentor().instrument(**redis_hooks.instrumentor_kwargs())
    redis_hooks.install()
    yield semconv
    redis_hooks.uninstall()
    RedisInstrumentor().uninstrument()


def _root(h: TrailHarness) -> Any:
    return h.tracer("app").start_as_current_span("POST /v1/payments", kind=SpanKind.SERVER)


@pytest.mark.service
def test_commands_keys_and_replies(harness: TrailHarness, instrumented: str, redis_service: Any) -> None:
    client = redis.Redis.from_url(redis_service.url)
    client.delete("payment:pay-123", "payment:none", "counter")
    with _root(harness):
        assert client.set("payment:pay-123", '{"status": "PENDING"}', ex=60) is True
        assert client.get("payment:pay-123") == b'{"status": "PENDING"}'
        assert client.get("payment:none") is None
        assert client.incr("counter") == 1
    trail = harness.one()
    got = [(i["type"], i["name"], i["request"], i["response"]) for i in trail["integrations"]]
    assert got == [
        ("cache", "redis.set", {"command": "SET", "key": "payment:pay-123"}, {"status": "OK"}),
        ("cache", "redis.get", {"command": "GET", "key": "payment:pay-123"}, {"status": "HIT"}),
        ("cache", "redis.get", {"command": "GET", "key": "payment:none"}, {"status": "MISS"}),
        ("cache", "redis.incrby", {"command": "INCRBY", "key": "counter"}, {"status": "OK", "result": 1}),
    ]
    assert "PENDING" not in str(trail)  # values stay out unless configured
    client.close()


@pytest.mark.service
def test_values_when_configured_and_pipeline(make_harness: Any, instrumented: str, redis_service: Any) -> None:
    h = make_harness(capture_cache_values=True)
    client = redis.Redis.from_url(redis_service.url)
    with _root(h):
        client.set("k1", "v1")
        assert client.get("k1") == b"v1"
        with client.pipeline() as pipe:
            pipe.set("k2", "v2").get("k2").delete("k1", "k2")
            assert pipe.execute() == [True, b"v2", 2]
    set_item, get_item, pipe_item = h.one()["integrations"]
    assert set_item["request"] == {"command": "SET", "key": "k1", "args": ["v1"]}
    assert get_item["response"] == {"status": "HIT", "value": "v1"}
    assert pipe_item["name"] == "redis.pipeline"
    assert pipe_item["request"]["command"] == "SET GET DEL"
    assert pipe_item["request"]["commands"] == [
        {"command": "SET", "key": "k2", "args": ["v2"]},
        {"command": "GET", "key": "k2"},
        {"command": "DEL", "keys": ["k1", "k2"]},
    ]
    assert pipe_item["response"] == {
        "status": "OK",
        "replies": [{"status": "OK"}, {"status": "HIT", "value": "v2"}, {"status": "OK", "result": 2}],
    }
    assert pipe_item["metadata"]["pipeline_length"] == 3
    client.close()


@pytest.mark.service
def test_asyncio_client(harness: TrailHarness, instrumented: str, redis_service: Any) -> None:
    async def flow() -> None:
        client = redis.asyncio.Redis.from_url(redis_service.url)
        await client.set("async:k", "x")
        async with client.pipeline() as pipe:
            await pipe.get("async:k").get("async:missing").execute()
        await client.aclose()

    with _root(harness):
        asyncio.run(flow())
    first, pipe = harness.one()["integrations"]
    assert first["request"] == {"command": "SET", "key": "async:k"} and first["response"] == {"status": "OK"}
    assert [c["key"] for c in pipe["request"]["commands"]] == ["async:k", "async:missing"]
    assert pipe["response"]["replies"] == [{"status": "HIT"}, {"status": "MISS"}]


@pytest.mark.service
def test_redis_errors(harness: TrailHarness, instrumented: str, redis_service: Any) -> None:
    client = redis.Redis.from_url(redis_service.url)
    client.set("a-string", "x")
    down = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    with _root(harness):
        with pytest.raises(redis.ResponseError):
            client.lpush("a-string", "item")
        with pytest.raises(redis.ConnectionError):
            down.get("anything")
    trail = harness.one()
    wrong, refused = trail["integrations"]
    assert wrong["request"] == {"command": "LPUSH", "key": "a-string"}
    assert "WRONGTYPE" in wrong["error"]["message"] and wrong["error"]["type"].endswith("ResponseError")
    assert refused["request"] == {"command": "GET", "key": "anything"}
    assert refused["error"]["type"].endswith("ConnectionError")
    assert [e["source"] for e in trail["errors"]] == ["redis.lpush", "redis.get"]
    client.close()


@pytest.mark.service
def test_credential_commands_never_reach_the_trail(
    harness: TrailHarness, instrumented: str, redis_service: Any
) -> None:
    """Default settings (no value capture): ``AUTH password`` records the password as the key unless masked."""
    admin = redis.Redis.from_url(redis_service.url)
    admin.config_set("requirepass", "auth-pw-default-1")
    try:
        client = redis.Redis.from_url(redis_service.url, password="auth-pw-default-1")
        with _root(harness):
            client.execute_command("AUTH", "auth-pw-default-1")
            client.execute_command("ACL", "SETUSER", "cap-user", "on", ">acl-pw-2", "~cap:*", "+@all")
            client.execute_command("AUTH", "cap-user", "acl-pw-2")
            client.hset("cap:user", mapping={"password": "hset-pw-3"})
    finally:
        admin.execute_command("AUTH", "auth-pw-default-1")
        admin.config_set("requirepass", "")
        admin.execute_command("ACL", "DELUSER", "cap-user")
        admin.close()
    trail = harness.one()
    commands = [(i["request"]["command"], i["request"].get("key")) for i in trail["integrations"]]
    assert ("AUTH", "***") in commands and ("ACL", "SETUSER") in commands
    raw = str(trail)
    for secret in ("auth-pw-default-1", "acl-pw-2", "hset-pw-3"):
        assert secret not in raw, f"{secret} leaked"
    assert trail["redacted"]["redis_credential"] >= 2
