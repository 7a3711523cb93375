"""Canonical (batch, features) views of batch-first tensors, whatever their memory format.

A sample whose elements fill a dense block of memory in some dimension order (contiguous, channels_last,
a channel slice of a wider tensor, every other sample of a batch) is one row of a 2-D strided view with
unit column stride; kernels then see only (rows, features, row stride). Outputs keep the input's dimension
order, so channels_last in gives channels_last out.
"""

from __future__ import annotations

import math

import torch


def _trailing_order(x: torch.Tensor) -> list[int]:
    """Dims 1..n-1 from outermost to innermost in memory (size-1 dims keep their logical place)."""
    dims = list(range(1, x.dim()))
    return sorted(dims, key=lambda d: (-x.stride(d) if x.size(d) > 1 else 0, d)) if dims else dims


def _dense_rows(x: torch.Tensor) -> bool:
    if x.is_contiguous():  # the common case, without the walk over the dims
        return True
    expected = 1
    for d in reversed(_trailing_order(x)):
        if x.size(d) > 1 and x.stride(d) != expected:
            return False
        expected *= x.size(d)
    return True


def rows_view(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a (B, F) view with unit column stride; a dense copy in x's dimension order if no such view exists.

    The copy happens only for inputs sliced inside a sample (e.g. ``x[:, :, 2:30]``); its cost is one read and
    one write of x.
    """
    if x.is_contiguous():  # the common case (a collated batch), without the walk over the dims
        return x.view(x.size(0), math.prod(x.shape[1:]))
    if not _dense_rows(x):
        x = _copy_in_order(x)
    features = x[0].numel() if x.size(0) else 0
    row_stride = x.stride(0) if x.size(0) > 1 else features
    return x.as_strided((x.size(0), features), (row_stride, 1))


def empty_like_rows(x: torch.Tensor, dtype: torch.dtype | None = None, batch: int | None = None) -> torch.Tensor:
    """A new tensor shaped like ``x`` (with ``batch`` samples if given, e.g. a batch-doubled output), batch
    outermost, trailing dims in x's memory order, densely packed."""
    order = [0, *_trailing_order(x)]
    inverse = [order.index(d) for d in range(x.dim())]
    shape = [x.size(0) if batch is None else batch, *(x.size(d) for d in order[1:])]
    return x.new_empty(shape, dtype=dtype or x.dtype).permute(inverse)


def _copy_in_order(x: torch.Tensor) -> torch.Tensor:
    out = empty_like_rows(x)
    out.copy_(x)
    return out
