"""Forking in tests, where it is safe, without the interpreter's warning about threads.

The fork tests fork a process that has threads on purpose: that is the case they are about (gunicorn ``--preload``
forks workers from a master whose gotrails flush thread already runs). Since CPython 3.12 ``os.fork()`` in a
multi-threaded process raises a ``DeprecationWarning``; the tests expect it and keep it out of the output.

They run on Linux, where servers fork workers this way. They are skipped elsewhere, saying why: Windows has no
``fork()``, and on macOS the system frameworks are not safe to use in a child forked from a threaded process
(CPython's own default start method there is ``spawn``).
"""

from __future__ import annotations

import os
import sys
import warnings

import pytest

__all__ = ["fork", "requires_fork"]

if not hasattr(os, "fork"):
    _WHY_NOT = "os.fork() does not exist on this platform"
elif not sys.platform.startswith("linux"):
    _WHY_NOT = f"fork() with threads is not safe on {sys.platform} (system frameworks are not fork-safe)"
else:
    _WHY_NOT = ""

requires_fork = pytest.mark.skipif(bool(_WHY_NOT), reason=_WHY_NOT or "fork is safe here")
"""Marks a test that forks a multi-threaded process."""


def fork() -> int:
    """``os.fork()`` without the warning CPython 3.12+ gives for a process with threads (expected here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*use of fork\(\) may lead to deadlocks", DeprecationWarning)
        return os.fork()
