"""LUMix custom ops (LUMix paper, eq. 3-8): ``fastmix::lumix_loss``, its backward ``fastmix::lumix_loss_backward``
and the label weight: ``fastmix::lumix_lambda`` (given the Beta draw ``lam_r``; "cpu" and "reference") and
``fastmix::lumix_lambda_sampled`` (Triton, drawing ``lam_r`` in the kernel from a device seed).

The loss returns per-row losses and a (B, 5) float table of per-row statistics (``reference.STAT_COLUMNS``) that the
backward reads instead of re-reducing each row. Labels are int64 class indices (B,) or float rows (B, K); gradients
flow to the logits only (``lam`` and the labels are constants of the loss, as in Algorithm 1). Backends: "cpu" (C++,
OpenMP over rows), "triton", "reference". Each op checks its arguments before a kernel runs; class indices are
checked by the C++ kernel before it computes on "cpu", by a device-side assert in the Triton kernels
(``kernels.triton.checks``; on CPU tensors in eager mode on the host first, for a ValueError), and on the device
for the reference. A batch or class count of 0 launches nothing: the loss of an empty row is 0.
"""

from __future__ import annotations

import math

import torch

from fastmix import _checks, _native
from fastmix._dtypes import compute_dtype
from fastmix.ops._fast_path import EagerOp, label_arguments, per_row_buffer, unit_column_rows
from fastmix.reference import lumix as reference

BACKENDS = ("triton", "reference", "cpu")


