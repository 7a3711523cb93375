"""Flow-Mixup Triton kernels (Flow-Mixup paper, eq. 2-3): the Mixing module's forward and its halved backward.

Tensors are (rows, features) views with unit column stride, rows = flow_size * B, flow blocks of B rows one
after another. One program per (row, column tile); rows vary fastest, so the programs that read a row as their
own and as a shuffled partner run together and the second read is served by L2.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_F = 1024


@triton.jit
def _flow_mix_forward_kernel(z_ptr, z_row_stride, lam_ptr, perm_ptr, out_ptr, out_row_stride, batch, rows, features,
                             KEEP_ORIGINAL: tl.constexpr, BLOCK: tl.constexpr):
    """out[r] = z[r] and out[rows + r] = p z[r] + (1 - p) z[partner] (KEEP_ORIGINAL), else out[r] = the mix."""
    row = tl.program_id(0) % rows
    cols = (tl.program_id(0) // rows) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < features
    sample = row % batch
    partner = row - sample + tl.load(perm_ptr + sample)
    p = tl.load(lam_ptr + sample)
    own = tl.load(z_ptr + row.to(tl.int64) * z_row_stride + cols, mask=mask)
    other = tl.load(z_ptr + partner.to(tl.int64) * z_row_stride + cols, mask=mask)
    mixed = p * own.to(lam_ptr.dtype.element_ty) + (1 - p) * other.to(lam_ptr.dtype.element_ty)
    mixed_row = row
    if KEEP_ORIGINAL:
        tl.store(out_ptr + row.to(tl.int64) * out_row_stride + cols, own, mask=mask)
        mixed_row = rows + row
    tl.store(out_ptr + mixed_row.to(tl.int64) * out_row_stride + cols, mixed.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _flow_mix_backward_kernel(grad_ptr, grad_row_stride, lam_ptr, inverse_ptr, grad_z_ptr, grad_z_row_stride, batch,
                              rows, features, KEEP_ORIGINAL: tl.constexpr, BLOCK: tl.constexpr):
    """grad_z[j] = 0.5 (g0[j] + p_j g1[j] + (1 - p_q) g1[q]) with q = perm^-1(j) (eq. 3); no 0.5, no g0 without
    KEEP_ORIGINAL. Each output row is written by one program: no atomics, deterministic."""
    row = tl.program_id(0) % rows
    cols = (tl.program_id(0) // rows) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < features
    sample = row % batch
    source_sample = tl.load(inverse_ptr + sample)
    source = row - sample + source_sample
    p_own = tl.load(lam_ptr + sample)
    p_source = tl.load(lam_ptr + source_sample)
    mixed_half = rows if KEEP_ORIGINAL else 0  # the mixed flow's gradient follows the original flow's
    acc_dtype = lam_ptr.dtype.element_ty
    own = tl.load(grad_ptr + (mixed_half + row).to(tl.int64) * grad_row_stride + cols, mask=mask).to(acc_dtype)
    other = tl.load(grad_ptr + (mixed_half + source).to(tl.int64) * grad_row_stride + cols, mask=mask).to(acc_dtype)
    grad_z = p_own * own + (1 - p_source) * other
    if KEEP_ORIGINAL:
        original = tl.load(grad_ptr + row.to(tl.int64) * grad_row_stride + cols, mask=mask).to(acc_dtype)
        grad_z = 0.5 * (original + grad_z)
    tl.store(grad_z_ptr + row.to(tl.int64) * grad_z_row_stride + cols, grad_z.to(grad_z_ptr.dtype.element_ty),
             mask=mask)


def _grid(rows: int, features: int) -> tuple[int]:
    return (rows * triton.cdiv(features, BLOCK_F),)


def flow_mix_forward(z_rows: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, out_rows: torch.Tensor,
                     keep_original: bool) -> None:
    """Writes the Mixing module's output rows into ``out_rows``; lam (B,) float, perm (B,) int64, contiguous."""
    rows, features = z_rows.shape
    if rows == 0 or features == 0:  # an empty grid is an invalid launch on a GPU
        return
    _flow_mix_forward_kernel[_grid(rows, features)](
        z_rows, z_rows.stride(0), lam, perm, out_rows, out_rows.stride(0), perm.numel(), rows, features,
        KEEP_ORIGINAL=keep_original, BLOCK=BLOCK_F, num_warps=4)


def flow_mix_backward(grad_rows: torch.Tensor, lam: torch.Tensor, inverse: torch.Tensor, grad_z_rows: torch.Tensor,
                      keep_original: bool) -> None:
    """Writes the gradient to z into ``grad_z_rows``; ``inverse`` is perm^-1 (B,) int64, contiguous."""
    rows, features = grad_z_rows.shape
    if rows == 0 or features == 0:
        return
    _flow_mix_backward_kernel[_grid(rows, features)](
        grad_rows, grad_rows.stride(0), lam, inverse, grad_z_rows, grad_z_rows.stride(0), inverse.numel(), rows,
        features, KEEP_ORIGINAL=keep_original, BLOCK=BLOCK_F, num_warps=4)
