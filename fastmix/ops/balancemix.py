"""BalanceMix loss custom ops: ``fastmix::balancemix_loss`` and its backward (paper 001_*, eq. 10)."""

from __future__ import annotations

import torch

from fastmix.reference import balancemix as reference


def loss_dtype(logits: torch.Tensor) -> torch.dtype:
    """The loss is accumulated and returned in float32, or float64 for float64 logits."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


@torch.library.custom_op("fastmix::balancemix_loss", mutates_args=())
def balancemix_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
                    backend: str) -> torch.Tensor:
    """0-dim ``(1/B) sum_bk w_bk BCE(logits_bk, targets_bk)``; logits (B, K) any float dtype, targets and weights
    (B, K) in the loss dtype, any strides; ``weights=None`` means all ones."""
    if backend == "reference":
        return reference.balancemix_loss(logits, targets, weights)
    if backend == "triton":
        from fastmix.kernels.triton import balancemix as triton_balancemix

        return triton_balancemix.balancemix_loss_forward(logits, targets, weights, loss_dtype(logits))
    raise NotImplementedError("fastmix::balancemix_loss has no CUDA C++ kernel; use backend='triton' or 'reference'")


@balancemix_loss.register_fake
def _(logits, targets, weights, backend):
    torch._check(logits.dim() == 2 and targets.shape == logits.shape)
    torch._check(weights is None or weights.shape == logits.shape)
    return logits.new_empty((), dtype=loss_dtype(logits))


@torch.library.custom_op("fastmix::balancemix_loss_backward", mutates_args=())
def balancemix_loss_backward(grad_out: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                             weights: torch.Tensor | None, backend: str) -> torch.Tensor:
    """``grad_out * w (sigmoid(logits) - targets) / B``, (B, K) contiguous in the logits' dtype."""
    if backend == "triton":
        from fastmix.kernels.triton import balancemix as triton_balancemix

        return triton_balancemix.balancemix_loss_backward(grad_out, logits, targets, weights)
    dtype = loss_dtype(logits)
    grad = (torch.sigmoid(logits.to(dtype)) - targets.to(dtype)) * (grad_out / logits.size(0))
    if weights is not None:
        grad = grad * weights
    return grad.to(logits.dtype).contiguous()


@balancemix_loss_backward.register_fake
def _(grad_out, logits, targets, weights, backend):
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def _setup_context(ctx, inputs, output):
    logits, targets, weights, backend = inputs
    ctx.save_for_backward(logits, targets, weights)
    ctx.backend = backend


def _backward(ctx, grad_out):
    """Gradients to the logits (the kernel), and to float targets (``-w z / B``) and weights (``BCE / B``) if asked."""
    logits, targets, weights = ctx.saved_tensors
    grad_logits = grad_targets = grad_weights = None
    if ctx.needs_input_grad[0]:
        grad_logits = balancemix_loss_backward(grad_out, logits, targets, weights, ctx.backend)
    scale = grad_out / logits.size(0)
    if ctx.needs_input_grad[1]:
        grad_targets = -logits.to(targets.dtype) * scale
        grad_targets = grad_targets if weights is None else grad_targets * weights
    if ctx.needs_input_grad[2]:
        grad_weights = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.to(targets.dtype), targets, reduction="none") * scale
    return grad_logits, grad_targets, grad_weights, None


balancemix_loss.register_autograd(_backward, setup_context=_setup_context)
