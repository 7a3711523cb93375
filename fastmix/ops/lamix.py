"""LaMix custom ops (LaMix paper, eq. 2-4 and 9-11): ``fastmix::lamix_loss`` and its gradient
``fastmix::lamix_loss_backward``, the target (eq. 10) and its cross-entropy (eq. 11) fused, and
``fastmix::lamix_pairs``, the averaged inputs' pairing (eq. 4) drawn in a Triton kernel.

The backward recomputes the row statistics from the logits instead of storing (B, K) gradients in the forward:
fewer bytes move in all, and nothing of size (B, K) lives between the two passes. Backends: "cpu" (C++, OpenMP
over rows), "triton", "reference". Each op checks its arguments before a kernel runs; class indices and partners are
checked by the C++ kernel before it computes on "cpu", by a device-side assert in the Triton kernel
(``kernels.triton.checks``; on CPU tensors in eager mode on the host first, for a ValueError), and on the device for
the reference. A batch or class count of 0 launches nothing: the loss of an empty row is 0.
"""

from __future__ import annotations

import torch

from fastmix import _checks, _native
from fastmix._dtypes import compute_dtype
from fastmix.ops._fast_path import EagerOp, label_arguments, per_row_buffer, unit_column_rows
from fastmix.reference import lamix as reference

BACKENDS = ("triton", "reference", "cpu")