def _dense_labels(labels: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    if labels.dim() == 1:
        return labels.new_zeros(labels.size(0), n_classes, dtype=dtype).scatter_(1, labels.unsqueeze(1), 1.0)
    return labels.to(dtype)


def _kernel_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels as the Triton kernels read them: class indices of any stride, or rows with unit column stride."""
    return labels if labels.dim() == 1 else unit_column_rows(labels)


def _check_inputs(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, *weights: torch.Tensor) -> None:
    """Shapes and dtypes (ValueError): logits (B, K) floating; labels both int64 (B,) or both floating (B, K);
    every per-row weight floating (B,)."""
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating (B, K) tensor, got {logits.dtype} {tuple(logits.shape)}")
    batch = logits.size(0)
    index = y_a.dim() == 1
    for name, labels in (("y_a", y_a), ("y_b", y_b)):
        if index and not (labels.dtype == torch.int64 and labels.shape == (batch,)):
            raise ValueError(f"{name} must be int64 class indices ({batch},), got {labels.dtype} {tuple(labels.shape)}")
        if not index and not (labels.is_floating_point() and labels.shape == logits.shape):
            raise ValueError(f"{name} must be float rows {tuple(logits.shape)}, got {labels.dtype} "
                             f"{tuple(labels.shape)}")
    for weight in weights:
        if not (weight.is_floating_point() and weight.shape == (batch,)):
            raise ValueError(f"per-row weights must be floating ({batch},), got {weight.dtype} {tuple(weight.shape)}")


def _check_index_ranges(y_a: torch.Tensor, y_b: torch.Tensor, n_classes: int, backend: str) -> None:
    """Class indices in [0, K): on the device here for the reference; the C++ kernels check them before computing,
    the Triton kernels assert them as they read them (checked here too where the host reads them for free)."""
    if y_a.dim() != 1 or backend == "cpu" or (backend == "triton" and not _checks.host_reads_values(y_a)):
        return
    for name, labels in (("y_a", y_a), ("y_b", y_b)):
        _checks.check_on_device(((labels >= 0) & (labels < n_classes)).all(),
                                f"{name} holds class indices outside [0, {n_classes})")


def _native_args(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, dtype: torch.dtype) -> tuple:
    """The leading arguments of the C++ LUMix kernels, for ``_native.launch``."""
    return (_native.Buffer(unit_column_rows(logits), logits.dtype, rows=True), logits.size(0), logits.size(1),
            _native.DTYPE_CODES[logits.dtype], y_a.dim() == 1, *label_arguments(y_a, dtype),
            *label_arguments(y_b, dtype))


def _empty_rows_loss(logits: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """B = 0 or K = 0: losses 0 and the statistics of empty rows (log-sum-exp -inf, sums 0, minima +inf)."""
    stats = logits.new_zeros(logits.size(0), len(reference.STAT_COLUMNS), dtype=dtype)
    stats[:, 0] = -math.inf
    stats[:, 3:] = math.inf
    return logits.new_zeros(logits.size(0), dtype=dtype), stats


def _lumix_loss(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor, eta: float,
                backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(logits, y_a, y_b, lam)
    _check_index_ranges(y_a, y_b, logits.size(1), backend)
    dtype = compute_dtype(logits.dtype)
    if logits.numel() == 0:
        return _empty_rows_loss(logits, dtype)
    if backend == "reference":
        dense_a = _dense_labels(y_a, logits.size(1), dtype)
        dense_b = _dense_labels(y_b, logits.size(1), dtype)
        return reference.loss_and_statistics(logits, dense_a, dense_b, lam, eta)
    loss = logits.new_empty(logits.size(0), dtype=dtype)
    stats = logits.new_empty(logits.size(0), len(reference.STAT_COLUMNS), dtype=dtype)
    if backend == "cpu":
        _native.launch("lumix_loss_forward_cpu", logits.device, *_native_args(logits, y_a, y_b, dtype),
                       _native.Buffer(lam.to(dtype).contiguous(), dtype, logits.size(0)), eta, loss, stats)
        return loss, stats
    from fastmix.kernels.triton import lumix as triton_lumix

    logits_rows = unit_column_rows(logits)
    labels_a, labels_b = _kernel_labels(y_a), _kernel_labels(y_b)
    triton_lumix.lumix_loss_forward(logits_rows, labels_a, labels_b, lam, eta, loss, stats)
    return loss, stats


lumix_loss = torch.library.custom_op("fastmix::lumix_loss", _lumix_loss, mutates_args=())
lumix_loss.__doc__ = """Per-row ``L0 + eta R`` (B,) and the backward's statistics (B, 5), both fp32 (fp64 for fp64
logits)."""


@lumix_loss.register_fake
def _(logits, y_a, y_b, lam, eta, backend):
    _check_inputs(logits, y_a, y_b, lam)
    dtype = compute_dtype(logits.dtype)
    return (logits.new_empty(logits.size(0), dtype=dtype),
            logits.new_empty(logits.size(0), len(reference.STAT_COLUMNS), dtype=dtype))


def _lumix_loss_backward(grad_rows: torch.Tensor, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                         lam: torch.Tensor, stats: torch.Tensor, eta: float, backend: str) -> torch.Tensor:
    _check_inputs(logits, y_a, y_b, lam, grad_rows)
    if stats.shape != (logits.size(0), len(reference.STAT_COLUMNS)):
        raise ValueError(f"stats must have shape ({logits.size(0)}, 5), got {tuple(stats.shape)}")
    _check_index_ranges(y_a, y_b, logits.size(1), backend)
    dtype = compute_dtype(logits.dtype)
    if logits.numel() == 0:
        return logits.new_zeros(logits.shape)
    if backend == "reference":
        dense_a = _dense_labels(y_a, logits.size(1), dtype)
        dense_b = _dense_labels(y_b, logits.size(1), dtype)
        return reference.lumix_loss_grad(logits, dense_a, dense_b, lam, eta, stats, grad_rows).contiguous()
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    stats_rows = stats.to(dtype).contiguous()
    if backend == "cpu":
        _native.launch("lumix_loss_backward_cpu", logits.device, *_native_args(logits, y_a, y_b, dtype),
                       _native.Buffer(lam.to(dtype).contiguous(), dtype, logits.size(0)), eta,
                       _native.Buffer(stats_rows, dtype), per_row_buffer(grad_rows, dtype), grad)
        return grad
    from fastmix.kernels.triton import lumix as triton_lumix

    logits_rows = unit_column_rows(logits)
    labels_a, labels_b = _kernel_labels(y_a), _kernel_labels(y_b)
    triton_lumix.lumix_loss_backward(logits_rows, labels_a, labels_b, lam, eta, stats_rows, grad_rows, grad)
    return grad


lumix_loss_backward = torch.library.custom_op("fastmix::lumix_loss_backward", _lumix_loss_backward,
                                              mutates_args=())
lumix_loss_backward.__doc__ = "d(sum_i grad_rows_i L_i)/d logits, (B, K) contiguous in the logits' dtype."


@lumix_loss_backward.register_fake
def _(grad_rows, logits, y_a, y_b, lam, stats, eta, backend):
    _check_inputs(logits, y_a, y_b, lam, grad_rows)
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def _setup_context(ctx, inputs, output):
    logits, y_a, y_b, lam, eta, backend = inputs
    ctx.save_for_backward(logits, y_a, y_b, lam, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # the statistics get no gradient: no (B, 5) zeros to fill
    ctx.eta = eta
    ctx.backend = backend


def _backward_with(gradient):
    """The backward of ``lumix_loss``, computing the logits' gradient with ``gradient`` (the op or its body)."""

    def backward(ctx, grad_loss, grad_stats):
        logits, y_a, y_b, lam, stats = ctx.saved_tensors
        grad_logits = None
        if ctx.needs_input_grad[0] and grad_loss is not None:
            grad_logits = gradient(grad_loss, logits, y_a, y_b, lam, stats, ctx.eta, ctx.backend)
        return grad_logits, None, None, None, None, None

    return backward


