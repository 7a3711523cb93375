"""LUMix in plain PyTorch (LUMix paper, eq. 2-8 and Algorithm 1): the ground truth for the kernels.

Convention (eq. 2-5): ``lam`` is the weight of ``y_a``, the mixed target is ``lam * y_a + (1 - lam) * y_b`` and
``lam_s = p_a / (p_a + p_b)``. Algorithm 1 writes the same thing with ``y2`` in the role of ``y_a``
(``lam_s = prob2 / (prob1 + prob2)``, ``y = (1 - lam) * y1 + lam * y2``). The loss functions take float (B, K)
label rows (the op layer turns class indices into one-hot rows); ``score_lambda`` also takes class indices.
"""

from __future__ import annotations

import torch

from fastmix._dtypes import compute_dtype

STAT_COLUMNS = ("log_sum_exp", "label_sum", "hinge_mass", "min_a", "min_b")


def positives(labels: torch.Tensor, row_min: torch.Tensor | None = None) -> torch.Tensor:
    """The classes Algorithm 1 marks with ``y > y.min()``: the labelled class of a one-hot row, the positives of a
    multi-hot row, every class above the row minimum of a soft row, none for a constant row.

    Algorithm 1's ``y.min()`` is the minimum of the whole (B, C) tensor; for one-hot and label-smoothed rows that
    equals every row's minimum. We take each row's own minimum, so that a sample's ``b`` does not depend on the
    other samples of the batch.
    """
    if row_min is None:
        row_min = labels.amin(dim=1)
    return labels > row_min.unsqueeze(1)


def label_probability(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``p_A`` of eq. 5 for any label row: ``sum_k y_k p_k / sum_k y_k`` (0 for an all-zero row).

    For a one-hot row (or a class index) this is the softmax score of the labelled class, as in eq. 5; for a soft
    row summing to 1 it is the expected score; for a multi-hot row the mean score of the positive classes.
    """
    if labels.dim() == 1:
        return probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    mass = labels.sum(1)
    weighted = (probs * labels).sum(1)
    return torch.where(mass > 0, weighted / torch.where(mass > 0, mass, 1), 0)


def score_lambda(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
    """``lam_s = p_a / (p_a + p_b)`` from the softmax of the detached logits (eq. 4-5); 0.5 when both are 0.

    Labels are class indices (B,) or float rows (B, K)."""
    dtype = compute_dtype(logits.dtype)
    probs = torch.softmax(logits.detach().to(dtype), dim=1)
    p_a = label_probability(probs, y_a if y_a.dim() == 1 else y_a.to(dtype))
    p_b = label_probability(probs, y_b if y_b.dim() == 1 else y_b.to(dtype))
    total = p_a + p_b
    return torch.where(total > 0, p_a / torch.where(total > 0, total, 1), 0.5)


def lumix_lambda(lam0: torch.Tensor, lam_r: torch.Tensor, lam_s: torch.Tensor, r1: float, r2: float) -> torch.Tensor:
    """``lam = (1 - r1 - r2) lam0 + r1 lam_r + r2 lam_s`` (eq. 3; r1 weights the random term)."""
    return (1 - r1 - r2) * lam0 + r1 * lam_r + r2 * lam_s


def mixed_target(y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    lam = lam.to(dtype).unsqueeze(1)
    return lam * y_a.to(dtype) + (1 - lam) * y_b.to(dtype)


def binarised_union(y_a: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
    """``b`` of eq. 7-8 as Algorithm 1 builds it: 1 where either label marks the class (``b[y1 > y1.min()] = 1``,
    ``b[y2 > y2.min()] = 1``), i.e. the union, although eq. 8 prints a wedge."""
    return positives(y_a) | positives(y_b)


def lumix_loss(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor,
               eta: float) -> torch.Tensor:
    """Per-row ``L0 + eta R`` (eq. 6-7): soft-target cross-entropy against the mixed target ``y`` plus the hinge
    ``R = sum_k y_k max(0, b_k - p_k)`` on the softmax scores ``p``. Differentiable in ``logits``."""
    dtype = compute_dtype(logits.dtype)
    target = mixed_target(y_a, y_b, lam, dtype)
    log_probs = torch.log_softmax(logits.to(dtype), dim=1)
    cross_entropy = -(target * log_probs).sum(1)
    hinge = (target * torch.relu(binarised_union(y_a, y_b).to(dtype) - log_probs.exp())).sum(1)
    return cross_entropy + eta * hinge


def loss_and_statistics(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor,
                        eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``lumix_loss`` without autograd, sharing its intermediates with the (B, 5) per-row values the backward
    needs, columns as in ``STAT_COLUMNS``: ``log sum_k e^z_k``, ``sum_k y_k``, ``sum_k y_k p_k [b_k > p_k]`` and the
    two label rows' minima (which define ``b``)."""
    dtype = compute_dtype(logits.dtype)
    y_a, y_b = y_a.to(dtype), y_b.to(dtype)
    target = mixed_target(y_a, y_b, lam, dtype)
    z = logits.to(dtype)
    log_sum_exp = torch.logsumexp(z, dim=1)
    log_probs = z - log_sum_exp.unsqueeze(1)
    probs = log_probs.exp()
    min_a, min_b = y_a.amin(1), y_b.amin(1)
    gap = torch.where(positives(y_a, min_a) | positives(y_b, min_b), 1 - probs, 0)  # max(0, b - p), as p <= 1
    weighted_gap = target * gap
    rows = eta * weighted_gap.sum(1) - (target * log_probs).sum(1)
    hinge_mass = torch.where(gap > 0, target * probs, 0).sum(1)
    return rows, torch.stack([log_sum_exp, target.sum(1), hinge_mass, min_a, min_b], dim=1)


def lumix_loss_grad(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor, eta: float,
                    stats: torch.Tensor, grad_rows: torch.Tensor) -> torch.Tensor:
    """d(sum_i grad_rows_i L_i)/d logits in closed form, in the logits' dtype:
    ``grad_j = g (p_j sum_k y_k - y_j + eta p_j (sum_k h_k p_k - h_j))`` with ``h_k = y_k [b_k > p_k]``."""
    dtype = compute_dtype(logits.dtype)
    target = mixed_target(y_a, y_b, lam, dtype)
    log_sum_exp, label_sum, hinge_mass, min_a, min_b = stats.to(dtype).unbind(1)
    probs = torch.exp(logits.to(dtype) - log_sum_exp.unsqueeze(1))
    union = positives(y_a.to(dtype), min_a) | positives(y_b.to(dtype), min_b)
    hinge_weight = torch.where(union & (probs < 1), target, 0)
    grad = (probs * label_sum.unsqueeze(1) - target
            + eta * probs * (hinge_mass.unsqueeze(1) - hinge_weight))
    return (grad * grad_rows.to(dtype).unsqueeze(1)).to(logits.dtype)
