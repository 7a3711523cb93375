"""Scalar arguments of the zeta-mixup and Flow-Mixup calls: real bools, and numbers given as Python or numpy
scalars or 0-d tensors."""

from __future__ import annotations

import numbers

import numpy as np
import torch

from fastmix import _checks


def check_flag(name: str, value) -> bool:
    """A real bool (numpy's included); 0, 1 or None are rejected rather than read as truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def positive_number(name: str, value) -> float:
    """A finite number > 0 as a Python float: a Python or numpy real scalar, or a 0-d real tensor (read on the host,
    which waits for a CUDA tensor's value)."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a real number or a 0-d real tensor, got a {value.dtype} tensor of "
                            f"shape {tuple(value.shape)}")
        value = value.item()
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        value = float(value)
    return _checks.check_positive_finite(name, value)
