"""zeta-mixup Triton kernels (zeta-mixup paper, eq. 2-3): the weight matrix from random keys, and ``W @ X`` with the
labels' ``W @ Y`` in the same launch."""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from fastmix.kernels.triton.checks import DEVICE_ASSERTS

# 1.5 * 2^23: adding then subtracting it rounds an fp32 value of magnitude < 2^22 to the nearest integer, ties to
# even (the default IEEE rounding mode), on a GPU and under the interpreter alike.
_ROUND_HALF_EVEN = tl.constexpr(12582912.0)


@triton.jit
def _zeta_weights_kernel(keys_ptr, key_row_stride, key_col_stride, weights_ptr, batch, neg_gamma_hi, neg_gamma_lo,
                         norm_hi, norm_lo, SELF_DOMINANT: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    """One program per (row p, block of columns i): W[p, i] = rank(p, i)^-gamma / C.

    -gamma and C arrive as fp32 (hi, lo) pairs summed here in float64: a Python float argument is fp32 on a GPU
    but float64 under the interpreter, so a plain float would cost float64 weights ~1e-7 relative on a GPU only.
    """
    p = tl.program_id(0)
    cols_i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    row = keys_ptr + p.to(tl.int64) * key_row_stride
    key_i = tl.load(row + cols_i.to(tl.int64) * key_col_stride, mask=cols_i < batch, other=0.0)
    below = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, batch, BLOCK_J):
        cols_j = j0 + tl.arange(0, BLOCK_J)
        key_j = tl.load(row + cols_j.to(tl.int64) * key_col_stride, mask=cols_j < batch, other=0.0)
        before = (key_j[None, :] < key_i[:, None]) | ((key_j[None, :] == key_i[:, None]) & (cols_j[None, :] < cols_i[:, None]))
        if SELF_DOMINANT:
            before = (before | (cols_j[None, :] == p)) & (cols_i[:, None] != p)
        before = before & (cols_j[None, :] < batch) & (cols_j[None, :] != cols_i[:, None])
        below += tl.sum(before.to(tl.int32), axis=1)
    neg_gamma = tl.cast(neg_gamma_hi, tl.float64) + tl.cast(neg_gamma_lo, tl.float64)
    norm = tl.cast(norm_hi, tl.float64) + tl.cast(norm_lo, tl.float64)
    rank = (below + 1).to(tl.float64)
    weight = tl.exp(tl.log(rank) * neg_gamma) / norm
    tl.store(weights_ptr + p.to(tl.int64) * batch + cols_i, weight.to(weights_ptr.dtype.element_ty), mask=cols_i < batch)


