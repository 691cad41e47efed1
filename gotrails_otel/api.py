"""The in-request API: steps, custom integrations, metadata and errors.

Every call works on the trail of the current span. Outside a trail (no processor, no request in progress,
a span under an ignored root) the calls change nothing and never raise; steps and integrations still run the
caller's code and still make ordinary OpenTelemetry spans.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .fold import ATTR_INTEGRATION_TYPE, ATTR_ROLE, INTEGRATION_TYPES, SCOPE
from .registry import current_target, target_for
from .store import snapshot

__all__ = [
    "IntegrationHandle",
    "StepHandle",
    "end_step",
    "integration",
    "record_error",
    "set_metadata",
    "start_step",
    "step",
    "trace_step",
]

_log = logging.getLogger("gotrails_otel")
_P = ParamSpec("_P")
_R = TypeVar("_R")

# The tracer for steps and integrations, per span pipeline (the span processors of one TracerProvider).
_tracers: weakref.WeakKeyDictionary[Any, trace.Tracer] = weakref.WeakKeyDictionary()
_warned: set[str] = set()


def _tracer() -> trace.Tracer:
    """A tracer of the provider that made the current span, so that a step joins the current trail whichever provider
    the processor is on (the global one or not). With no SDK span current, the global provider's."""
    from . import __version__

    span = trace.get_current_span()
    pipeline = getattr(span, "_span_processor", None)
    if pipeline is None:
        return trace.get_tracer(SCOPE, __version__)
    try:
        found = _tracers.get(pipeline)
    except TypeError:  # not weak-referenceable: not the SDK's pipeline
        return trace.get_tracer(SCOPE, __version__)
    if found is None:
        found = _tracer_for(span, pipeline)
        _tracers[pipeline] = found
    return found


def _tracer_for(span: Any, pipeline: Any) -> trace.Tracer:
    from . import __version__

    provider = trace.get_tracer_provider()
    if getattr(provider, "_active_span_processor", None) is pipeline:
        return provider.get_tracer(SCOPE, __version__)
    from .auto import providers

    for known in providers():
        if getattr(known, "_active_span_processor", None) is pipeline:
            return known.get_tracer(SCOPE, __version__)
    # A provider gotrails was not told about (``provider.add_span_processor(TrailProcessor())`` on a provider that is
    # not the global one): a tracer on the same span pipeline, resource and limits as the current span.
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer
        from opentelemetry.sdk.trace import sampling
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.util.instrumentation import InstrumentationInfo, InstrumentationScope

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return SdkTracer(
                sampling.ParentBased(sampling.ALWAYS_ON),
                span.resource,
                pipeline,
                RandomIdGenerator(),
                InstrumentationInfo(SCOPE, __version__),
                span._limits,
                InstrumentationScope(SCOPE, __version__),
            )
    except Exception as exc:  # an SDK whose internals differ: say so, once, loudly
        if "tracer" not in _warned:
            _warned.add("tracer")
            _log.warning(
                "gotrails: the current span belongs to a TracerProvider that is not the global one and gotrails "
                "cannot make spans on it (%s: %s); steps and integrations are recorded only under the global "
                "provider. Set the provider with gotrails_otel.instrument(provider).",
                type(exc).__name__,
                exc,
            )
        return trace.get_tracer(SCOPE, __version__)


class _Handle:
    """What a step or integration block can record besides its timing: request, response, metadata.

    Values are recorded as they are when they are set (containers are copied), so a later change to the object
    does not reach the trail.
    """

    def __init__(self, span: Span) -> None:
        self.span = span
        self._request: Any = None
        self._response: Any = None
        self._metadata: dict[str, Any] = {}

    @property
    def request(self) -> Any:
        """What this step or integration received (JSON-like data), as recorded."""
        return self._request

    @request.setter
    def request(self, value: Any) -> None:
        self._request = snapshot(value)

    @property
    def response(self) -> Any:
        """What this step or integration produced (JSON-like data), as recorded."""
        return self._response

    @response.setter
    def response(self, value: Any) -> None:
        self._response = snapshot(value)

    @property
    def metadata(self) -> dict[str, Any]:
        """The free-form fields recorded for this entry (a copy)."""
        return dict(self._metadata)

    def set_request(self, value: Any) -> None:
        """Record what this step or integration received (JSON-like data)."""
        self.request = value

    def set_response(self, value: Any) -> None:
        """Record what this step or integration produced (JSON-like data)."""
        self.response = value

    def set_metadata(self, **fields: Any) -> None:
        """Add free-form fields to this entry's ``metadata``."""
        self._metadata.update(snapshot(fields))

    def _publish(self, error: BaseException | None) -> None:
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        target = target_for(self.span)
        if target is None:
            return
        for key, value in (("request", self._request), ("response", self._response)):
            if value is not None:
                target.put(key, value)
        if self._metadata:
            target.update("metadata", self._metadata)


