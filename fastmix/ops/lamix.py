"""LaMix custom ops (paper 004_*, eq. 2 and 9-11): ``fastmix::lamix_loss`` and its gradient
``fastmix::lamix_loss_backward``, the target (eq. 10) and its cross-entropy (eq. 11) fused.

The backward recomputes the row statistics from the logits instead of storing (B, K) gradients in the forward:
fewer bytes move in all, and nothing of size (B, K) lives between the two passes.
"""

from __future__ import annotations

import torch

from fastmix import _layout
from fastmix.reference import lamix as reference


def accumulate_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _check_shapes(logits, target_logits, labels, lam, partner):
    torch._check(logits.dim() == 2 and logits.shape == target_logits.shape)
    torch._check(labels.shape == logits.shape or labels.shape == (logits.size(0),))
    torch._check(lam.shape == (logits.size(0),) and partner.shape == (logits.size(0),))


@torch.library.custom_op("fastmix::lamix_loss", mutates_args=())
def lamix_loss(logits: torch.Tensor, target_logits: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor,
               partner: torch.Tensor, beta: float, detach_target: bool, backend: str) -> torch.Tensor:
    """Per-sample loss (B,), float32 (float64 for float64 logits).

    logits, target_logits: (B, K) of one floating dtype; labels: (B,) int64 class indices or (B, K) float32/float64;
    lam (B,) float; partner (B,) int64 in [0, B). ``detach_target`` only changes the gradient.
    """
    if backend == "reference":
        return reference.lamix_loss(logits, target_logits, labels, lam, partner, beta, detach_target).to(
            accumulate_dtype(logits))
    from fastmix.kernels.triton import lamix as triton_lamix

    loss = logits.new_empty(logits.size(0), dtype=accumulate_dtype(logits))
    z_rows, t_rows, label_rows = _rows(logits, target_logits, labels)
    lam = lam.to(accumulate_dtype(logits)).contiguous()
    partner = partner.contiguous()
    triton_lamix.lamix_loss(z_rows, t_rows, label_rows, lam, partner, beta, loss)
    return loss


@lamix_loss.register_fake
def _(logits, target_logits, labels, lam, partner, beta, detach_target, backend):
    _check_shapes(logits, target_logits, labels, lam, partner)
    return logits.new_empty(logits.size(0), dtype=accumulate_dtype(logits))


def _rows(logits, target_logits, labels):
    label_rows = labels.contiguous() if labels.dim() == 1 else _layout.rows_view(labels)
    return _layout.rows_view(logits), _layout.rows_view(target_logits), label_rows


@torch.library.custom_op("fastmix::lamix_loss_backward", mutates_args=())
def lamix_loss_backward(grad_loss: torch.Tensor, logits: torch.Tensor, target_logits: torch.Tensor,
                        labels: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor, beta: float,
                        detach_target: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_logits, grad_target_logits)`` for the incoming (B,) ``grad_loss``, in the logits' dtype, contiguous.

    ``grad_target_logits`` is an empty (0,) tensor when the target is detached (no gradient is computed for it).
    """
    if backend == "reference":
        return reference.lamix_loss_grads(grad_loss, logits, target_logits, labels, lam, partner, beta, detach_target)
    from fastmix.kernels.triton import lamix as triton_lamix

    grad_z = torch.empty_like(logits, memory_format=torch.contiguous_format)
    grad_t = (target_logits.new_empty(0) if detach_target
              else torch.empty_like(target_logits, memory_format=torch.contiguous_format))
    z_rows, t_rows, label_rows = _rows(logits, target_logits, labels)
    compute = accumulate_dtype(logits)
    lam = lam.to(compute).contiguous()
    grad_loss = grad_loss.to(compute).contiguous()
    partner = partner.contiguous()
    triton_lamix.lamix_loss_backward(grad_loss, z_rows, t_rows, label_rows, lam, partner, beta, detach_target,
                                     grad_z, grad_t)
    return grad_z, grad_t


@lamix_loss_backward.register_fake
def _(grad_loss, logits, target_logits, labels, lam, partner, beta, detach_target, backend):
    _check_shapes(logits, target_logits, labels, lam, partner)
    torch._check(grad_loss.shape == (logits.size(0),))
    grad_t = (target_logits.new_empty(0) if detach_target
              else torch.empty_like(target_logits, memory_format=torch.contiguous_format))
    return torch.empty_like(logits, memory_format=torch.contiguous_format), grad_t


def _setup_context(ctx, inputs, output):
    logits, target_logits, labels, lam, partner, beta, detach_target, backend = inputs
    ctx.save_for_backward(logits, target_logits, labels, lam, partner)
    ctx.beta, ctx.detach_target, ctx.backend = beta, detach_target, backend


def _backward(ctx, grad_loss):
    """First-order only: ``lamix_loss_backward`` has no autograd of its own, so a double backward raises."""
    logits, target_logits, labels, lam, partner = ctx.saved_tensors
    need_logits, need_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1] and not ctx.detach_target
    if not (need_logits or need_target):
        return (None,) * 8
    grad_z, grad_t = lamix_loss_backward(grad_loss, logits, target_logits, labels, lam, partner, ctx.beta,
                                         not need_target, ctx.backend)
    return (grad_z if need_logits else None), (grad_t if need_target else None), None, None, None, None, None, None


lamix_loss.register_autograd(_backward, setup_context=_setup_context)
