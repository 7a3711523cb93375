"""LaMix in plain PyTorch (LaMix paper, section 2, eq. 2-11): the ground truth for the fused kernels.

Notation per row b: classifier logits ``z`` (eq. 7), target-head logits ``t`` (eq. 9), labels ``y`` ((B, K) floats;
``lamix_loss`` and ``lamix_loss_grads`` also take (B,) class indices), mixing ratio ``lam[b]``, partner
``j = partner[b]``.
"""

from __future__ import annotations

import torch

from fastmix._dtypes import compute_dtype


def lamix_inputs(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``x~_ij = 0.5 x_i + 0.5 x_j`` with ``j = perm[i]`` (eq. 4), whatever the mixing ratio."""
    return 0.5 * x + 0.5 * x[perm]


def local_labels(labels: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """``y~ = lam y_i + (1 - lam) y_j`` (eq. 2), in the labels' dtype."""
    lam = lam.to(labels.dtype).unsqueeze(1)
    return lam * labels + (1 - lam) * labels[partner]


def global_soft_labels(target_logits: torch.Tensor) -> torch.Tensor:
    """``p = softmax(sigmoid(W_t S))`` (eq. 9) from the target-head logits ``t = W_t S``."""
    return torch.softmax(torch.sigmoid(target_logits), dim=1)


def lamix_target(target_logits, labels, lam, partner, beta: float) -> torch.Tensor:
    """``y_ij = beta y~_ij + (1 - beta) p_ij`` (eq. 10), computed in the labels' dtype."""
    local = local_labels(labels, lam, partner)
    return beta * local + (1 - beta) * global_soft_labels(target_logits.to(labels.dtype))


def dense_labels(labels: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(B,) int64 class indices as one-hot rows, or (B, K) float labels, in ``dtype``."""
    if labels.is_floating_point():
        return labels.to(dtype)
    return torch.nn.functional.one_hot(labels, classes).to(dtype)


def lamix_loss(logits, target_logits, labels, lam, partner, beta: float, detach_target: bool) -> torch.Tensor:
    """Per-sample cross-entropy ``-sum_k y_ij,k log softmax(z)_k`` (eq. 11), differentiable by autograd.

    Labels are (B,) class indices or (B, K) floats; math in float32, float64 if the logits or labels are float64.
    The target depends on ``t``; with ``detach_target`` it is a constant and the target head gets no
    gradient.
    """
    compute = compute_dtype(logits.dtype)
    if labels.is_floating_point():
        compute = torch.promote_types(compute, labels.dtype)
    labels = dense_labels(labels, logits.size(1), compute)
    if detach_target:
        target_logits = target_logits.detach()
    target = lamix_target(target_logits, labels, lam, partner, beta)
    return -(target * torch.log_softmax(logits.to(compute), dim=1)).sum(1)


def lamix_loss_grads(grad_loss, logits, target_logits, labels, lam, partner, beta: float, detach_target: bool):
    """``(grad_loss * dloss/dz, grad_loss * dloss/dt)`` in closed form, as the fused kernel computes them.

    With ``q = softmax(z)``, ``s = sigmoid(t)``, ``p = softmax(s)``, ``P = sum_k p_k log q_k``:
    ``dloss/dz = q * sum_k y_ij,k - y_ij`` and ``dloss/dt = (1 - beta) p (P - log q) s (1 - s)``; the second is
    an empty (0,) tensor when the target is detached. Math in float32 (float64 for float64 logits); grads in the logits' dtype.
    """
    compute = compute_dtype(logits.dtype)
    log_q = torch.log_softmax(logits.to(compute), dim=1)
    sig = torch.sigmoid(target_logits.to(compute))
    p = torch.softmax(sig, dim=1)
    target = beta * local_labels(dense_labels(labels, logits.size(1), compute), lam, partner) + (1 - beta) * p
    scale = grad_loss.to(compute).unsqueeze(1)
    grad_z = scale * (log_q.exp() * target.sum(1, keepdim=True) - target)
    if detach_target:
        return grad_z.to(logits.dtype), target_logits.new_empty(0)
    mean_log_q = (p * log_q).sum(1, keepdim=True)
    grad_t = scale * (1 - beta) * p * (mean_log_q - log_q) * sig * (1 - sig)
    return grad_z.to(logits.dtype), grad_t.to(target_logits.dtype)