def _check_inputs(logits, target_logits, labels, lam, partner, *grads):
    """Shapes and dtypes (ValueError): logits and target_logits (B, K) of one floating dtype, labels int64 (B,) or
    floating (B, K), lam and every incoming gradient floating (B,), partner int64 (B,)."""
    if not (logits.dim() == 2 and logits.is_floating_point() and target_logits.shape == logits.shape
            and target_logits.dtype == logits.dtype):
        raise ValueError(f"logits and target_logits must be floating (B, K) tensors of one dtype, got {logits.dtype} "
                         f"{tuple(logits.shape)} and {target_logits.dtype} {tuple(target_logits.shape)}")
    batch = logits.size(0)
    if not ((labels.dtype == torch.int64 and labels.shape == (batch,))
            or (labels.is_floating_point() and labels.shape == logits.shape)):
        raise ValueError(f"labels must be int64 ({batch},) or floating {tuple(logits.shape)}, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if not (partner.dtype == torch.int64 and partner.shape == (batch,)):
        raise ValueError(f"partner must be int64 ({batch},), got {partner.dtype} {tuple(partner.shape)}")
    for value in (lam, *grads):
        if not (value.is_floating_point() and value.shape == (batch,)):
            raise ValueError(f"lam and grad_loss must be floating ({batch},), got {value.dtype} {tuple(value.shape)}")


def _check_index_ranges(labels, partner, classes: int, backend: str) -> None:
    """Class indices in [0, K) and partners in [0, B): on the device here for the reference; the C++ kernels check
    them before computing, the Triton kernel asserts them as it reads them (checked here too where the host reads
    them for free)."""
    if backend == "cpu" or (backend == "triton" and not _checks.host_reads_values(partner)):
        return
    if labels.dim() == 1:
        _checks.check_on_device(((labels >= 0) & (labels < classes)).all(),
                                f"y holds class indices outside [0, {classes})")
    batch = partner.size(0)
    _checks.check_on_device(((partner >= 0) & (partner < batch)).all(),
                            f"partner holds sample indices outside [0, {batch})")


def _native_args(logits, target_logits, labels, lam, partner) -> tuple:
    """The C++ kernels' arguments from the logits to the partners, for ``_native.launch``."""
    compute = compute_dtype(logits.dtype)
    batch = logits.size(0)
    return (*(_native.Buffer(unit_column_rows(z), logits.dtype, rows=True) for z in (logits, target_logits)), batch,
            logits.size(1), _native.DTYPE_CODES[logits.dtype], labels.dim() == 1, *label_arguments(labels, compute),
            _native.Buffer(lam.to(compute).contiguous(), compute, batch),
            _native.Buffer(partner.contiguous(), torch.int64, batch))


def _lamix_loss(logits: torch.Tensor, target_logits: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor,
                partner: torch.Tensor, beta: float, detach_target: bool, backend: str) -> torch.Tensor:
    _check_inputs(logits, target_logits, labels, lam, partner)
    _check_index_ranges(labels, partner, logits.size(1), backend)
    if logits.numel() == 0:
        return logits.new_zeros(logits.size(0), dtype=compute_dtype(logits.dtype))
    if backend == "reference":
        return reference.lamix_loss(logits, target_logits, labels, lam, partner, beta, detach_target).to(
            compute_dtype(logits.dtype))
    loss = logits.new_empty(logits.size(0), dtype=compute_dtype(logits.dtype))
    if backend == "cpu":
        _native.launch("lamix_loss_forward_cpu", logits.device,
                       *_native_args(logits, target_logits, labels, lam, partner), beta, loss)
        return loss
    from fastmix.kernels.triton import lamix as triton_lamix

    z_rows, t_rows, label_rows = _rows(logits, target_logits, labels)
    triton_lamix.lamix_loss(z_rows, t_rows, label_rows, lam.to(compute_dtype(logits.dtype)), partner, beta, loss)
    return loss


lamix_loss = torch.library.custom_op("fastmix::lamix_loss", _lamix_loss, mutates_args=())
lamix_loss.__doc__ = """Per-sample loss (B,), float32 (float64 for float64 logits).

logits, target_logits: (B, K) of one floating dtype; labels: (B,) int64 class indices or (B, K) float32/float64;
lam (B,) float; partner (B,) int64 in [0, B). ``detach_target`` only changes the gradient.
"""


@lamix_loss.register_fake
def _(logits, target_logits, labels, lam, partner, beta, detach_target, backend):
    _check_inputs(logits, target_logits, labels, lam, partner)
    return logits.new_empty(logits.size(0), dtype=compute_dtype(logits.dtype))


def _rows(logits, target_logits, labels):
    """The Triton kernel's (B, K) operands with unit column stride; class indices as they are (any stride)."""
    label_rows = labels if labels.dim() == 1 else unit_column_rows(labels)
    return unit_column_rows(logits), unit_column_rows(target_logits), label_rows


def _lamix_loss_backward(grad_loss: torch.Tensor, logits: torch.Tensor, target_logits: torch.Tensor,
                         labels: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor, beta: float,
                         detach_target: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(logits, target_logits, labels, lam, partner, grad_loss)
    _check_index_ranges(labels, partner, logits.size(1), backend)
    if backend == "reference" and logits.numel():
        return reference.lamix_loss_grads(grad_loss, logits, target_logits, labels, lam, partner, beta, detach_target)
    grad_z = torch.empty_like(logits, memory_format=torch.contiguous_format)
    grad_t = (target_logits.new_empty(0) if detach_target
              else torch.empty_like(target_logits, memory_format=torch.contiguous_format))
    if logits.numel() == 0:
        return grad_z, grad_t
    compute = compute_dtype(logits.dtype)
    if backend == "cpu":
        _native.launch("lamix_loss_backward_cpu", logits.device, per_row_buffer(grad_loss, compute),
                       *_native_args(logits, target_logits, labels, lam, partner), beta, detach_target, grad_z,
                       0 if detach_target else grad_t)
        return grad_z, grad_t
    from fastmix.kernels.triton import lamix as triton_lamix

    z_rows, t_rows, label_rows = _rows(logits, target_logits, labels)
    triton_lamix.lamix_loss_backward(grad_loss, z_rows, t_rows, label_rows, lam.to(compute), partner, beta,
                                     detach_target, grad_z, grad_t)
    return grad_z, grad_t


lamix_loss_backward = torch.library.custom_op("fastmix::lamix_loss_backward", _lamix_loss_backward,
                                              mutates_args=())
lamix_loss_backward.__doc__ = """``(grad_logits, grad_target_logits)`` for the incoming (B,) ``grad_loss``, in the
logits' dtype, contiguous. ``grad_target_logits`` is an empty (0,) tensor when the target is detached (no gradient
is computed for it).
"""


@lamix_loss_backward.register_fake
def _(grad_loss, logits, target_logits, labels, lam, partner, beta, detach_target, backend):
    _check_inputs(logits, target_logits, labels, lam, partner, grad_loss)
    grad_t = (target_logits.new_empty(0) if detach_target
              else torch.empty_like(target_logits, memory_format=torch.contiguous_format))
    return torch.empty_like(logits, memory_format=torch.contiguous_format), grad_t


def _setup_context(ctx, inputs, output):
    logits, target_logits, labels, lam, partner, beta, detach_target, backend = inputs
    ctx.save_for_backward(logits, target_logits, labels, lam, partner)
    ctx.beta, ctx.detach_target, ctx.backend = beta, detach_target, backend


def _backward_with(gradients):
    """The backward of ``lamix_loss``, computing the gradients with ``gradients`` (the op or its body). First-order
    only: ``lamix_loss_backward`` has no autograd of its own, so a double backward raises."""

    def backward(ctx, grad_loss):
        logits, target_logits, labels, lam, partner = ctx.saved_tensors
        need_logits, need_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1] and not ctx.detach_target
        if not (need_logits or need_target):
            return (None,) * 8
        grad_z, grad_t = gradients(grad_loss, logits, target_logits, labels, lam, partner, ctx.beta, not need_target,
                                   ctx.backend)
        return (grad_z if need_logits else None), (grad_t if need_target else None), *(None,) * 6

    return backward


lamix_loss.register_autograd(_backward_with(lamix_loss_backward), setup_context=_setup_context)
lamix_loss_call = EagerOp(lamix_loss, _lamix_loss, _setup_context, _backward_with(_lamix_loss_backward))


def _check_pairs_args(seed: torch.Tensor, batch: int, dtype: torch.dtype) -> None:
    if seed.dtype != torch.int64 or seed.shape != (1,) or batch < 0:
        raise ValueError(f"seed must be a (1,) int64 tensor and batch >= 0, got {seed.dtype} {tuple(seed.shape)} "
                         f"and {batch}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be float32 or float64 (the mix's accumulation type), got {dtype}")


@torch.library.custom_op("fastmix::lamix_pairs", mutates_args=())
def lamix_pairs(seed: torch.Tensor, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(perm, inverse, half)``: a uniformly random permutation of 0..B-1 (int64) drawn by one Triton kernel from
    ``seed`` ((1,) int64, e.g. ``fastmix._random.draw_seed``), its inverse, and the (B,) mixing ratios 1/2 of eq. 4 in
    ``dtype``, as ``fastmix::mix_pairs_unchecked`` takes them. The same seed gives the same permutation."""
    _check_pairs_args(seed, batch, dtype)
    from fastmix.kernels.triton import lamix as triton_lamix

    perm, inverse = seed.new_empty(batch), seed.new_empty(batch)
    half = seed.new_empty(batch, dtype=dtype)
    triton_lamix.lamix_pairs(seed, perm, inverse, half)
    return perm, inverse, half


@lamix_pairs.register_fake
def _(seed, batch, dtype):
    _check_pairs_args(seed, batch, dtype)
    return seed.new_empty(batch), seed.new_empty(batch), seed.new_empty(batch, dtype=dtype)
