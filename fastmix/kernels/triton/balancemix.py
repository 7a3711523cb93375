"""BalanceMix loss Triton kernel (BalanceMix paper, eq. 10): fused weighted BCE-with-logits and its gradient."""

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
                                    weights_ptr, weights_s0, weights_s1, partials_ptr, grad_ptr, numel, classes,
                                    batch, HAS_WEIGHTS: tl.constexpr, WITH_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    """One program per BLOCK labels of the (B, K) grid: writes its sum of w * BCE to partials[program] and, with
    WITH_GRAD, d loss / d z = w (sigmoid(z) - t) / B densely in the accumulation type (the division by the integer B
    in that type: a Python float 1 / B would be fp32 on a GPU)."""
    idx, mask, row, col = _label_block(numel, classes, BLOCK)
    acc_dtype = partials_ptr.dtype.element_ty
    z = _load_labels(logits_ptr, logits_s0, logits_s1, row, col, mask, acc_dtype)
    t = _load_labels(targets_ptr, targets_s0, targets_s1, row, col, mask, acc_dtype)
    loss = _elementwise_bce(z, t)
    if WITH_GRAD:
        grad = (tl.sigmoid(z) - t) / batch
    if HAS_WEIGHTS:
        w = _load_labels(weights_ptr, weights_s0, weights_s1, row, col, mask, acc_dtype)
        loss *= w
        if WITH_GRAD:
            grad *= w
    if WITH_GRAD:
        tl.store(grad_ptr + idx, grad, mask=mask)
    loss = tl.where(mask, loss, 0.0)
    tl.store(partials_ptr + tl.program_id(0), tl.sum(loss, axis=0))


BLOCK = 1024


def _strided(tensor: torch.Tensor | None, fallback: torch.Tensor):
    """(tensor, stride 0, stride 1) kernel arguments; a missing weights tensor passes a placeholder pointer."""
    source = fallback if tensor is None else tensor
    return source, source.stride(0), source.stride(1)


def balancemix_loss_forward(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
                            acc_dtype: torch.dtype, grad: torch.Tensor | None) -> torch.Tensor:
    """The 0-dim loss of eq. 10: per-program partial sums, then one deterministic torch sum over them; the gradient
    d loss / d logits into ``grad`` ((B, K) contiguous in ``acc_dtype``) when given."""
    batch, classes = logits.shape
    numel = batch * classes
    blocks = triton.cdiv(numel, BLOCK)
    partials = torch.empty(blocks, device=logits.device, dtype=acc_dtype)
    _balancemix_loss_forward_kernel[(blocks,)](
        logits, logits.stride(0), logits.stride(1), targets, targets.stride(0), targets.stride(1),
        *_strided(weights, targets), partials, partials if grad is None else grad, numel, classes, batch,
        HAS_WEIGHTS=weights is not None, WITH_GRAD=grad is not None, BLOCK=BLOCK)
    return partials.sum() / batch
