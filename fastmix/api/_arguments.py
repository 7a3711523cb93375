"""Flags and numpy scalars for the loss APIs (LUMix, LaMix, BalanceMix)."""

from __future__ import annotations

import numbers

import numpy as np


def check_bool(name: str, value) -> bool:
    """A flag: a Python or numpy bool (not 0/1, not a tensor, not None)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_backend(backend, supported: tuple) -> str | None:
    """A backend name of ``supported``, or None for the default: checked where it is given (a module's constructor)
    rather than at the first call that uses it."""
    if backend is not None and backend not in supported:
        raise ValueError(f"backend must be one of {supported} or None, got {backend!r}")
    return backend


def plain_number(value):
    """A numpy real scalar (``np.float32(0.5)``) as the Python number ``fastmix._checks`` takes; anything else as is."""
    if isinstance(value, np.generic) and isinstance(value, numbers.Real) and not isinstance(value, np.bool_):
        return value.item()
    return value
