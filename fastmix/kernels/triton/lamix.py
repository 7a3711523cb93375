"""LaMix Triton kernels (LaMix paper, eq. 2-4 and 9-11): the pairing of the averaged inputs (eq. 4), drawn in the
kernel, and the loss: target and cross-entropy fused, one row per program.

The same kernel serves the forward (loss only) and the backward (gradients scaled by the incoming gradient, loss
not written): recomputing the row statistics in the backward reads the logits once more but never stores (B, K)
gradients between the passes, which moves fewer bytes than writing them in the forward and scaling them later.
Partners (in [0, B)) and class indices (in [0, K)) are asserted on the device as they are read (``checks``); per-row
operands (``lam``, partners, class indices, the incoming gradient) are read through their strides, so an expanded
scalar is never copied.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastmix.kernels.triton.checks import DEVICE_ASSERTS
from fastmix.kernels.triton.random import permutation_rank
from fastmix.kernels.triton.scalars import float64_bits, float64_from_bits


BLOCK_PAIRS = 64  # samples per program of the pairing kernel (a (64, 64) key comparison per step)


@triton.jit
def _lamix_pairs_kernel(seed_ptr, perm_ptr, inverse_ptr, half_ptr, batch, BLOCK: tl.constexpr):
    """A block of samples i: ``perm[i]`` of a uniformly random permutation (the rank of i among iid keys,
    ``random.permutation_rank``), ``inverse[perm[i]] = i`` (what the mix's one-launch backward reads) and the mixing
    ratio 1/2 of eq. 4."""
    samples = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = samples < batch
    rank = permutation_rank(tl.load(seed_ptr), samples, batch, 0, 0, BLOCK)
    tl.store(perm_ptr + samples, rank.to(perm_ptr.dtype.element_ty), mask=mask)
    tl.store(inverse_ptr + rank, samples.to(inverse_ptr.dtype.element_ty), mask=mask)
    tl.store(half_ptr + samples, tl.full([BLOCK], 0.5, half_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _local_labels(own, other, lam, cols, mask, LABEL_INDEX: tl.constexpr):
    """``lam y_row + (1 - lam) y_partner`` at ``cols`` (eq. 2); ``own``, ``other`` point to the two labels: class
    indices or dense label rows."""
    if LABEL_INDEX:
        local = tl.where(cols == tl.load(own), lam, 0.0) + tl.where(cols == tl.load(other), 1.0 - lam, 0.0)
    else:
        own_row = tl.load(own + cols, mask=mask, other=0.0).to(lam.dtype)
        other_row = tl.load(other + cols, mask=mask, other=0.0).to(lam.dtype)
        local = lam * own_row + (1.0 - lam) * other_row
    return local


@triton.jit
def _lamix_loss_kernel(z_ptr, z_row_stride, t_ptr, t_row_stride, y_ptr, y_stride, lam_ptr, lam_stride, partner_ptr,
                       partner_stride, loss_ptr, grad_loss_ptr, grad_loss_stride, grad_z_ptr, grad_t_ptr, batch,
                       classes, beta_bits,
                       LABEL_INDEX: tl.constexpr, GRADS: tl.constexpr, DETACH_TARGET: tl.constexpr,
                       BLOCK_K: tl.constexpr):
    """Row b of ``loss_b = -sum_k y_k log q_k`` with the target ``y = beta y~ + (1 - beta) p`` (eq. 10-11).

    ``q = softmax(z)``, ``s = sigmoid(t)``, ``p = softmax(s)``. Sweep 1: the normalisers of q and p (an online
    log-sum-exp for z; s lies in (0, 1), so softmax(s) needs no running maximum) and ``sum_k y_k``. Sweep 2: the
    loss, or ``g (q sum_k y_k - y)`` into grad_z and ``P = sum_k p_k log q_k``. Sweep 3 (gradients, target not
    detached): ``g (1 - beta) p (P - log q) s (1 - s)`` into grad_t. One sweep per row when K fits a block; the
    later sweeps then hit cache. The (B, K) target never reaches memory. ``beta`` arrives as its float64 bits.
    ``y_stride``: the labels' row stride, or the element stride of class indices.
    """
    row = tl.program_id(0).to(tl.int64)
    acc_dtype = lam_ptr.dtype.element_ty
    beta = float64_from_bits(beta_bits).to(acc_dtype)
    lam = tl.load(lam_ptr + row * lam_stride).to(acc_dtype)
    partner = tl.load(partner_ptr + row * partner_stride).to(tl.int64)
    z_row = z_ptr + row * z_row_stride
    t_row = t_ptr + row * t_row_stride

    z_max = tl.full([], float("-inf"), acc_dtype)
    z_norm = tl.zeros([], acc_dtype)
    s_norm = tl.zeros([], acc_dtype)
    local_sum = tl.zeros([], acc_dtype)
    for k0 in range(0, classes, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = cols < classes
        z = tl.load(z_row + cols, mask=mask, other=float("-inf")).to(acc_dtype)
        new_max = tl.maximum(z_max, tl.max(z, axis=0))
        z_norm = z_norm * tl.exp(z_max - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
        z_max = new_max
        t = tl.load(t_row + cols, mask=mask, other=0.0).to(acc_dtype)
        s_norm += tl.sum(tl.where(mask, tl.exp(1.0 / (1.0 + tl.exp(-t))), 0.0), axis=0)
        if GRADS:
            local = _local_labels(y_ptr + row * y_stride, y_ptr + partner * y_stride, lam, cols, mask, LABEL_INDEX)
            local_sum += tl.sum(local, axis=0)
    log_z_norm = z_max + tl.log(z_norm)
    log_s_norm = tl.log(s_norm)

    if GRADS:
        scale = tl.load(grad_loss_ptr + row * grad_loss_stride).to(acc_dtype)
        target_sum = beta * local_sum + (1.0 - beta)
    loss = tl.zeros([], acc_dtype)
    mean_log_q = tl.zeros([], acc_dtype)
    for k0 in range(0, classes, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = cols < classes
        log_q = tl.load(z_row + cols, mask=mask, other=0.0).to(acc_dtype) - log_z_norm
        t = tl.load(t_row + cols, mask=mask, other=0.0).to(acc_dtype)
        p = tl.where(mask, tl.exp(1.0 / (1.0 + tl.exp(-t)) - log_s_norm), 0.0)
        local = _local_labels(y_ptr + row * y_stride, y_ptr + partner * y_stride, lam, cols, mask, LABEL_INDEX)
        target = beta * local + (1.0 - beta) * p
        if GRADS:
            mean_log_q += tl.sum(p * log_q, axis=0)
            grad_z = scale * (tl.exp(log_q) * target_sum - target)
            tl.store(grad_z_ptr + row * classes + cols, grad_z.to(grad_z_ptr.dtype.element_ty), mask=mask)
        else:
            loss -= tl.sum(target * log_q, axis=0)
    if not GRADS:
        tl.store(loss_ptr + row, loss)

    if GRADS and not DETACH_TARGET:
        for k0 in range(0, classes, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            mask = cols < classes
            log_q = tl.load(z_row + cols, mask=mask, other=0.0).to(acc_dtype) - log_z_norm
            t = tl.load(t_row + cols, mask=mask, other=0.0).to(acc_dtype)
            s = 1.0 / (1.0 + tl.exp(-t))
            p = tl.exp(s - log_s_norm)
            grad_t = scale * (1.0 - beta) * p * (mean_log_q - log_q) * s * (1.0 - s)
            tl.store(grad_t_ptr + row * classes + cols, grad_t.to(grad_t_ptr.dtype.element_ty), mask=mask)

    # Last: an assert is a call, and at the top (values live across it) it cost an 8-byte spill in the fp32
    # gradient kernel at K > 4096 on sm_80.
    tl.device_assert((partner >= 0) & (partner < batch), "partner holds sample indices outside [0, B)")
    if LABEL_INDEX:
        own_class = tl.load(y_ptr + row * y_stride)  # the partner's class is asserted by its own row's program
        tl.device_assert((own_class >= 0) & (own_class < classes), "y holds class indices outside [0, K)")


def lamix_pairs(seed: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor, half: torch.Tensor) -> None:
    """Draws a uniformly random permutation into ``perm`` (B,) int64 from ``seed`` ((1,) int64), its inverse into
    ``inverse`` and fills ``half`` (B,) with 1/2; all contiguous."""
    batch = perm.numel()
    if batch:
        _lamix_pairs_kernel[(triton.cdiv(batch, BLOCK_PAIRS),)](seed, perm, inverse, half, batch, BLOCK=BLOCK_PAIRS,
                                                                num_warps=4)


def _launch(z_rows, t_rows, labels, lam, partner, beta, loss, grad_loss, grad_z, grad_t, grads, detach_target):
    """Pointers the chosen mode does not touch (the loss in the backward, the gradients in the forward) are
    filled with any tensor: the constexpr flags compile those loads and stores out."""
    batch, classes = z_rows.shape
    block = min(triton.next_power_of_2(classes), 4096)
    _lamix_loss_kernel[(batch,)](
        z_rows, z_rows.stride(0), t_rows, t_rows.stride(0), labels, labels.stride(0), lam, lam.stride(0), partner,
        partner.stride(0), loss, grad_loss, grad_loss.stride(0), grad_z, grad_t, batch, classes, float64_bits(beta),
        LABEL_INDEX=not labels.is_floating_point(), GRADS=grads, DETACH_TARGET=detach_target, BLOCK_K=block,
        num_warps=4 if block <= 2048 else 8, **DEVICE_ASSERTS)


def lamix_loss(z_rows, t_rows, labels, lam, partner, beta: float, loss: torch.Tensor) -> None:
    """Fills ``loss`` (B,). Logit rows have unit column stride; labels are (B,) int64 or (B, K) rows with unit column
    stride; lam (B,) is in the accumulation dtype (float32, float64 for float64 logits); per-row operands have any
    stride."""
    _launch(z_rows, t_rows, labels, lam, partner, beta, loss, loss, z_rows, t_rows, False, True)


def lamix_loss_backward(grad_loss, z_rows, t_rows, labels, lam, partner, beta: float, detach_target: bool,
                        grad_z: torch.Tensor, grad_t: torch.Tensor) -> None:
    """Fills the contiguous (B, K) ``grad_z`` and, unless ``detach_target``, ``grad_t``, scaled by ``grad_loss``."""
    _launch(z_rows, t_rows, labels, lam, partner, beta, grad_loss, grad_loss, grad_z, grad_t, True, detach_target)
