"""BalanceMix loss custom op: ``fastmix::balancemix_loss``, the loss and its gradient in one pass (BalanceMix paper,
eq. 10); eager calls go through ``EagerOp`` (``balancemix_loss_call``).

Backends: "cpu" (C++, OpenMP over rows), "triton", "reference". The op checks its arguments' shapes and dtypes
before a kernel runs; the public API's eager calls, checked there, skip that repeat (``_loss_and_grad``). An empty
batch or class count (B K = 0) launches nothing: the loss is 0 (a sum over no labels, never the 0/0 of a mean over
B = 0 samples) and the gradient is empty.
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


def _balancemix_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, backend: str,
                     needs_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(logits, targets, weights)
    return _loss_and_grad(logits, targets, weights, backend, needs_grad)


def _loss_and_grad(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, backend: str,
                   needs_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The op after ``_check_inputs``: the public API's eager calls come here directly (it has checked and cast the
    same arguments, naming the user's), so a loss call checks each argument once."""
    dtype, size = compute_dtype(logits.dtype), logits.numel()
    grad = logits.new_empty(logits.shape if needs_grad else (0,), dtype=dtype)
    if size == 0:
        return logits.new_zeros((), dtype=dtype), grad
    if backend == "cpu":
        # (B, K) operands as rows (no weights: the null pointer and row stride 0); launch checks the labels' dtype and
        # size, so a caller that skipped _check_inputs cannot make the kernel read past them
        loss = logits.new_empty((), dtype=dtype)
        weight_args = (0, 0) if weights is None else (
            _native.Buffer(unit_column_rows(weights), dtype, size, rows=True),)
        _native.launch("balancemix_loss_forward_cpu", logits.device,
                       _native.Buffer(unit_column_rows(logits), rows=True),
                       _native.Buffer(unit_column_rows(targets), dtype, size, rows=True), *weight_args, *logits.shape,
                       _native.DTYPE_CODES[logits.dtype], loss, grad if needs_grad else 0)
        return loss, grad
    if backend == "triton":
        from fastmix.kernels.triton import balancemix as triton_balancemix

        return triton_balancemix.balancemix_loss_forward(logits, targets, weights, dtype,
                                                         grad if needs_grad else None), grad
    if needs_grad:
        torch.mul(torch.sigmoid(logits.to(dtype)) - targets, 1 if weights is None else weights, out=grad)
        grad /= logits.size(0)
    return reference.balancemix_loss(logits, targets, weights), grad


balancemix_loss = torch.library.custom_op("fastmix::balancemix_loss", _balancemix_loss, mutates_args=())
balancemix_loss.__doc__ = """``(loss, grad)``: the 0-dim ``(1/B) sum_bk w_bk BCE(logits_bk, targets_bk)`` and, with
``needs_grad``, its gradient ``w (sigmoid(logits) - targets) / B`` from the same pass, (B, K) contiguous in the loss
dtype (else an empty tensor); the backward scales it by the upstream gradient. Logits (B, K) any float dtype,
targets and weights (B, K) in the loss dtype, any strides; ``weights=None`` means all ones."""


@balancemix_loss.register_fake
def _(logits, targets, weights, backend, needs_grad):
    _check_inputs(logits, targets, weights)
    dtype = compute_dtype(logits.dtype)
    return logits.new_empty((), dtype=dtype), logits.new_empty(logits.shape if needs_grad else (0,), dtype=dtype)


def _setup_context(ctx, inputs, output):
    logits, targets, weights, _, needs_grad = inputs
    _, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.set_materialize_grads(False)  # the gradient output gets no gradient: no zeros for it
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:  # the labels' gradients read the inputs
        ctx.save_for_backward(grad, logits, targets, weights)
    else:
        ctx.save_for_backward(grad)
    ctx.logits_dtype = logits.dtype
    ctx.needs_grad = needs_grad


def _backward(ctx, grad_out, _):
    """The logits' gradient: the forward's scaled by ``grad_out``; the float targets' (``-w z / B``) and weights'
    (``BCE / B``) if asked (the inputs are saved only then)."""
    grad, *inputs = ctx.saved_tensors
    grad_logits = grad_targets = grad_weights = None
    if grad_out is None:  # the loss got no gradient (grads are not materialised)
        return grad_logits, grad_targets, grad_weights, None, None
    if ctx.needs_input_grad[0]:
        if not ctx.needs_grad:
            raise RuntimeError("fastmix::balancemix_loss ran with needs_grad=False: it has no logits gradient")
        grad_logits = grad * grad_out
        grad_logits = grad_logits if grad_logits.dtype == ctx.logits_dtype else grad_logits.to(ctx.logits_dtype)
    if inputs:
        logits, targets, weights = inputs
        scale = grad_out / max(logits.size(0), 1)
        if ctx.needs_input_grad[1]:
            grad_targets = -logits.to(targets.dtype) * scale
            grad_targets = grad_targets if weights is None else grad_targets * weights
        if ctx.needs_input_grad[2]:
            grad_weights = torch.nn.functional.binary_cross_entropy_with_logits(
                logits.to(targets.dtype), targets, reduction="none") * scale
    return grad_logits, grad_targets, grad_weights, None, None


balancemix_loss.register_autograd(_backward, setup_context=_setup_context)
balancemix_loss_call = EagerOp(balancemix_loss, _loss_and_grad, _setup_context, _backward)
