"""Argument checks and label normalisation shared by the public API. Errors name the argument."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


# Above this many elements a (B, K) label tensor cannot be indexed with int32 offsets (and would not fit in memory).
MAX_LABEL_ELEMENTS = 2**31 - 1


def check_tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_batch_input(name: str, x, *, min_dim: int = 2, allow_uint8: bool = False) -> torch.Tensor:
    """A batch-first floating tensor (or uint8 where allowed) with at least ``min_dim`` dims and B >= 1."""
    check_tensor(name, x)
    if not (x.is_floating_point() or (allow_uint8 and x.dtype == torch.uint8)):
        expected = "a floating-point or uint8" if allow_uint8 else "a floating-point"
        raise TypeError(f"{name} must be {expected} tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims (batch first), got shape {tuple(x.shape)}")
    if x.size(0) == 0:
        raise ValueError(f"{name} must hold at least one sample, got batch size 0")
    return x


def is_real_number(value) -> bool:
    """A Python or numpy real number (``np.float32(0.8)``, ``np.int64(3)``), never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_bool(name: str, value) -> bool:
    """A flag: a Python bool or a numpy bool (not 0/1, not a tensor, not None)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_int(name: str, value, minimum: int) -> int:
    """A Python or numpy integer >= ``minimum`` (bools refused), as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_finite(name: str, value) -> float:
    if not is_real_number(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_positive_scalar(name: str, value) -> float:
    """Like ``check_positive_finite``, also taking a 0-d real tensor (read on the host: for a CUDA tensor that waits
    for its value)."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a real number or a 0-d real tensor, got a {value.dtype} tensor of "
                            f"shape {tuple(value.shape)}")
        value = value.item()
    return check_positive_finite(name, value)


def check_real(name: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the interval from ``low`` to ``high`` (open ends as flagged; an infinite end is open)."""
    if not is_real_number(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    high_open = high_open or math.isinf(high)
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not (math.isfinite(value) and inside):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction) -> str:
    """A loss reduction: "mean" over the batch, "sum", or "none" (per-sample losses)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce_rows(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample ``losses`` reduced as ``reduction`` asks (``check_reduction``)."""
    if reduction == "mean":
        return losses.mean()
    return losses.sum() if reduction == "sum" else losses


def check_matrix(name: str, value, shape: tuple | None = None, device: torch.device | None = None) -> torch.Tensor:
    """A floating (N, K) tensor with N, K >= 1, of ``shape`` (a tuple or torch.Size) and on ``device`` where given."""
    check_tensor(name, value)
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.dim() != 2 or value.numel() == 0:
        raise ValueError(f"{name} must have shape (N, K) with N, K >= 1, got shape {tuple(value.shape)}")
    if shape is not None and value.shape != shape:  # torch.Size equals the tuple of its sizes
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {tuple(value.shape)}")
    if device is not None and value.device != device:
        raise ValueError(f"{name} is on {value.device} but the logits/labels are on {device}")
    return value


def check_generator(generator, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device.type} but the tensors are on {device.type}")


def host_reads_values(tensor: torch.Tensor) -> bool:
    """Whether the host can read ``tensor``'s values without a sync: a CPU tensor in eager mode."""
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


def check_on_device(ok: torch.Tensor, message: str) -> None:
    """A data-dependent check (``ok`` a bool scalar tensor): a ValueError for CPU tensors in eager mode; on CUDA
    tensors or under torch.compile a device-side assert, because a host-side check would synchronise."""
    if host_reads_values(ok):
        if not bool(ok):
            raise ValueError(message)
    else:
        torch._assert_async(ok, message)


def check_labels(y, batch: int, device: torch.device, num_classes: int | None, *, dense: bool = False) -> int:
    """The structure of ``labels_to_float``'s labels (not their values); returns the number of classes K.
    ``dense``: y holds (B, K) labels of any dtype (multi-hot bool/int/float)."""
    check_tensor("y", y)
    if y.device != device:
        raise ValueError(f"y is on {y.device} but x is on {device}")
    if y.dim() == 0 or y.size(0) != batch:
        raise ValueError(f"y must have the batch size of x ({batch}), got shape {tuple(y.shape)}")
    if y.is_floating_point() or dense:
        if y.dim() != 2:
            raise ValueError(f"float labels y must have shape (B, K), got shape {tuple(y.shape)}")
        if num_classes is not None and y.size(1) != num_classes:
            raise ValueError(f"y has {y.size(1)} classes but num_classes={num_classes}")
        return y.size(1)
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"y must hold integer class indices or float labels, got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"integer labels y must have shape (B,), got shape {tuple(y.shape)}")
    if num_classes is None:
        raise ValueError("num_classes is required when y holds integer class indices")
    num_classes = check_int("num_classes", num_classes, 1)
    if batch * num_classes > MAX_LABEL_ELEMENTS:
        raise ValueError(f"num_classes={num_classes} with a batch of {batch} needs a ({batch}, {num_classes}) label "
                         f"tensor, more than {MAX_LABEL_ELEMENTS} elements")
    return num_classes


def labels_to_float(y, batch: int, device: torch.device, num_classes: int | None) -> torch.Tensor:
    """Integer (B,) class indices or float (B, K) one-hot/soft/multi-hot labels -> float (B, K).

    Integer labels out of ``[0, num_classes)`` raise a ValueError for CPU tensors; for CUDA tensors the
    check runs on the device (a device-side assert), because a host-side check would synchronise.
    """
    num_classes = check_labels(y, batch, device, num_classes)
    if y.is_floating_point():
        return y if y.dtype in (torch.float32, torch.float64) else y.float()
    index = y.long().clamp(0, num_classes - 1)
    check_on_device((index == y).all(), f"y holds class indices outside [0, {num_classes})")
    one_hot = torch.zeros(batch, num_classes, dtype=torch.float32, device=device)
    return one_hot.scatter_(1, index.unsqueeze(1), 1.0)
