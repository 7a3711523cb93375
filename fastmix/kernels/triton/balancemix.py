"""BalanceMix loss Triton kernels (BalanceMix paper, eq. 10): fused weighted BCE-with-logits, forward and backward."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _elementwise_bce(z, t):
    """BCE(sigmoid(z), t) = max(z, 0) - z t + log(1 + exp(-|z|)), stable for any z."""
    return tl.maximum(z, 0.0) - z * t + tl.log(1.0 + tl.exp(-tl.abs(z)))


@triton.jit
def _label_block(numel, classes, BLOCK: tl.constexpr):
    """This program's BLOCK labels of the (B, K) grid: (flat index, in-range mask, row, column)."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return idx, idx < numel, idx // classes, idx % classes


@triton.jit
def _load_labels(ptr, stride0, stride1, row, col, mask, dtype: tl.constexpr):
    """A strided (B, K) operand at (row, col), 0 outside the mask, converted to ``dtype``."""
    return tl.load(ptr + row * stride0 + col * stride1, mask=mask, other=0.0).to(dtype)


@triton.jit
def _balancemix_loss_forward_kernel(logits_ptr, logits_s0, logits_s1, targets_ptr, targets_s0, targets_s1,
                                    weights_ptr, weights_s0, weights_s1, partials_ptr, numel, classes,
                                    HAS_WEIGHTS: tl.constexpr, BLOCK: tl.constexpr):
    """One program per BLOCK labels of the (B, K) grid: writes its sum of w * BCE to partials[program]."""
    _, mask, row, col = _label_block(numel, classes, BLOCK)
    acc_dtype = partials_ptr.dtype.element_ty
    z = _load_labels(logits_ptr, logits_s0, logits_s1, row, col, mask, acc_dtype)
    t = _load_labels(targets_ptr, targets_s0, targets_s1, row, col, mask, acc_dtype)
    loss = _elementwise_bce(z, t)
    if HAS_WEIGHTS:
        loss *= _load_labels(weights_ptr, weights_s0, weights_s1, row, col, mask, acc_dtype)
    loss = tl.where(mask, loss, 0.0)
    tl.store(partials_ptr + tl.program_id(0), tl.sum(loss, axis=0))


@triton.jit
def _balancemix_loss_backward_kernel(grad_out_ptr, logits_ptr, logits_s0, logits_s1, targets_ptr, targets_s0,
                                     targets_s1, weights_ptr, weights_s0, weights_s1, grad_ptr, numel, classes,
                                     batch, HAS_WEIGHTS: tl.constexpr, BLOCK: tl.constexpr):
    """grad_logits[b, k] = grad_out * w_bk (sigmoid(z_bk) - t_bk) / B, written densely in the logits' dtype; the
    division by the integer B happens here, in the accumulation type (a Python float 1 / B would be fp32 on a GPU)."""
    idx, mask, row, col = _label_block(numel, classes, BLOCK)
    acc_dtype = grad_out_ptr.dtype.element_ty
    z = _load_labels(logits_ptr, logits_s0, logits_s1, row, col, mask, acc_dtype)
    t = _load_labels(targets_ptr, targets_s0, targets_s1, row, col, mask, acc_dtype)
    scale = tl.load(grad_out_ptr) / batch
    grad = (tl.sigmoid(z) - t) * scale
    if HAS_WEIGHTS:
        grad *= _load_labels(weights_ptr, weights_s0, weights_s1, row, col, mask, acc_dtype)
    tl.store(grad_ptr + idx, grad.to(grad_ptr.dtype.element_ty), mask=mask)


BLOCK = 1024


def _strided(tensor: torch.Tensor | None, fallback: torch.Tensor):
    """(tensor, stride 0, stride 1) kernel arguments; a missing weights tensor passes a placeholder pointer."""
    source = fallback if tensor is None else tensor
    return source, source.stride(0), source.stride(1)


def balancemix_loss_forward(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
                            acc_dtype: torch.dtype) -> torch.Tensor:
    """The 0-dim loss of eq. 10: per-program partial sums, then one deterministic torch sum over them."""
    batch, classes = logits.shape
    numel = batch * classes
    blocks = triton.cdiv(numel, BLOCK)
    partials = torch.empty(blocks, device=logits.device, dtype=acc_dtype)
    _balancemix_loss_forward_kernel[(blocks,)](
        logits, logits.stride(0), logits.stride(1), targets, targets.stride(0), targets.stride(1),
        *_strided(weights, targets), partials, numel, classes, HAS_WEIGHTS=weights is not None, BLOCK=BLOCK)
    return partials.sum() / batch


def balancemix_loss_backward(grad_out: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                             weights: torch.Tensor | None) -> torch.Tensor:
    """d loss / d logits, (B, K) contiguous in the logits' dtype; ``grad_out`` is the 0-dim upstream gradient."""
    batch, classes = logits.shape
    numel = batch * classes
    grad = torch.empty((batch, classes), device=logits.device, dtype=logits.dtype)
    grad_out = grad_out.reshape(1).contiguous()
    _balancemix_loss_backward_kernel[(triton.cdiv(numel, BLOCK),)](
        grad_out, logits, logits.stride(0), logits.stride(1), targets, targets.stride(0), targets.stride(1),
        *_strided(weights, targets), grad, numel, classes, batch, HAS_WEIGHTS=weights is not None,
        BLOCK=BLOCK)
    return grad
