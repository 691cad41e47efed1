"""Reporting a failure in the application's log without letting request data into it.

An exception raised while a trail is captured, folded or exported can carry request data in its message (a driver
error echoing an argument, an exporter error echoing a payload). The log gets the exception's type, its message
masked by the default policy (as an error message in a trail is) and cut short, and the stack frames that show
where it happened — never the raw message, of this exception or of the ones chained to it.
"""

from __future__ import annotations

import functools
import logging
import traceback

from .redact import Policy

__all__ = ["describe", "log_failure"]

_MAX_MESSAGE = 300


@functools.lru_cache(maxsize=1)
def _policy() -> Policy:
    return Policy()


def describe(error: BaseException) -> str:
    """``Type: message``, the message masked and cut to a few hundred characters."""
    try:
        message = _policy()._counted(str(error), error=True)[0]
    except Exception:  # a message that cannot be read or masked is left out, never logged raw
        message = "<message not shown>"
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "…"
    name = type(error).__qualname__
    return f"{name}: {message}" if message else name


def log_failure(logger: logging.Logger, what: str, error: BaseException, *, level: int = logging.ERROR) -> None:
    """Log ``what`` failed with ``error``: its masked description, then where it was raised."""
    frames = "".join(traceback.format_tb(error.__traceback__)) if error.__traceback__ is not None else ""
    if frames:
        logger.log(level, "%s: %s\nRaised at (most recent call last):\n%s", what, describe(error), frames.rstrip())
    else:
        logger.log(level, "%s: %s", what, describe(error))
