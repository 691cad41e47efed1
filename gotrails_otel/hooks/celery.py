"""Celery: every task run is a trail of its own; ``apply_async``/``delay`` inside a request is an integration.

The contrib Celery instrumentation listens to Celery's signals: it opens a CONSUMER span ``run/<task>`` in
``task_prerun`` (continuing the publisher's trace from the message headers) and ends it in ``task_postrun``, and
wraps each publish in a PRODUCER span ``apply_async/<task>``. It records names and ids, never arguments or
results. :func:`install` connects gotrails' receivers to the same signals, after the instrumentation's, so they run
while its spans are current:

* ``task_prerun``: the trail's request — task name, id, ``args``, ``kwargs`` (masked like every payload), retries,
  queue, ETA, and the ``X-Trace-ID``/``X-Request-ID`` that travelled with the message; the trail is held open until
* ``task_postrun``: the response — state and result (``task_failure``: the exception; ``task_retry``: the reason);
* ``before_task_publish``: the integration's request — task name, id, ``args``, ``kwargs``, queue, ETA, countdown.

Works with every worker pool (prefork, solo, threads): the receivers run in the process that runs the task.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..capture import Target, current_target, guard

__all__ = ["install", "instrumentor_kwargs", "uninstall"]

_MAX_RUNNING = 10_000
_lock = threading.Lock()
_running: OrderedDict[str, tuple[Target, Callable[[], None] | None]] = OrderedDict()
_connected = False
_UID = "gotrails"


def instrumentor_kwargs() -> dict[str, Any]:
    """Arguments for ``CeleryInstrumentor().instrument(...)``: none are needed."""
    return {}


def _signals() -> list[tuple[Any, Callable[..., None]]]:
    from celery import signals

    return [
        (signals.task_prerun, _prerun),
        (signals.task_postrun, _postrun),
        (signals.task_failure, _failure),
        (signals.task_retry, _retry),
        (signals.before_task_publish, _before_publish),
    ]


def install() -> bool:
    """Connect gotrails' receivers (after the instrumentation's); ``False`` when Celery is not installed."""
    global _connected
    if _connected:
        return True
    try:
        pairs = _signals()
    except ImportError:
        return False
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False, dispatch_uid=f"{_UID}.{receiver.__name__}")
    _connected = True
    return True


def uninstall() -> None:
    """Disconnect the receivers."""
    global _connected
    if not _connected:
        return
    for signal, receiver in _signals():
        signal.disconnect(receiver, dispatch_uid=f"{_UID}.{receiver.__name__}")
    _connected = False


def _list(value: Any) -> Any:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return value


def _dict(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _arg_names(task: Any, args: Any) -> dict[str, Any]:
    """``{"arg_names": [...]}``: the parameter name of each positional argument (from the task's signature), so
    that masking reads ``send_reset.delay(email, token)`` as it reads keyword arguments; empty when unknown."""
    if task is None or not isinstance(args, Sequence) or isinstance(args, (str, bytes)) or not args:
        return {}
    try:
        parameters = list(inspect.signature(task.run).parameters.values())
    except (AttributeError, TypeError, ValueError):
        return {}
    names: list[str] = []
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            names += [parameter.name] * (len(args) - len(names))
            break
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter.name)
    return {"arg_names": names[: len(args)]} if names else {}


def _registered(name: Any) -> Any:
    """The task registered under ``name`` in the current Celery app, when the publisher knows it."""
    try:
        from celery import current_app

        return current_app.tasks.get(str(name))
    except Exception:  # no app, or an app that cannot list its tasks: no names
        return None


def _flow_headers(request: Any) -> dict[str, list[str]]:
    headers = {}
    for name in ("x-trace-id", "x-request-id"):
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            headers[name] = [value]
    return headers


# ------------------------------------------------------------------------------------------------ worker


@guard
def _prerun(sender: Any = None, task_id: Any = None, task: Any = None, args: Any = None, **kwargs: Any) -> None:
    target = current_target()  # the instrumentation's ``run/<task>`` span
    if target is None or task is None or task_id is None:
        return
    request = task.request
    delivery = getattr(request, "delivery_info", None) or {}
    target.put("name", str(task.name))
    target.update(
        "request",
        {
            "action": "run",
            "task": task.name,
            "id": task_id,
            "args": _list(args),
            **_arg_names(task, args),
            "kwargs": _dict(kwargs.get("kwargs")),
            "retries": getattr(request, "retries", 0) or 0,
            "queue": delivery.get("routing_key") if isinstance(delivery, Mapping) else None,
            "eta": str(request.eta) if getattr(request, "eta", None) else None,
            "headers": _flow_headers(request),
        },
    )
    release = target.hold()  # task_postrun runs after the instrumentation ended the span
    with _lock:
        _running[str(task_id)] = (target, release)
        while len(_running) > _MAX_RUNNING:
            _, (_, stale) = _running.popitem(last=False)
            if stale is not None:
                stale()


def _current(task_id: Any) -> Target | None:
    with _lock:
        entry = _running.get(str(task_id))
    return entry[0] if entry is not None else None


@guard
def _postrun(sender: Any = None, task_id: Any = None, retval: Any = None, state: Any = None, **kwargs: Any) -> None:
    with _lock:
        entry = _running.pop(str(task_id), None)
    if entry is None:
        return
    target, release = entry
    try:
        response: dict[str, Any] = {"state": state}
        if state == "SUCCESS":
            response["result"] = retval
        target.update("response", response)
    finally:
        if release is not None:
            release()


@guard
def _failure(sender: Any = None, task_id: Any = None, exception: Any = None, **kwargs: Any) -> None:
    target = _current(task_id)
    if target is not None and exception is not None:
        target.update(
            "response",
            {
                "exception": {
                    "type": type(exception).__qualname__,
                    "message": str(exception) or type(exception).__name__,
                }
            },
        )


@guard
def _retry(sender: Any = None, request: Any = None, reason: Any = None, **kwargs: Any) -> None:
    target = _current(getattr(request, "id", None))
    if target is not None:
        target.update("response", {"retry_reason": str(reason) if reason is not None else None})


# ------------------------------------------------------------------------------------------------ publisher


@guard
def _before_publish(
    sender: Any = None, body: Any = None, routing_key: Any = None, headers: Any = None, **kwargs: Any
) -> None:
    target = current_target()  # the instrumentation's ``apply_async/<task>`` span
    if target is None:
        return
    headers = headers if isinstance(headers, Mapping) else {}
    task = headers.get("task") or sender
    args: Any = None
    task_kwargs: Any = None
    if isinstance(body, (tuple, list)) and len(body) >= 2:  # message protocol 2: (args, kwargs, embed)
        args, task_kwargs = body[0], body[1]
    elif isinstance(body, Mapping):  # message protocol 1
        args, task_kwargs = body.get("args"), body.get("kwargs")
    task_id = headers.get("id") or (body.get("id") if isinstance(body, Mapping) else None)
    target.put("name", str(task))
    target.update(
        "request",
        {
            "action": "apply_async",
            "task": task,
            "id": task_id,
            "args": _list(args),
            **_arg_names(_registered(task), args),
            "kwargs": _dict(task_kwargs),
            "queue": routing_key,
            "eta": headers.get("eta"),
            "countdown": headers.get("countdown"),
            "retries": headers.get("retries") or 0,
        },
    )
    target.update("response", {"id": task_id, "state": "PUBLISHED"})
    target.update("metadata", {"system": "celery"})