@triton.jit
def _mix_x_tile(x_ptr, x_row_stride, w_ptr, w_row_stride, w_col_stride, out_ptr, out_row_stride, batch, features,
                tile, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_F: tl.constexpr, HALF_DOT: tl.constexpr):
    """out[p, f] = sum_i W[p, i] x[i, f] for one (BLOCK_P, BLOCK_F) tile, accumulated in fp32 (fp64 for fp64).

    fp16/bf16 inputs use two tensor-core products, W = W_hi + W_lo with both halves in x's dtype, so the weights
    keep ~fp32 precision while x is read in its own dtype once per row block; uint8 runs the same way in fp16
    (0..255 are exact there). The W_lo product takes non-finite x as 0: the W_hi product already carries every
    +-inf and NaN, and a W_lo of exactly 0 would otherwise turn an inf into NaN (0 x inf) where the fp32 sum has
    inf. fp16 cannot hold a weight below 2^-25 (B^-gamma / C at large B and gamma, e.g. B = 64 with gamma >= 4.5),
    so such a weight counts as 0 here, infinities in its column included. ``HALF_DOT=False`` runs the same two
    products in fp32: Triton's CPU interpreter computes bf16 dots wrongly, so tests use that path. uint8 results
    saturate to [0, 255] and round half to even.
    """
    # Row blocks vary fastest, so the programs that re-read a column tile of x run together (L2 hits).
    row_blocks = tl.cdiv(batch, BLOCK_P)
    pid_p = tile % row_blocks
    pid_f = tile // row_blocks
    rows = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    cols64 = cols.to(tl.int64)
    acc_dtype = w_ptr.dtype.element_ty
    x_dtype = x_ptr.dtype.element_ty
    split_dtype = tl.float16 if x_dtype == tl.uint8 else x_dtype  # the dtype of the tensor-core operands
    acc = tl.zeros([BLOCK_P, BLOCK_F], dtype=acc_dtype)
    for k0 in range(0, batch, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + rows[:, None] * w_row_stride + ks[None, :] * w_col_stride,
                    mask=(rows[:, None] < batch) & (ks[None, :] < batch), other=0.0)
        x = tl.load(x_ptr + ks.to(tl.int64)[:, None] * x_row_stride + cols64[None, :],
                    mask=(ks[:, None] < batch) & (cols[None, :] < features), other=0)
        if split_dtype == tl.float16 or split_dtype == tl.bfloat16:
            x = x.to(split_dtype)
            w_hi = w.to(split_dtype)
            w_lo = (w - w_hi.to(acc_dtype)).to(split_dtype)
            x_finite = tl.where(tl.abs(x) < float("inf"), x, 0.0).to(split_dtype)
            if HALF_DOT:
                acc += tl.dot(w_hi, x, out_dtype=acc_dtype)
                acc += tl.dot(w_lo, x_finite, out_dtype=acc_dtype)
            else:
                acc += tl.dot(w_hi.to(acc_dtype), x.to(acc_dtype), input_precision="ieee", out_dtype=acc_dtype)
                acc += tl.dot(w_lo.to(acc_dtype), x_finite.to(acc_dtype), input_precision="ieee", out_dtype=acc_dtype)
        else:
            acc += tl.dot(w, x.to(acc_dtype), input_precision="ieee", out_dtype=acc_dtype)
    if x_dtype == tl.uint8:
        acc = (tl.minimum(tl.maximum(acc, 0.0), 255.0) + _ROUND_HALF_EVEN) - _ROUND_HALF_EVEN
    out = out_ptr + rows.to(tl.int64)[:, None] * out_row_stride + cols64[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rows[:, None] < batch) & (cols[None, :] < features))


@triton.jit
def _mix_label_tile(y_ptr, y_stride, w_ptr, w_row_stride, w_col_stride, out_ptr, batch, classes, tile,
                    INDEX_LABELS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
                    BLOCK_C: tl.constexpr):
    """out[p, c] = sum_i W[p, i] y[i, c] (eq. 2) for one (BLOCK_P, BLOCK_C) tile of the contiguous (B, K) output, in
    the output's dtype (W rounded to it). ``y``: class indices (one-hot rows built in registers, each index asserted
    in [0, K)) with element stride ``y_stride``, or float rows with row stride ``y_stride`` and unit column stride.
    """
    row_blocks = tl.cdiv(batch, BLOCK_P)
    rows = (tile % row_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = (tile // row_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    dtype = out_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=dtype)
    for k0 in range(0, batch, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + rows[:, None] * w_row_stride + ks[None, :] * w_col_stride,
                    mask=(rows[:, None] < batch) & (ks[None, :] < batch), other=0.0).to(dtype)
        if INDEX_LABELS:
            index = tl.load(y_ptr + ks.to(tl.int64) * y_stride, mask=ks < batch, other=0)
            tl.device_assert(((index >= 0) & (index < classes)) | (ks >= batch),
                             "y holds class indices outside [0, num_classes)")
            y = (index[:, None] == cols[None, :]).to(dtype)
        else:
            y = tl.load(y_ptr + ks.to(tl.int64)[:, None] * y_stride + cols[None, :],
                        mask=(ks[:, None] < batch) & (cols[None, :] < classes), other=0.0).to(dtype)
        acc += tl.dot(w, y, input_precision="ieee", out_dtype=dtype)
    out = out_ptr + rows.to(tl.int64)[:, None] * classes + cols[None, :]
    tl.store(out, acc, mask=(rows[:, None] < batch) & (cols[None, :] < classes))


@triton.jit
def _zeta_mix_kernel(x_ptr, x_row_stride, out_ptr, out_row_stride, features, y_ptr, y_stride, y_out_ptr, classes,
                     w_ptr, w_row_stride, w_col_stride, batch, LABELS: tl.constexpr, INDEX_LABELS: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_C: tl.constexpr,
                     HALF_DOT: tl.constexpr):
    """``W @ x`` (eq. 2) and, with ``LABELS``, ``W @ y`` in the same launch: the programs past x's tiles take the
    label tiles. W is read through its strides (the backward passes W^T as a view)."""
    x_tiles = tl.cdiv(batch, BLOCK_P) * tl.cdiv(features, BLOCK_F)
    tile = tl.program_id(0)
    if tile < x_tiles:
        _mix_x_tile(x_ptr, x_row_stride, w_ptr, w_row_stride, w_col_stride, out_ptr, out_row_stride, batch, features,
                    tile, BLOCK_P, BLOCK_K, BLOCK_F, HALF_DOT)
    elif LABELS:
        _mix_label_tile(y_ptr, y_stride, w_ptr, w_row_stride, w_col_stride, y_out_ptr, batch, classes,
                        tile - x_tiles, INDEX_LABELS, BLOCK_P, BLOCK_K, BLOCK_C)


def _fp32_pair(value: float) -> tuple[float, float]:
    """``value`` as ``hi + lo`` with both exactly representable in fp32 (together ~48 bits of mantissa)."""
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))


