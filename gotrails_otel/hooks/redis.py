"""Cache calls with redis-py (sync and asyncio clients, pipelines): command, key, reply status; values on request.

The instrumentation's request hook sees each command's arguments and its response hook the parsed reply. For
pipelines only the response hook is called, after the pipeline was reset, so :func:`install` wraps
``Pipeline.reset`` to keep the executed command stack for that hook. Values (``SET`` values, ``GET`` replies) are
recorded only with ``capture_cache_values`` (``GOTRAILS_CAPTURE_CACHE_VALUES=true``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..capture import Target, guard, target_for
from . import _wrap

__all__ = ["install", "instrumentor_kwargs", "uninstall"]

_STACK = "_gotrails_stack"
_RESETS = (("redis.client", "Pipeline.reset"), ("redis.asyncio.client", "Pipeline.reset"))
_NO_KEY = frozenset({"PING", "INFO", "FLUSHDB", "FLUSHALL", "DBSIZE", "MULTI", "EXEC", "DISCARD", "SCAN", "TIME"})


def instrumentor_kwargs() -> dict[str, Any]:
    """Hook arguments for ``RedisInstrumentor().instrument(...)``."""
    return {"request_hook": request_hook, "response_hook": response_hook}


def install() -> bool:
    """Keep each pipeline's command stack for the response hook; ``False`` when redis-py is not installed."""
    ok = _wrap.wrap(*_RESETS[0], _reset)
    _wrap.wrap(*_RESETS[1], _reset)
    return ok


def uninstall() -> None:
    """Remove the ``Pipeline.reset`` wrappers."""
    for module, name in _RESETS:
        _wrap.unwrap(module, name)


def _reset(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    stack = getattr(instance, "command_stack", None)
    if stack:
        _keep_stack(instance, stack)
    return wrapped(*args, **kwargs)


@guard
def _keep_stack(instance: Any, stack: Sequence[Any]) -> None:
    setattr(instance, _STACK, [entry[0] for entry in stack if isinstance(entry, (tuple, list)) and entry])


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return value  # made a binary summary at fold
    return value if isinstance(value, (str, int, float)) else str(value)


def _command(args: Sequence[Any], with_values: bool) -> dict[str, Any]:
    name = str(_text(args[0])).upper() if args else ""
    entry: dict[str, Any] = {"command": name}
    rest = list(args[1:])
    if rest and name not in _NO_KEY:
        entry["key"] = _text(rest[0])
        if len(rest) > 1 and name in ("MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH"):
            entry["keys"] = [_text(k) for k in rest]
            del entry["key"]
    if with_values and len(rest) > 1 and "keys" not in entry:
        entry["args"] = [_text(a) for a in rest[1:]]
    return entry


def _reply(command: str, response: Any, with_values: bool) -> dict[str, Any]:
    if isinstance(response, Exception):
        return {"status": "ERROR", "error": f"{type(response).__name__}: {response}"}
    if response is True or response in (b"OK", "OK"):
        return {"status": "OK"}
    if response is None:
        return {"status": "MISS" if command in ("GET", "HGET", "GETDEL", "GETEX", "LPOP", "RPOP") else "NIL"}
    if response is False:
        return {"status": "NOT_SET"}
    if isinstance(response, int):
        return {"status": "OK", "result": response}
    if isinstance(response, (bytes, str)):
        reply: dict[str, Any] = {"status": "HIT"}
        if with_values:
            reply["value"] = _text(response)
        return reply
    if isinstance(response, (list, tuple, dict, set)):
        reply = {"status": "OK", "count": len(response)}
        if with_values:
            reply["value"] = response
        return reply
    return {"status": "OK"}


@guard
def request_hook(span: Any, instance: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Record the command and its key (and values, when configured)."""
    target = target_for(span)
    if target is None or not args:
        return
    target.update("request", _command(args, target.config.capture_cache_values))


@guard
def response_hook(span: Any, instance: Any, response: Any) -> None:
    """Record the reply's status (and value, when configured); for pipelines, every command and reply."""
    target = target_for(span)
    if target is None:
        return
    with_values = target.config.capture_cache_values
    stack = getattr(instance, _STACK, None)
    if stack is not None and isinstance(response, list):
        delattr(instance, _STACK)
        _pipeline(target, stack, response, with_values)
        return
    command = _command_of(span, target)
    target.update("response", _reply(command, response, with_values))


def _command_of(span: Any, target: Target) -> str:
    """The command's name: the first word of the span's statement (the instrumentation sets it), else what the
    request hook recorded."""
    statement = getattr(span, "attributes", {}).get("db.statement")
    if isinstance(statement, str) and statement:
        return statement.split(" ", 1)[0].upper()
    request = target.store.get(target.span_id) or {}
    return str((request.get("request") or {}).get("command", ""))


def _pipeline(target: Target, stack: list[Sequence[Any]], replies: list[Any], with_values: bool) -> None:
    commands = [_command(args, with_values) for args in stack]
    target.update(
        "request",
        {"command": " ".join(c["command"] for c in commands), "key": None, "commands": commands},
    )
    results = [_reply(c["command"], reply, with_values) for c, reply in zip(commands, replies, strict=False)]
    failed = any(isinstance(reply, Exception) for reply in replies)
    target.update("response", {"status": "ERROR" if failed else "OK", "replies": results})