class StepHandle(_Handle):
    """A running step, from :func:`start_step` or ``with step(...) as handle``."""

    def __init__(self, span: Span, token: object | None) -> None:
        super().__init__(span)
        self._token = token
        self._ended = False


class IntegrationHandle(_Handle):
    """A running custom integration from :func:`integration`; set ``request``/``response`` on it."""

    def set_error(self, error: BaseException | str) -> None:
        """Mark the integration failed without raising (e.g. a non-OK reply that is not an exception)."""
        message = str(error) if not isinstance(error, BaseException) else f"{type(error).__name__}: {error}"
        self.span.set_status(Status(StatusCode.ERROR, message))
        if isinstance(error, BaseException):
            self.span.record_exception(error)


def start_step(name: str) -> StepHandle:
    """Start an internal step and make it current; end it with :func:`end_step`.

    Steps started this way must be ended in the same thread or task, in reverse order of starting.
    """
    span = _tracer().start_span(str(name), kind=SpanKind.INTERNAL, attributes={ATTR_ROLE: "step"})
    token = otel_context.attach(trace.set_span_in_context(span))
    return StepHandle(span, token)


def end_step(handle: StepHandle, error: BaseException | None = None) -> None:
    """End a step from :func:`start_step`; pass ``error`` to mark it failed. Ending twice is harmless."""
    if not isinstance(handle, StepHandle) or handle._ended:
        return
    handle._ended = True
    try:
        handle._publish(error)
    finally:
        if handle._token is not None:
            try:
                otel_context.detach(handle._token)  # type: ignore[arg-type]
            except Exception:  # detached in another context: the span still ends
                _log.debug("gotrails: end_step called outside the context of its start_step", exc_info=True)
        handle.span.end()


class step:  # used like a function: ``with step("x")`` or ``@step("x")``
    """An internal step, as a context manager (sync and async) or as a decorator of sync and async functions.

    >>> with step("ValidateRequest") as s:
    ...     s.set_request({"amount": 10})

    An exception leaving the step marks it failed, is recorded in ``errors[]`` and propagates unchanged.
    """

    def __init__(self, name: str) -> None:
        self.name = str(name)
        self._handles: list[StepHandle] = []

    def __enter__(self) -> StepHandle:
        handle = start_step(self.name)
        self._handles.append(handle)
        return handle

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._handles:
            end_step(self._handles.pop(), exc)

    async def __aenter__(self) -> StepHandle:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)

    @overload
    def __call__(self, fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]: ...
    @overload
    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]: ...
    def __call__(self, fn: Callable[_P, Any]) -> Callable[_P, Any]:
        name = self.name
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                with step(name):
                    return await fn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            with step(name):
                return fn(*args, **kwargs)

        return wrapper


def trace_step(name: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
    """Run ``fn(*args, **kwargs)`` as the step ``name`` and return its result.

    For a coroutine function the result is an awaitable that runs the call inside the step.
    """
    if inspect.iscoroutinefunction(fn):

        async def run_async() -> Any:
            with step(name):
                return await fn(*args, **kwargs)

        return run_async()  # type: ignore[return-value]
    with step(name):
        return fn(*args, **kwargs)


@contextmanager
def integration(type: str, name: str) -> Iterator[IntegrationHandle]:
    """A custom integration (an SDK call, a file store, a queue without instrumentation).

    ``type`` is one of ``http, kafka, database, cache, grpc, custom`` (anything else is recorded as ``custom``).
    Set ``handle.request`` / ``handle.response`` (or ``set_request``/``set_response``) inside the block; an
    exception leaving the block marks the integration failed and propagates unchanged.
    """
    kind = type if type in INTEGRATION_TYPES else "custom"
    span = _tracer().start_span(
        str(name), kind=SpanKind.CLIENT, attributes={ATTR_ROLE: "integration", ATTR_INTEGRATION_TYPE: kind}
    )
    handle = IntegrationHandle(span)
    error: BaseException | None = None
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield handle
    except BaseException as exc:
        error = exc
        raise
    finally:
        try:
            handle._publish(error)
        finally:
            span.end()


def set_metadata(**fields: Any) -> None:
    """Add free-form fields to the current trail's ``metadata{}`` (later values for a key win).

    The values are recorded as they are now: a later change to a dict or list passed here does not reach the trail.
    """
    target = current_target()
    if target is not None:
        target.add_metadata(snapshot(fields))


def record_error(source: str, error: BaseException | str) -> None:
    """Add an entry to the current trail's ``errors[]`` without raising anything.

    ``source`` names where it happened (a step or integration name); ``error`` is an exception or a message.
    """
    target = current_target()
    if target is None:
        return
    if isinstance(error, BaseException):
        entry: dict[str, Any] = {
            "source": str(source),
            "message": str(error) or type(error).__name__,
            "type": type(error).__qualname__,
        }
    else:
        entry = {"source": str(source), "message": str(error)}
    entry["time_ns"] = time.time_ns()
    target.add_error(entry)