def zeta_weights(keys: torch.Tensor, gamma: float, norm: float, self_dominant: bool) -> torch.Tensor:
    """The (B, B) weights, contiguous, from (B, B) keys of any strides."""
    batch = keys.size(0)
    weights = keys.new_empty((batch, batch))
    if batch == 0:
        return weights
    block = min(triton.next_power_of_2(batch), 64)
    _zeta_weights_kernel[(batch, triton.cdiv(batch, block))](
        keys, keys.stride(0), keys.stride(1), weights, batch, *_fp32_pair(-gamma), *_fp32_pair(norm),
        SELF_DOMINANT=self_dominant, BLOCK_I=block, BLOCK_J=block)
    return weights


def zeta_mix(x_rows: torch.Tensor, weights: torch.Tensor, out_rows: torch.Tensor, labels: torch.Tensor | None = None,
             labels_out: torch.Tensor | None = None) -> None:
    """Writes ``weights @ x_rows`` into ``out_rows`` (both (B, F) with unit column stride; weights (B, B) of any
    strides) and, given ``labels`` (class indices (B,) of any stride, or (B, K) rows with unit column stride),
    ``weights @ labels`` into the contiguous float (B, K) ``labels_out``, in one launch."""
    batch, features = x_rows.shape
    classes = 0 if labels_out is None else labels_out.size(1)
    block_p = min(max(triton.next_power_of_2(batch), 16), 64)
    block_k = min(max(triton.next_power_of_2(batch), 16), 32)
    block_f = 128
    block_c = min(max(triton.next_power_of_2(classes), 16), 128)
    row_blocks = triton.cdiv(batch, block_p)
    grid = (row_blocks * (triton.cdiv(features, block_f) + triton.cdiv(classes, block_c)),)
    if batch == 0 or grid[0] == 0:  # an empty grid is an invalid launch on a GPU
        return
    index_labels = labels is not None and not labels.is_floating_point()
    y, y_out = (labels, labels_out) if labels is not None else (out_rows, out_rows)  # unused when LABELS is off
    # 8 warps: with 4, the (64, 128) fp32/fp64 accumulator tile took 255 registers and a stack frame on sm_80 and
    # sm_90 (fp16/bf16 on sm_80 too); with 8 every dtype and tile compiles to <= 200 registers and no stack
    # (ahead-of-time compile, cuobjdump --dump-resource-usage; not yet timed on a GPU).
    _zeta_mix_kernel[grid](x_rows, x_rows.stride(0), out_rows, out_rows.stride(0), features, y, y.stride(0), y_out,
                           classes, weights, weights.stride(0), weights.stride(1), batch, LABELS=labels is not None,
                           INDEX_LABELS=index_labels, BLOCK_P=block_p, BLOCK_K=block_k, BLOCK_F=block_f,
                           BLOCK_C=block_c, HALF_DOT=x_rows.is_cuda, num_warps=8, **DEVICE_ASSERTS)
