"""Install and remove ``wrapt`` wrappers idempotently."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import wrapt

_installed: dict[tuple[str, str], Any] = {}


def wrap(module: str, name: str, wrapper: Callable[..., Any]) -> bool:
    """Wrap ``module.name`` (``Class.method`` allowed) once; ``False`` when the module is not importable."""
    key = (module, name)
    if key in _installed:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    wrapt.wrap_function_wrapper(module, name, wrapper)
    _installed[key] = wrapper
    return True


def wrap_innermost(module: str, name: str, wrapper: Callable[..., Any]) -> bool:
    """Wrap the function under every wrapper already around ``module.name`` (a function, not a method), so that
    ours runs after theirs whichever was installed first; ``False`` when the module is not importable."""
    key = (module, name)
    if key in _installed:
        return True
    try:
        owner: Any = importlib.import_module(module)
    except ImportError:
        return False
    parent: Any = None
    current: Any = getattr(owner, name)
    while hasattr(current, "_self_wrapper") and hasattr(current, "__wrapped__"):
        parent, current = current, current.__wrapped__
    ours = wrapt.FunctionWrapper(current, wrapper)
    if parent is None:
        setattr(owner, name, ours)
    else:
        parent.__wrapped__ = ours
    _installed[key] = wrapper
    return True


def unwrap(module: str, name: str) -> None:
    """Remove the wrapper that :func:`wrap` installed on ``module.name`` (only ours, wherever it sits)."""
    wrapper = _installed.pop((module, name), None)
    if wrapper is None:
        return
    owner: Any = importlib.import_module(module)
    *path, attr = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    # Walk the chain of wrappers (another library may have wrapped ours) and cut ours out.
    # On a class, read the attribute from its __dict__: getattr would bind the descriptor.
    parent: Any = owner
    current: Any = vars(owner).get(attr) if isinstance(owner, type) else getattr(owner, attr)
    while hasattr(current, "_self_wrapper") and hasattr(current, "__wrapped__"):
        if getattr(current, "_self_wrapper", None) is wrapper:
            inner = current.__wrapped__
            if parent is owner:
                setattr(owner, attr, inner)
            else:
                parent.__wrapped__ = inner
            return
        parent, current = current, current.__wrapped__


def installed(module: str, name: str) -> bool:
    return (module, name) in _installed


def wrap_inner(module: str, name: str, wrapper: Callable[..., Any]) -> bool:
    """Wrap the function *inside* the ``wrapt`` wrapper that another instrumentation put on ``module.name``, so
    that ``wrapper`` runs within what that instrumentation sets up (its span is current). ``False`` when the
    module is not importable or ``module.name`` is not wrapped by ``wrapt`` (not instrumented)."""
    key = (module, name)
    if key in _installed:
        return True
    try:
        owner: Any = importlib.import_module(module)
    except ImportError:
        return False
    *path, attr = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    current: Any = vars(owner).get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
    if not (hasattr(current, "_self_wrapper") and hasattr(current, "__wrapped__")):
        return False
    current.__wrapped__ = wrapt.FunctionWrapper(current.__wrapped__, wrapper)
    _installed[key] = wrapper
    return True
