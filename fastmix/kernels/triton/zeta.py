"""zeta-mixup Triton kernels (paper 002_*, eq. 2-3): the weight matrix from random keys, and ``W @ X``."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _zeta_weights_kernel(keys_ptr, weights_ptr, batch, neg_gamma, norm, SELF_DOMINANT: tl.constexpr,
                         BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    """One program per (row p, block of columns i): W[p, i] = rank(p, i)^-gamma / C."""
    p = tl.program_id(0)
    cols_i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    row = keys_ptr + p.to(tl.int64) * batch
    key_i = tl.load(row + cols_i, mask=cols_i < batch, other=0.0)
    below = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, batch, BLOCK_J):
        cols_j = j0 + tl.arange(0, BLOCK_J)
        key_j = tl.load(row + cols_j, mask=cols_j < batch, other=0.0)
        before = (key_j[None, :] < key_i[:, None]) | ((key_j[None, :] == key_i[:, None]) & (cols_j[None, :] < cols_i[:, None]))
        if SELF_DOMINANT:
            before = (before | (cols_j[None, :] == p)) & (cols_i[:, None] != p)
        before = before & (cols_j[None, :] < batch) & (cols_j[None, :] != cols_i[:, None])
        below += tl.sum(before.to(tl.int32), axis=1)
    rank = (below + 1).to(tl.float64)
    weight = tl.exp(tl.log(rank) * neg_gamma) / norm
    tl.store(weights_ptr + p.to(tl.int64) * batch + cols_i, weight.to(weights_ptr.dtype.element_ty), mask=cols_i < batch)


@triton.jit
def _zeta_mix_kernel(x_ptr, x_row_stride, w_ptr, out_ptr, out_row_stride, batch, features,
                     BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_F: tl.constexpr,
                     HALF_DOT: tl.constexpr):
    """out[p, f] = sum_i W[p, i] x[i, f] for a (BLOCK_P, BLOCK_F) tile, accumulated in fp32 (fp64 for fp64).

    Half-precision inputs use two tensor-core products, W = W_hi + W_lo with both halves in x's dtype, so the
    weights keep ~fp32 precision while x is read in its own dtype once per row block. ``HALF_DOT=False`` runs the
    same two products in fp32: Triton's CPU interpreter computes bf16 dots wrongly, so tests use that path.
    """
    # Row blocks vary fastest, so the programs that re-read a column tile of x run together (L2 hits).
    row_blocks = tl.cdiv(batch, BLOCK_P)
    pid_p = tl.program_id(0) % row_blocks
    pid_f = tl.program_id(0) // row_blocks
    rows = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    cols64 = cols.to(tl.int64)
    acc_dtype = w_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_P, BLOCK_F], dtype=acc_dtype)
    for k0 in range(0, batch, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + rows[:, None] * batch + ks[None, :], mask=(rows[:, None] < batch) & (ks[None, :] < batch), other=0.0)
        x = tl.load(x_ptr + ks.to(tl.int64)[:, None] * x_row_stride + cols64[None, :],
                    mask=(ks[:, None] < batch) & (cols[None, :] < features), other=0.0)
        if x_ptr.dtype.element_ty == tl.float16 or x_ptr.dtype.element_ty == tl.bfloat16:
            w_hi = w.to(x_ptr.dtype.element_ty)
            w_lo = (w - w_hi.to(acc_dtype)).to(x_ptr.dtype.element_ty)
            if HALF_DOT:
                acc += tl.dot(w_hi, x, out_dtype=acc_dtype)
                acc += tl.dot(w_lo, x, out_dtype=acc_dtype)
            else:
                x32 = x.to(acc_dtype)
                acc += tl.dot(w_hi.to(acc_dtype), x32, input_precision="ieee", out_dtype=acc_dtype)
                acc += tl.dot(w_lo.to(acc_dtype), x32, input_precision="ieee", out_dtype=acc_dtype)
        else:
            acc += tl.dot(w, x.to(acc_dtype), input_precision="ieee", out_dtype=acc_dtype)
    out = out_ptr + rows.to(tl.int64)[:, None] * out_row_stride + cols64[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rows[:, None] < batch) & (cols[None, :] < features))


def zeta_weights(keys: torch.Tensor, gamma: float, norm: float, self_dominant: bool) -> torch.Tensor:
    batch = keys.size(0)
    weights = torch.empty_like(keys)
    block = min(triton.next_power_of_2(batch), 64)
    _zeta_weights_kernel[(batch, triton.cdiv(batch, block))](
        keys, weights, batch, -gamma, norm, SELF_DOMINANT=self_dominant, BLOCK_I=block, BLOCK_J=block)
    return weights


def zeta_mix(x_rows: torch.Tensor, weights: torch.Tensor, out_rows: torch.Tensor) -> None:
    """Writes ``weights @ x_rows`` into ``out_rows``; both (B, F) with unit column stride, weights (B, B) contiguous."""
    batch, features = x_rows.shape
    block_p = min(max(triton.next_power_of_2(batch), 16), 64)
    block_k = min(max(triton.next_power_of_2(batch), 16), 32)
    block_f = 128
    grid = (triton.cdiv(batch, block_p) * triton.cdiv(features, block_f),)
    _zeta_mix_kernel[grid](x_rows, x_rows.stride(0), weights, out_rows, out_rows.stride(0), batch, features,
                           BLOCK_P=block_p, BLOCK_K=block_k, BLOCK_F=block_f, HALF_DOT=x_rows.is_cuda, num_warps=4)
