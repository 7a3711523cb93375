"""LaMix: averaged inputs and a learned global soft label in the target (LaMix paper, section 2, eq. 2-11)."""

from __future__ import annotations

import torch

from fastmix import _backend, _checks, _random
from fastmix._dtypes import compute_dtype
from fastmix.api import mix as mix_api
from fastmix.ops import lamix as lamix_ops
from fastmix.ops import mix as mix_ops


def lamix_inputs(x: torch.Tensor, *, generator: torch.Generator | None = None, backend: str | None = None):
    """``x~_ij = 0.5 x_i + 0.5 x_j`` with ``j = perm[i]`` (LaMix paper, eq. 4): returns ``(x_avg, perm)``.

    One averaged input per pair, whatever the mixing ratio: the Mixup kernel with lam = 0.5, so any trailing shape and
    layout, output in x's dtype and dimension order, math in float32 (float64 for float64 x). ``perm`` (B,) int64 is
    a uniformly random permutation drawn on x's device from ``generator``; like mixup's ``x[randperm]``, it may pair
    a sample with itself. On the kernel backends ("cuda", "triton") one kernel draws it from one device seed taken
    from the generator (then the mix: 3 launches, and 1 for the backward); "cpu" and "reference" draw it with
    ``torch.randperm``, so one seeded generator gives a different permutation there. Gradients flow to x.
    """
    _checks.check_batch_input("x", x)
    _checks.check_generator(generator, x.device)
    name = _backend.resolve(backend, x.device, cpu_default="cpu", supported=mix_ops.BACKENDS)  # as fastmix.mixup
    if not mix_api.samples_in_kernel(name, x.device):
        perm = torch.randperm(x.size(0), generator=generator, device=x.device)
        half = torch.full((x.size(0),), 0.5, dtype=torch.float32, device=x.device)
        return mix_ops.mixup_pairs(x, half, perm, name), perm
    perm, inverse, half = lamix_ops.lamix_pairs(_random.draw_seed(generator, x.device), x.size(0),
                                                compute_dtype(x.dtype))
    no_boxes = torch.empty((x.size(0), 4), dtype=torch.int32, device=x.device)  # never read: no spatial dims
    return mix_ops.mix_pairs_unchecked_call(x, half, no_boxes, perm, inverse, -1, -1, name, False), perm


def _check_pairing(lam, partner, batch: int, device: torch.device):
    """lam (B,) floating and partner (B,) integer indices (the loss op checks that they lie in [0, B)), on the
    logits' device."""
    _checks.check_tensor("lam", lam)
    _checks.check_tensor("partner", partner)
    for name, value in (("lam", lam), ("partner", partner)):
        if value.device != device:
            raise ValueError(f"{name} is on {value.device} but the logits are on {device}")
        if value.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got shape {tuple(value.shape)}")
    if not lam.is_floating_point():
        raise TypeError(f"lam must be a floating-point tensor, got dtype {lam.dtype}")
    if partner.is_floating_point() or partner.is_complex() or partner.dtype == torch.bool:
        raise TypeError(f"partner must hold integer sample indices, got dtype {partner.dtype}")
    return lam, partner.long()


def _check_partner_range(partner: torch.Tensor) -> None:
    batch = partner.size(0)
    _checks.check_on_device(((partner >= 0) & (partner < batch)).all(),
                            f"partner holds sample indices outside [0, {batch})")


def _labels(y, batch: int, classes: int, device: torch.device) -> torch.Tensor:
    """Integer labels stay (B,) int64 class indices (the kernel builds the one-hot rows on the fly, nothing of size
    (B, K) is written; the loss op checks that they lie in [0, K)); float labels become (B, K) float32/float64,
    checked as ``labels_to_float`` does."""
    _checks.check_tensor("y", y)
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex() or y.dim() != 1:
        return _checks.labels_to_float(y, batch, device, classes)
    if y.device != device:
        raise ValueError(f"y is on {y.device} but the logits are on {device}")
    if y.size(0) != batch:
        raise ValueError(f"y must have the batch size of the logits ({batch}), got shape {tuple(y.shape)}")
    return y.long()


def _check_logits(logits, target_logits) -> None:
    _checks.check_batch_input("logits", logits)
    _checks.check_tensor("target_logits", target_logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, K), got shape {tuple(logits.shape)}")
    if target_logits.shape != logits.shape:
        raise ValueError(f"target_logits must have the shape of logits {tuple(logits.shape)}, "
                         f"got {tuple(target_logits.shape)}")
    if target_logits.dtype != logits.dtype or target_logits.device != logits.device:
        raise ValueError(f"target_logits ({target_logits.dtype}, {target_logits.device}) must match logits "
                         f"({logits.dtype}, {logits.device})")


