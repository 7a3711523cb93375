"""LUMix Triton kernels (LUMix paper, eq. 3-8): the label weight with its Beta draw (eq. 3-5), and the loss (eq. 6-8):
per-row soft-target cross-entropy plus hinge, and its gradient.

One program per row. The mixed target ``y = lam y_a + (1 - lam) y_b`` is formed in registers from the two label
rows (or from two class indices), never stored. A row that fits one block (``K <= BLOCK_K``) is read once; a
longer row is read twice (online log-sum-exp, then the hinge, which needs the final scores). ``eta`` travels as its
float64 bits (``scalars``), so fp64 kernels use it exactly on a GPU too. Class indices are asserted in [0, K) on the
device as they are read (``checks``); per-row operands (``lam``, class indices, the incoming gradient) are read
through their strides, so an expanded scalar is never copied.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastmix.kernels.triton.checks import DEVICE_ASSERTS
from fastmix.kernels.triton.random import symmetric_beta
from fastmix.kernels.triton.scalars import float64_bits, float64_from_bits

# Rows longer than this loop over blocks of it. A 16384-column block with 16 warps needs 128 registers a thread and
# spills on sm_80 (ptxas: 308 bytes of spill stores in one pass, 92 looping over K = 21843); 4096 with 16 warps
# takes 56-59 registers and spills nothing, on sm_80 and sm_90.
MAX_BLOCK_K = 4096


@triton.jit
def _load_chunk(logits_row, y_a_row, y_b_row, index_a, index_b, cols, n_classes, lam,
                INDEX_LABELS: tl.constexpr, ACC: tl.constexpr):
    """Logits, both label rows and the mixed target for columns ``cols``; masked columns give z=-inf, y=0."""
    valid = cols < n_classes
    z = tl.load(logits_row + cols, mask=valid, other=float("-inf")).to(ACC)
    if INDEX_LABELS:
        y_a = (cols == index_a).to(ACC)
        y_b = (cols == index_b).to(ACC)
    else:
        y_a = tl.load(y_a_row + cols, mask=valid, other=0.0).to(ACC)
        y_b = tl.load(y_b_row + cols, mask=valid, other=0.0).to(ACC)
    target = lam * y_a + (1.0 - lam) * y_b
    return z, y_a, y_b, target, valid


@triton.jit
def _hinge_terms(z, y_a, y_b, target, log_sum_exp, min_a, min_b):
    """Per column: the scores p, the hinge ``y max(0, b - p)`` and its active weight ``y [b > p]`` (eq. 7)."""
    probs = tl.exp(z - log_sum_exp)
    union = (y_a > min_a) | (y_b > min_b)
    active = union & (probs < 1.0)
    hinge = tl.where(active, target * (1.0 - probs), 0.0)
    active_weight = tl.where(active, target, 0.0)
    return probs, hinge, active_weight


@triton.jit
def _row_setup(logits_ptr, logits_stride, y_a_ptr, y_a_stride, y_b_ptr, y_b_stride, lam_ptr, lam_stride, row,
               n_classes, INDEX_LABELS: tl.constexpr, ACC: tl.constexpr):
    """Row ``row``'s logits and label pointers (a label's stride is its row stride, or its element stride for class
    indices), its class indices (asserted in [0, K)) and its ``lam``."""
    lam = tl.load(lam_ptr + row * lam_stride).to(ACC)
    if INDEX_LABELS:
        index_a = tl.load(y_a_ptr + row * y_a_stride)
        index_b = tl.load(y_b_ptr + row * y_b_stride)
        tl.device_assert((index_a >= 0) & (index_a < n_classes), "y_a holds class indices outside [0, K)")
        tl.device_assert((index_b >= 0) & (index_b < n_classes), "y_b holds class indices outside [0, K)")
    else:
        index_a = 0
        index_b = 0
    return (logits_ptr + row * logits_stride, y_a_ptr + row * y_a_stride, y_b_ptr + row * y_b_stride,
            index_a, index_b, lam)


@triton.jit
def _lumix_loss_fwd_kernel(logits_ptr, logits_stride, y_a_ptr, y_a_stride, y_b_ptr, y_b_stride, lam_ptr, lam_stride,
                           eta_bits, loss_ptr, stats_ptr, n_classes, INDEX_LABELS: tl.constexpr, BLOCK_K: tl.constexpr,
                           SINGLE_BLOCK: tl.constexpr):
    """Row i: ``loss[i] = sum_k y_k (lse - z_k) + eta sum_k y_k max(0, b_k - p_k)`` and the 5 backward stats."""
    row = tl.program_id(0).to(tl.int64)
    acc = stats_ptr.dtype.element_ty
    eta = float64_from_bits(eta_bits).to(acc)
    logits_row, y_a_row, y_b_row, index_a, index_b, lam = _row_setup(
        logits_ptr, logits_stride, y_a_ptr, y_a_stride, y_b_ptr, y_b_stride, lam_ptr, lam_stride, row, n_classes,
        INDEX_LABELS, acc)
    cols = tl.arange(0, BLOCK_K)
    if SINGLE_BLOCK:
        z, y_a, y_b, target, valid = _load_chunk(logits_row, y_a_row, y_b_row, index_a, index_b, cols, n_classes,
                                                 lam, INDEX_LABELS, acc)
        row_max = tl.max(z, 0)
        log_sum_exp = row_max + tl.log(tl.sum(tl.exp(z - row_max), 0))
        target_logit = tl.sum(target * tl.where(valid, z, 0.0), 0)
        label_sum = tl.sum(target, 0)
        min_a = tl.min(tl.where(valid, y_a, float("inf")), 0)
        min_b = tl.min(tl.where(valid, y_b, float("inf")), 0)
        probs, hinge_k, active_weight = _hinge_terms(z, y_a, y_b, target, log_sum_exp, min_a, min_b)
        hinge = tl.sum(hinge_k, 0)
        hinge_mass = tl.sum(active_weight * probs, 0)
    else:
        running_max = tl.full([], float("-inf"), acc)
        running_sum = tl.zeros([], acc)
        target_logit = tl.zeros([], acc)
        label_sum = tl.zeros([], acc)
        min_a = tl.full([], float("inf"), acc)
        min_b = tl.full([], float("inf"), acc)
        for start in range(0, n_classes, BLOCK_K):
            z, y_a, y_b, target, valid = _load_chunk(logits_row, y_a_row, y_b_row, index_a, index_b, start + cols,
                                                     n_classes, lam, INDEX_LABELS, acc)
            new_max = tl.maximum(running_max, tl.max(z, 0))
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(z - new_max), 0)
            running_max = new_max
            target_logit += tl.sum(target * tl.where(valid, z, 0.0), 0)
            label_sum += tl.sum(target, 0)
            min_a = tl.minimum(min_a, tl.min(tl.where(valid, y_a, float("inf")), 0))
            min_b = tl.minimum(min_b, tl.min(tl.where(valid, y_b, float("inf")), 0))
        log_sum_exp = running_max + tl.log(running_sum)
        hinge = tl.zeros([], acc)
        hinge_mass = tl.zeros([], acc)
        for start in range(0, n_classes, BLOCK_K):
            z, y_a, y_b, target, valid = _load_chunk(logits_row, y_a_row, y_b_row, index_a, index_b, start + cols,
                                                     n_classes, lam, INDEX_LABELS, acc)
            probs, hinge_k, active_weight = _hinge_terms(z, y_a, y_b, target, log_sum_exp, min_a, min_b)
            hinge += tl.sum(hinge_k, 0)
            hinge_mass += tl.sum(active_weight * probs, 0)
    tl.store(loss_ptr + row, label_sum * log_sum_exp - target_logit + eta * hinge)
    stats_row = stats_ptr + row * 5
    tl.store(stats_row, log_sum_exp)
    tl.store(stats_row + 1, label_sum)
    tl.store(stats_row + 2, hinge_mass)
    tl.store(stats_row + 3, min_a)
    tl.store(stats_row + 4, min_b)


@triton.jit
def _lumix_loss_bwd_kernel(logits_ptr, logits_stride, y_a_ptr, y_a_stride, y_b_ptr, y_b_stride, lam_ptr, lam_stride,
                           eta_bits, stats_ptr, grad_rows_ptr, grad_rows_stride, grad_ptr, grad_stride, n_classes,
                           INDEX_LABELS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Program (row i, block c): ``grad_j = g_i (p_j sum_k y_k - y_j + eta p_j (sum_k h_k p_k - h_j))``,
    ``h_k = y_k [b_k > p_k]``: no reduction left, so every block of a row runs independently."""
    row = tl.program_id(0).to(tl.int64)
    acc = stats_ptr.dtype.element_ty
    eta = float64_from_bits(eta_bits).to(acc)
    logits_row, y_a_row, y_b_row, index_a, index_b, lam = _row_setup(
        logits_ptr, logits_stride, y_a_ptr, y_a_stride, y_b_ptr, y_b_stride, lam_ptr, lam_stride, row, n_classes,
        INDEX_LABELS, acc)
    stats_row = stats_ptr + row * 5
    log_sum_exp = tl.load(stats_row)
    label_sum = tl.load(stats_row + 1)
    hinge_mass = tl.load(stats_row + 2)
    min_a = tl.load(stats_row + 3)
    min_b = tl.load(stats_row + 4)
    grad_row = tl.load(grad_rows_ptr + row * grad_rows_stride).to(acc)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    z, y_a, y_b, target, valid = _load_chunk(logits_row, y_a_row, y_b_row, index_a, index_b, cols, n_classes, lam,
                                             INDEX_LABELS, acc)
    probs, _, active_weight = _hinge_terms(z, y_a, y_b, target, log_sum_exp, min_a, min_b)
    grad = grad_row * (probs * label_sum - target + eta * probs * (hinge_mass - active_weight))
    tl.store(grad_ptr + row * grad_stride + cols, grad.to(grad_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _label_mass(labels_ptr, label_stride, rows, row_mask, cols, valid, scaled, INDEX_LABELS: tl.constexpr):
    """For a block of rows over columns ``cols``, with ``scaled = exp(z - m)`` there: ``(sum_k y_k scaled_k,
    sum_k y_k)``, a class index being the one-hot row of its class."""
    if INDEX_LABELS:
        index = tl.load(labels_ptr + rows * label_stride, mask=row_mask, other=0)
        hit = cols[None, :] == index[:, None]
        return tl.sum(tl.where(hit, scaled, 0.0), 1), tl.sum(hit.to(scaled.dtype), 1)
    y = tl.load(labels_ptr + rows[:, None] * label_stride + cols[None, :], mask=valid, other=0.0).to(scaled.dtype)
    return tl.sum(y * scaled, 1), tl.sum(y, 1)


@triton.jit
def _lumix_lambda_kernel(seed_ptr, logits_ptr, logits_stride, y_a_ptr, y_a_stride, y_b_ptr, y_b_stride, lam0_ptr,
                         lam0_stride, lam_ptr, lam_r_ptr, lam_s_ptr, batch, n_classes, alpha_bits, c0_bits, r1_bits,
                         r2_bits, INDEX_LABELS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """A block of rows: ``lam = (1 - r1 - r2) lam0 + r1 lam_r + r2 lam_s`` (eq. 3), ``lam_r ~ Beta(alpha, alpha)``
    drawn here (``random.symmetric_beta`` under ``seed``, one per row index), ``lam_s = p_a / (p_a + p_b)`` (eq. 5;
    0.5 when both are 0) with ``p = sum_k y_k q_k / sum_k y_k`` (0 for an all-zero row) from ``q = softmax(z)``
    (eq. 4), in one sweep over the columns: an online maximum rescales the running sums of ``exp(z - max)``,
    ``y_a exp(z - max)`` and ``y_b exp(z - max)``. Class indices are asserted in [0, K). Floats arrive as float64 bits
    (``scalars``): ``c0 = 1 - r1 - r2`` as the host computes it."""
    acc = lam_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < batch
    rows64 = rows.to(tl.int64)
    if INDEX_LABELS:
        index_a = tl.load(y_a_ptr + rows64 * y_a_stride, mask=row_mask, other=0)
        tl.device_assert((index_a >= 0) & (index_a < n_classes), "y_a holds class indices outside [0, K)")
        index_b = tl.load(y_b_ptr + rows64 * y_b_stride, mask=row_mask, other=0)
        tl.device_assert((index_b >= 0) & (index_b < n_classes), "y_b holds class indices outside [0, K)")
    running_max = tl.full([BLOCK_B], float("-inf"), acc)
    total = tl.zeros([BLOCK_B], acc)
    mass_a = tl.zeros([BLOCK_B], acc)
    mass_b = tl.zeros([BLOCK_B], acc)
    weight_a = tl.zeros([BLOCK_B], acc)
    weight_b = tl.zeros([BLOCK_B], acc)
    for start in range(0, n_classes, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        valid = row_mask[:, None] & (cols[None, :] < n_classes)
        z = tl.load(logits_ptr + rows64[:, None] * logits_stride + cols[None, :], mask=valid,
                    other=float("-inf")).to(acc)
        new_max = tl.maximum(running_max, tl.max(z, 1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # padded rows: every z is -inf
        rescale = tl.exp(running_max - safe_max)
        scaled = tl.exp(z - safe_max[:, None])
        part_a, count_a = _label_mass(y_a_ptr, y_a_stride, rows64, row_mask, cols, valid, scaled, INDEX_LABELS)
        part_b, count_b = _label_mass(y_b_ptr, y_b_stride, rows64, row_mask, cols, valid, scaled, INDEX_LABELS)
        total = total * rescale + tl.sum(scaled, 1)
        mass_a = mass_a * rescale + part_a
        mass_b = mass_b * rescale + part_b
        weight_a += count_a
        weight_b += count_b
        running_max = new_max
    total = tl.where(total > 0, total, 1.0)  # 0 only in padding rows
    p_a = tl.where(weight_a > 0, mass_a / total / tl.where(weight_a > 0, weight_a, 1.0), 0.0)
    p_b = tl.where(weight_b > 0, mass_b / total / tl.where(weight_b > 0, weight_b, 1.0), 0.0)
    both = p_a + p_b
    lam_s = tl.where(both > 0, p_a / tl.where(both > 0, both, 1.0), 0.5)
    seed = tl.load(seed_ptr)
    lam_r = symmetric_beta(seed, float64_from_bits(alpha_bits), rows, 0, 0).to(acc)
    lam0 = tl.load(lam0_ptr + rows64 * lam0_stride, mask=row_mask, other=0.0).to(acc)
    r1 = float64_from_bits(r1_bits).to(acc)
    r2 = float64_from_bits(r2_bits).to(acc)
    lam = float64_from_bits(c0_bits).to(acc) * lam0 + r1 * lam_r + r2 * lam_s
    tl.store(lam_ptr + rows, lam, mask=row_mask)
    tl.store(lam_r_ptr + rows, lam_r, mask=row_mask)
    tl.store(lam_s_ptr + rows, lam_s, mask=row_mask)


def _block_k(n_classes: int, block_k: int | None) -> int:
    return block_k or min(max(triton.next_power_of_2(n_classes), 16), MAX_BLOCK_K)


def forward_config(n_classes: int, block_k: int | None = None) -> dict:
    """The forward kernel's compile-time parameters for rows of ``n_classes``: BLOCK_K, SINGLE_BLOCK, num_warps."""
    block = _block_k(n_classes, block_k)
    return {"BLOCK_K": block, "SINGLE_BLOCK": n_classes <= block, "num_warps": min(max(block // 256, 1), 16)}


def backward_config(n_classes: int, block_k: int | None = None) -> dict:
    """The backward kernel's compile-time parameters: BLOCK_K (at most 4096) and num_warps."""
    block = min(_block_k(n_classes, block_k), 4096)
    return {"BLOCK_K": block, "num_warps": min(max(block // 256, 1), 8)}


def lumix_loss_forward(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor, eta: float,
                       loss: torch.Tensor, stats: torch.Tensor, block_k: int | None = None) -> None:
    """Writes per-row losses (B,) and stats (B, 5) into ``loss``/``stats``; logits and float labels (B, K) with unit
    column stride, or int64 class indices (B,) of any stride; ``lam`` (B,) of any stride."""
    batch, n_classes = logits.shape
    _lumix_loss_fwd_kernel[(batch,)](
        logits, logits.stride(0), y_a, y_a.stride(0), y_b, y_b.stride(0), lam, lam.stride(0), float64_bits(eta), loss,
        stats, n_classes, INDEX_LABELS=y_a.dim() == 1, **forward_config(n_classes, block_k), **DEVICE_ASSERTS)


def lumix_loss_backward(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor, eta: float,
                        stats: torch.Tensor, grad_rows: torch.Tensor, grad: torch.Tensor,
                        block_k: int | None = None) -> None:
    """Writes d(sum_i grad_rows_i loss_i)/d logits into ``grad`` (B, K) with unit column stride; ``grad_rows`` (B,) of
    any stride (an expanded scalar for a mean or sum)."""
    batch, n_classes = logits.shape
    config = backward_config(n_classes, block_k)
    _lumix_loss_bwd_kernel[(batch, triton.cdiv(n_classes, config["BLOCK_K"]))](
        logits, logits.stride(0), y_a, y_a.stride(0), y_b, y_b.stride(0), lam, lam.stride(0), float64_bits(eta), stats,
        grad_rows, grad_rows.stride(0), grad, grad.stride(0), n_classes, INDEX_LABELS=y_a.dim() == 1, **config,
        **DEVICE_ASSERTS)


def lumix_lambda(seed: torch.Tensor, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam0: torch.Tensor,
                 r1: float, r2: float, alpha: float, lam: torch.Tensor, lam_r: torch.Tensor,
                 lam_s: torch.Tensor) -> None:
    """Writes eq. 3's ``lam`` and its parts ``lam_r`` (drawn from ``seed``, a (1,) int64) and ``lam_s`` into the
    contiguous (B,) outputs; logits and float labels (B, K) with unit column stride, or class indices (B,), and
    ``lam0`` (B,) of any stride."""
    batch, n_classes = logits.shape
    # A (16, 128) tile over 8 warps: 8 elements a thread. (16, 256) over 4 warps took 255 registers, and fp64 spilled
    # 1.4 kB on sm_80 and sm_90 (tests/triton_aot.py); the 40-byte stack is libdevice's fp64 sin/cos of the sampler.
    block_b = min(triton.next_power_of_2(batch), 16)
    block_k = min(max(triton.next_power_of_2(n_classes), 16), 2048 // block_b)
    _lumix_lambda_kernel[(triton.cdiv(batch, block_b),)](
        seed, logits, logits.stride(0), y_a, y_a.stride(0), y_b, y_b.stride(0), lam0, lam0.stride(0), lam, lam_r,
        lam_s, batch, n_classes, float64_bits(alpha), float64_bits(1 - r1 - r2), float64_bits(r1), float64_bits(r2),
        INDEX_LABELS=y_a.dim() == 1, BLOCK_B=block_b, BLOCK_K=block_k, num_warps=8, **DEVICE_ASSERTS)
