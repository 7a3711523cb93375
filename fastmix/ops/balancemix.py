"""BalanceMix loss custom ops: ``fastmix::balancemix_loss`` and its backward (BalanceMix paper, eq. 10).

Backends: "cpu" (C++, OpenMP over rows), "triton", "reference". Each op checks its arguments' shapes and dtypes
before a kernel runs. An empty batch or class count (B K = 0) launches nothing: the loss is 0 (a sum over no labels,
never the 0/0 of a mean over B = 0 samples) and the gradient is empty.
"""

from __future__ import annotations

import torch

from fastmix import _native
from fastmix._dtypes import compute_dtype
from fastmix.ops._fast_path import EagerOp, unit_column_rows
from fastmix.reference import balancemix as reference

BACKENDS = ("triton", "reference", "cpu")


def _check_inputs(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> None:
    """Shapes and dtypes (ValueError): floating (B, K) logits; targets and weights (B, K) in the loss dtype."""
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating (B, K) tensor, got {logits.dtype} {tuple(logits.shape)}")
    for name, value in (("targets", targets), ("weights", weights)):
        if value is not None and not (value.shape == logits.shape and value.dtype == compute_dtype(logits.dtype)):
            raise ValueError(f"{name} must be {compute_dtype(logits.dtype)} {tuple(logits.shape)}, got {value.dtype} "
                             f"{tuple(value.shape)}")


def _native_args(logits, targets, weights) -> tuple:
    """The C++ kernels' (B, K) operands for ``_native.launch``, as rows (a missing weights tensor is the null pointer
    and row stride 0, 0), then B, K and the dtype code."""
    dtype = compute_dtype(logits.dtype)
    weight_args = (0, 0) if weights is None else (_native.Buffer(unit_column_rows(weights), dtype, rows=True),)
    return (_native.Buffer(unit_column_rows(logits), logits.dtype, rows=True),
            _native.Buffer(unit_column_rows(targets), dtype, rows=True), *weight_args, logits.size(0), logits.size(1),
            _native.DTYPE_CODES[logits.dtype])


def _balancemix_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
                     backend: str) -> torch.Tensor:
    _check_inputs(logits, targets, weights)
    if logits.numel() == 0:
        return logits.new_zeros((), dtype=compute_dtype(logits.dtype))
    if backend == "reference":
        return reference.balancemix_loss(logits, targets, weights)
    if backend == "cpu":
        loss = logits.new_empty((), dtype=compute_dtype(logits.dtype))
        _native.launch("balancemix_loss_forward_cpu", logits.device, *_native_args(logits, targets, weights), loss)
        return loss
    from fastmix.kernels.triton import balancemix as triton_balancemix

    return triton_balancemix.balancemix_loss_forward(logits, targets, weights, compute_dtype(logits.dtype))


balancemix_loss = torch.library.custom_op("fastmix::balancemix_loss", _balancemix_loss, mutates_args=())
balancemix_loss.__doc__ = """0-dim ``(1/B) sum_bk w_bk BCE(logits_bk, targets_bk)``; logits (B, K) any float dtype,
targets and weights (B, K) in the loss dtype, any strides; ``weights=None`` means all ones."""


@balancemix_loss.register_fake
def _(logits, targets, weights, backend):
    _check_inputs(logits, targets, weights)
    return logits.new_empty((), dtype=compute_dtype(logits.dtype))


def _balancemix_loss_backward(grad_out: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                              weights: torch.Tensor | None, backend: str) -> torch.Tensor:
    _check_inputs(logits, targets, weights)
    if not (grad_out.shape == () and grad_out.is_floating_point()):
        raise ValueError(f"grad_out must be a floating 0-dim tensor, got {grad_out.dtype} {tuple(grad_out.shape)}")
    if logits.numel() == 0:
        return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    if backend == "cpu":
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        scale = grad_out.to(compute_dtype(logits.dtype))
        _native.launch("balancemix_loss_backward_cpu", logits.device, _native.Buffer(scale, scale.dtype, 1),
                       *_native_args(logits, targets, weights), grad)
        return grad
    if backend == "triton":
        from fastmix.kernels.triton import balancemix as triton_balancemix

        return triton_balancemix.balancemix_loss_backward(grad_out, logits, targets, weights)
    dtype = compute_dtype(logits.dtype)
    grad = (torch.sigmoid(logits.to(dtype)) - targets.to(dtype)) * (grad_out / logits.size(0))
    if weights is not None:
        grad = grad * weights
    return grad.to(logits.dtype).contiguous()


balancemix_loss_backward = torch.library.custom_op("fastmix::balancemix_loss_backward", _balancemix_loss_backward,
                                                   mutates_args=())
balancemix_loss_backward.__doc__ = """``grad_out * w (sigmoid(logits) - targets) / B``, (B, K) contiguous in the logits'
dtype."""


@balancemix_loss_backward.register_fake
def _(grad_out, logits, targets, weights, backend):
    _check_inputs(logits, targets, weights)
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def _setup_context(ctx, inputs, output):
    logits, targets, weights, backend = inputs
    ctx.save_for_backward(logits, targets, weights)
    ctx.backend = backend


def _backward_with(gradient):
    """The backward of ``balancemix_loss``: the logits' gradient by ``gradient`` (the op or its body), and the float
    targets' (``-w z / B``) and weights' (``BCE / B``) if asked."""

    def backward(ctx, grad_out):
        logits, targets, weights = ctx.saved_tensors
        grad_logits = grad_targets = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_logits = gradient(grad_out, logits, targets, weights, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_targets = -logits.to(targets.dtype) * (grad_out / max(logits.size(0), 1))
            grad_targets = grad_targets if weights is None else grad_targets * weights
        if ctx.needs_input_grad[2]:
            grad_weights = torch.nn.functional.binary_cross_entropy_with_logits(
                logits.to(targets.dtype), targets, reduction="none") * (grad_out / max(logits.size(0), 1))
        return grad_logits, grad_targets, grad_weights, None

    return backward


balancemix_loss.register_autograd(_backward_with(balancemix_loss_backward), setup_context=_setup_context)
balancemix_loss_call = EagerOp(balancemix_loss, _balancemix_loss, _setup_context,
                               _backward_with(_balancemix_loss_backward))