def lamix_loss(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    partner: torch.Tensor,
    *,
    beta: float = 0.5,
    detach_target: bool = False,
    reduction: str = "mean",
    backend: str | None = None,
) -> torch.Tensor:
    """The LaMix loss (LaMix paper, eq. 2, 9-11), target and cross-entropy fused; the (B, K) target stays in registers.

    Per row: local label ``y~ = lam y_i + (1 - lam) y_partner`` (eq. 2), global soft label
    ``p = softmax(sigmoid(target_logits))`` (eq. 9), target ``y_ij = beta y~ + (1 - beta) p`` (eq. 10), loss
    ``-sum_k y_ij,k log softmax(logits)_k`` (eq. 11, read as cross-entropy between the target and the classifier's
    prediction; the extracted formula is garbled).

    Args:
        logits: (B, K) classifier logits ``W_l S`` (eq. 7); any floating dtype, math in float32 (float64 for float64).
        target_logits: (B, K) target-head logits ``W_t S`` (eq. 9), same dtype and device as logits.
        y: int class indices (B,) (read as indices by the kernel, no one-hot is built) or float
            one-hot/soft/multi-hot labels (B, K).
        lam: (B,) mixing ratios, expected in [0, 1] (not checked: that would synchronise). For an original
            mini-batch (section 2.4) pass ``partner = arange(B)``: the local label is then ``y_i`` for any lam.
        partner: (B,) integer partner of each row, in [0, B).
        beta: weight of the local label in [0, 1] (eq. 10); the paper's default is 0.5.
        detach_target: False (the paper): the target head ``W_t`` learns through this loss, which pulls ``p`` toward
            the classifier's confident classes (the gradient is ``(1 - beta) p (P - log q) s (1 - s)``, with
            ``q = softmax(logits)``, ``s = sigmoid(target_logits)``, ``P = sum_k p_k log q_k``). True: the target is
            a constant (as with ``target_logits.detach()``): no gradient reaches target_logits, and W_t would
            then need another loss to learn.
        reduction: "mean" (default), "sum" or "none" (per-sample float32 loss, float64 for float64 logits).
        backend: "cpu" (C++), "triton", "reference", or None for the default (Triton on CUDA tensors, the C++
            kernel on CPU tensors; see ``fastmix.info()``).
    """
    _check_logits(logits, target_logits)
    batch, classes = logits.shape
    labels = _labels(y, batch, classes, logits.device)
    lam, partner = _check_pairing(lam, partner, batch, logits.device)
    beta = _checks.check_real("beta", beta, 0.0, 1.0)
    detach_target = _checks.check_bool("detach_target", detach_target)
    _checks.check_reduction(reduction)
    name = _backend.resolve(backend, logits.device, cuda_default="triton", cpu_default="cpu",
                            supported=lamix_ops.BACKENDS)
    loss = lamix_ops.lamix_loss_call(logits, target_logits, labels, lam, partner, beta, detach_target, name)
    return _checks.reduce_rows(loss, reduction)


def lamix_target(target_logits: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor, *,
                 beta: float = 0.5) -> torch.Tensor:
    """The (B, K) training target ``beta y~ + (1 - beta) softmax(sigmoid(target_logits))`` (LaMix paper, eq. 10).

    For logging and inspection; training uses ``lamix_loss``, which never materialises it. float32 (float64 for
    float64 labels or target_logits).
    """
    _checks.check_batch_input("target_logits", target_logits)
    if target_logits.dim() != 2:
        raise ValueError(f"target_logits must have shape (B, K), got shape {tuple(target_logits.shape)}")
    batch, classes = target_logits.shape
    labels = _checks.labels_to_float(y, batch, target_logits.device, classes)
    lam, partner = _check_pairing(lam, partner, batch, target_logits.device)
    _check_partner_range(partner)
    if target_logits.dtype == torch.float64:
        labels = labels.double()
    beta = _checks.check_real("beta", beta, 0.0, 1.0)
    lam = lam.to(labels.dtype).unsqueeze(1)
    local = torch.lerp(labels[partner], labels, lam)
    global_soft = torch.sigmoid(target_logits.to(labels.dtype)).softmax(1)
    return torch.lerp(global_soft, local, beta)
