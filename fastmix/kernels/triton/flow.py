"""Flow-Mixup Triton kernels (Flow-Mixup paper, eq. 2-3): the Mixing module's parameters (p and the shuffle, drawn
in the kernel), its forward and its halved backward.

Tensors are (rows, features) views with unit column stride, rows = flow_size * B, flow blocks of B rows one
after another. One program per (row, column tile); rows vary fastest, so the programs that read a row as their
own and as a shuffled partner run together and the second read is served by L2. The shuffle is checked on the
device (``checks``): partners in [0, B), and each sample the partner of exactly one (a permutation), which the
programs of the first column tile check by a sweep over ``perm``; the backward finds each sample's preimage under
``perm`` by the same sweep (B indices read per program, from cache), so it needs no inverse permutation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastmix.kernels.triton.checks import DEVICE_ASSERTS
from fastmix.kernels.triton.random import permutation_rank, symmetric_beta
from fastmix.kernels.triton.scalars import float64_bits, float64_from_bits

BLOCK_F = 1024
BLOCK_PERM = 128  # perm entries per step of the preimage sweep
BLOCK_PARAMS = 64  # samples per program of the parameter kernel (a (64, 64) key comparison per step)
LAM_STREAM: tl.constexpr = tl.constexpr(0)  # random.py streams: p and the shuffle's keys draw independent words
PERM_STREAM: tl.constexpr = tl.constexpr(1)


@triton.jit
def _flow_params_kernel(seed_ptr, lam_ptr, perm_ptr, batch, alpha_bits, PER_SAMPLE: tl.constexpr,
                        BLOCK: tl.constexpr):
    """A block of samples i: ``perm[i]`` of a uniformly random permutation (the rank of i among iid keys,
    ``random.permutation_rank``) and ``p ~ Beta(alpha, alpha)`` (``random.symmetric_beta``): one per sample with
    ``PER_SAMPLE``, else one per call (every program draws the same one, at index 0). ``alpha`` arrives as its
    float64 bits."""
    samples = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = samples < batch
    seed = tl.load(seed_ptr)
    index = samples if PER_SAMPLE else samples * 0
    lam = symmetric_beta(seed, float64_from_bits(alpha_bits), index, LAM_STREAM, 0)
    tl.store(lam_ptr + samples, lam.to(lam_ptr.dtype.element_ty), mask=mask)
    rank = permutation_rank(seed, samples, batch, PERM_STREAM, 0, BLOCK)
    tl.store(perm_ptr + samples, rank.to(perm_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _preimage(perm_ptr, sample, batch, BLOCK: tl.constexpr):
    """``(q, count)``: the q with ``perm[q] == sample`` (their sum when several) and how many there are."""
    q = sample * 0
    count = sample * 0
    for start in range(0, batch, BLOCK):
        indices = start + tl.arange(0, BLOCK)
        hits = tl.load(perm_ptr + indices, mask=indices < batch, other=-1) == sample
        q += tl.sum(tl.where(hits, indices, 0), 0)
        count += tl.sum(hits.to(count.dtype), 0)
    return q, count


@triton.jit
def _flow_mix_forward_kernel(z_ptr, z_row_stride, lam_ptr, perm_ptr, out_ptr, out_row_stride, batch, rows, features,
                             KEEP_ORIGINAL: tl.constexpr, BLOCK: tl.constexpr, BLOCK_PERM: tl.constexpr):
    """out[r] = z[r] and out[rows + r] = p z[r] + (1 - p) z[partner] (KEEP_ORIGINAL), else out[r] = the mix."""
    row = tl.program_id(0) % rows
    cols = (tl.program_id(0) // rows) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < features
    sample = row % batch
    target = tl.load(perm_ptr + sample)
    tl.device_assert((target >= 0) & (target < batch), "perm must be a permutation of 0..B-1")
    if tl.program_id(0) < batch:  # the first column tile of the first flow block: sample = row = program id
        _, count = _preimage(perm_ptr, sample, batch, BLOCK_PERM)
        tl.device_assert(count == 1, "perm must be a permutation of 0..B-1")
    partner = row - sample + target
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
def _flow_mix_backward_kernel(grad_ptr, grad_row_stride, lam_ptr, perm_ptr, grad_z_ptr, grad_z_row_stride, batch,
                              rows, features, KEEP_ORIGINAL: tl.constexpr, BLOCK: tl.constexpr,
                              BLOCK_PERM: tl.constexpr):
    """grad_z[j] = 0.5 (g0[j] + p_j g1[j] + (1 - p_q) g1[q]) with q = perm^-1(j) (eq. 3); no 0.5, no g0 without
    KEEP_ORIGINAL. Each output row is written by one program: no atomics, deterministic."""
    row = tl.program_id(0) % rows
    cols = (tl.program_id(0) // rows) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < features
    sample = row % batch
    source_sample, count = _preimage(perm_ptr, sample, batch, BLOCK_PERM)
    tl.device_assert(count == 1, "perm must be a permutation of 0..B-1")
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


def flow_params(seed: torch.Tensor, alpha: float, lam: torch.Tensor, perm: torch.Tensor, per_sample: bool) -> None:
    """Draws p into ``lam`` (B,) and a uniformly random permutation into ``perm`` (B,) int64, both contiguous, from
    ``seed`` ((1,) int64)."""
    batch = perm.numel()
    if batch == 0:
        return
    _flow_params_kernel[(triton.cdiv(batch, BLOCK_PARAMS),)](seed, lam, perm, batch, float64_bits(alpha),
                                                             PER_SAMPLE=per_sample, BLOCK=BLOCK_PARAMS, num_warps=4)


def flow_mix_forward(z_rows: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, out_rows: torch.Tensor,
                     keep_original: bool) -> None:
    """Writes the Mixing module's output rows into ``out_rows``; lam (B,) float, perm (B,) int32/int64, contiguous."""
    rows, features = z_rows.shape
    if rows == 0 or features == 0:  # an empty grid is an invalid launch on a GPU
        return
    _flow_mix_forward_kernel[_grid(rows, features)](
        z_rows, z_rows.stride(0), lam, perm, out_rows, out_rows.stride(0), perm.numel(), rows, features,
        KEEP_ORIGINAL=keep_original, BLOCK=BLOCK_F, BLOCK_PERM=BLOCK_PERM, num_warps=4, **DEVICE_ASSERTS)


def flow_mix_backward(grad_rows: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, grad_z_rows: torch.Tensor,
                      keep_original: bool) -> None:
    """Writes the gradient to z into ``grad_z_rows``; lam (B,) float, perm (B,) int32/int64, contiguous."""
    rows, features = grad_z_rows.shape
    if rows == 0 or features == 0:
        return
    _flow_mix_backward_kernel[_grid(rows, features)](
        grad_rows, grad_rows.stride(0), lam, perm, grad_z_rows, grad_z_rows.stride(0), perm.numel(), rows,
        features, KEEP_ORIGINAL=keep_original, BLOCK=BLOCK_F, BLOCK_PERM=BLOCK_PERM, num_warps=4, **DEVICE_ASSERTS)