lumix_loss.register_autograd(_backward_with(lumix_loss_backward), setup_context=_setup_context)
lumix_loss_call = EagerOp(lumix_loss, _lumix_loss, _setup_context, _backward_with(_lumix_loss_backward))


def _lumix_lambda(lam0: torch.Tensor, lam_r: torch.Tensor, logits: torch.Tensor, y_a: torch.Tensor,
                  y_b: torch.Tensor, r1: float, r2: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(logits, y_a, y_b, lam0, lam_r)
    _check_index_ranges(y_a, y_b, logits.size(1), backend)
    dtype = compute_dtype(logits.dtype)
    if backend == "reference" or logits.numel() == 0:
        lam_s = reference.score_lambda(logits, y_a, y_b)
        return reference.lumix_lambda(lam0.to(dtype), lam_r.to(dtype), lam_s, r1, r2), lam_s
    lam = logits.new_empty(logits.size(0), dtype=dtype)
    lam_s = torch.empty_like(lam)
    lam0_rows, lam_r_rows = lam0.to(dtype).contiguous(), lam_r.to(dtype).contiguous()
    _native.launch("lumix_lambda_cpu", logits.device, *_native_args(logits, y_a, y_b, dtype),
                   *(_native.Buffer(t, dtype, logits.size(0)) for t in (lam0_rows, lam_r_rows)), r1, r2, lam, lam_s)
    return lam, lam_s


lumix_lambda = torch.library.custom_op("fastmix::lumix_lambda", _lumix_lambda, mutates_args=())
lumix_lambda.__doc__ = """``(lam, lam_s)`` of eq. 3-5, (B,) each, fp32 (fp64 for fp64 logits), from detached logits
(the op has no gradient): "cpu" (C++) or "reference"."""


@lumix_lambda.register_fake
def _(lam0, lam_r, logits, y_a, y_b, r1, r2, backend):
    _check_inputs(logits, y_a, y_b, lam0, lam_r)
    dtype = compute_dtype(logits.dtype)
    return logits.new_empty(logits.size(0), dtype=dtype), logits.new_empty(logits.size(0), dtype=dtype)


lumix_lambda_call = EagerOp(lumix_lambda, _lumix_lambda)


def _check_seed(seed: torch.Tensor, logits: torch.Tensor) -> None:
    if not (seed.dtype == torch.int64 and seed.shape == (1,) and seed.device == logits.device):
        raise ValueError(f"seed must be a (1,) int64 tensor on the logits' device, got {seed.dtype} "
                         f"{tuple(seed.shape)} on {seed.device}")


def _lumix_lambda_sampled(lam0: torch.Tensor, seed: torch.Tensor, logits: torch.Tensor, y_a: torch.Tensor,
                          y_b: torch.Tensor, r1: float, r2: float,
                          alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_inputs(logits, y_a, y_b, lam0)
    _check_seed(seed, logits)
    _check_index_ranges(y_a, y_b, logits.size(1), "triton")
    dtype = compute_dtype(logits.dtype)
    lam = logits.new_empty(logits.size(0), dtype=dtype)
    lam_r, lam_s = torch.empty_like(lam), torch.empty_like(lam)
    if logits.size(0):
        from fastmix.kernels.triton import lumix as triton_lumix

        triton_lumix.lumix_lambda(seed, unit_column_rows(logits), _kernel_labels(y_a), _kernel_labels(y_b), lam0, r1,
                                  r2, alpha, lam, lam_r, lam_s)
    return lam, lam_r, lam_s


lumix_lambda_sampled = torch.library.custom_op("fastmix::lumix_lambda_sampled", _lumix_lambda_sampled,
                                               mutates_args=())
lumix_lambda_sampled.__doc__ = """``(lam, lam_r, lam_s)`` of eq. 3-5, (B,) each, fp32 (fp64 for fp64 logits), from
detached logits, with ``lam_r ~ Beta(alpha, alpha)`` drawn in the Triton kernel from ``seed`` ((1,) int64, e.g.
``fastmix._random.draw_seed``): the same seed gives the same draws."""


@lumix_lambda_sampled.register_fake
def _(lam0, seed, logits, y_a, y_b, r1, r2, alpha):
    _check_inputs(logits, y_a, y_b, lam0)
    _check_seed(seed, logits)
    lam = logits.new_empty(logits.size(0), dtype=compute_dtype(logits.dtype))
    return lam, torch.empty_like(lam), torch.empty_like(lam)


lumix_lambda_sampled_call = EagerOp(lumix_lambda_sampled, _lumix_lambda_sampled)
