"""LUMix loss custom ops: ``fastmix::lumix_loss`` and its backward ``fastmix::lumix_loss_backward`` (paper 003_*,
eq. 6-8).

The forward returns per-row losses and a (B, 5) float table of per-row statistics (``reference.STAT_COLUMNS``)
that the backward reads instead of re-reducing each row. Labels are int64 class indices (B,) or float rows (B, K);
gradients flow to the logits only (``lam`` and the labels are constants of the loss, as in Algorithm 1).
"""

from __future__ import annotations

import torch

from fastmix import _layout
from fastmix.reference import lumix as reference


def _dense_labels(labels: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    if labels.dim() == 1:
        return labels.new_zeros(labels.size(0), n_classes, dtype=dtype).scatter_(1, labels.unsqueeze(1), 1.0)
    return labels.to(dtype)


def _kernel_labels(labels: torch.Tensor) -> torch.Tensor:
    return labels.contiguous() if labels.dim() == 1 else _layout.rows_view(labels)


@torch.library.custom_op("fastmix::lumix_loss", mutates_args=())
def lumix_loss(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor, eta: float,
               backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``L0 + eta R`` (B,) and the backward's statistics (B, 5), both fp32 (fp64 for fp64 logits)."""
    dtype = reference.accumulation_dtype(logits)
    if backend == "reference":
        dense_a = _dense_labels(y_a, logits.size(1), dtype)
        dense_b = _dense_labels(y_b, logits.size(1), dtype)
        return reference.loss_and_statistics(logits, dense_a, dense_b, lam, eta)
    from fastmix.kernels.triton import lumix as triton_lumix

    loss = logits.new_empty(logits.size(0), dtype=dtype)
    stats = logits.new_empty(logits.size(0), len(reference.STAT_COLUMNS), dtype=dtype)
    logits_rows = _layout.rows_view(logits)
    labels_a, labels_b = _kernel_labels(y_a), _kernel_labels(y_b)
    lam_rows = lam.contiguous()
    triton_lumix.lumix_loss_forward(logits_rows, labels_a, labels_b, lam_rows, eta, loss, stats)
    return loss, stats


@lumix_loss.register_fake
def _(logits, y_a, y_b, lam, eta, backend):
    torch._check(logits.dim() == 2 and lam.shape == (logits.size(0),))
    dtype = reference.accumulation_dtype(logits)
    return (logits.new_empty(logits.size(0), dtype=dtype),
            logits.new_empty(logits.size(0), len(reference.STAT_COLUMNS), dtype=dtype))


@torch.library.custom_op("fastmix::lumix_loss_backward", mutates_args=())
def lumix_loss_backward(grad_rows: torch.Tensor, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                        lam: torch.Tensor, stats: torch.Tensor, eta: float, backend: str) -> torch.Tensor:
    """d(sum_i grad_rows_i L_i)/d logits, (B, K) contiguous in the logits' dtype."""
    if backend == "reference":
        dtype = reference.accumulation_dtype(logits)
        dense_a = _dense_labels(y_a, logits.size(1), dtype)
        dense_b = _dense_labels(y_b, logits.size(1), dtype)
        return reference.lumix_loss_grad(logits, dense_a, dense_b, lam, eta, stats, grad_rows).contiguous()
    from fastmix.kernels.triton import lumix as triton_lumix

    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    logits_rows = _layout.rows_view(logits)
    labels_a, labels_b = _kernel_labels(y_a), _kernel_labels(y_b)
    lam_rows, stats_rows, grad_rows_dense = lam.contiguous(), stats.contiguous(), grad_rows.contiguous()
    triton_lumix.lumix_loss_backward(logits_rows, labels_a, labels_b, lam_rows, eta, stats_rows, grad_rows_dense,
                                     grad)
    return grad


@lumix_loss_backward.register_fake
def _(grad_rows, logits, y_a, y_b, lam, stats, eta, backend):
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def _setup_context(ctx, inputs, output):
    logits, y_a, y_b, lam, eta, backend = inputs
    ctx.save_for_backward(logits, y_a, y_b, lam, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.eta = eta
    ctx.backend = backend


def _backward(ctx, grad_loss, grad_stats):
    logits, y_a, y_b, lam, stats = ctx.saved_tensors
    grad_logits = None
    if ctx.needs_input_grad[0]:
        grad_logits = lumix_loss_backward(grad_loss, logits, y_a, y_b, lam, stats, ctx.eta, ctx.backend)
    return grad_logits, None, None, None, None, None


lumix_loss.register_autograd(_backward, setup_context=_setup_context)
