"""BalanceMix in plain PyTorch (BalanceMix paper): minority sampling (eq. 2-4), label management (eq. 8-9), loss (eq. 10).

Labels are multi-hot (N, K) tensors of 0/1 in a floating dtype; confidences are sigmoid outputs f(x)_k.
"""

from __future__ import annotations

import torch

from fastmix._categories import AMBIGUOUS, CLEAN, RELABELED
from fastmix._dtypes import compute_dtype


def class_confidences(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, A)``, each (K,): the mean confidence in the presence of class k over its positive labels and in its
    absence over its negative labels (eq. 2). A class with no positive (negative) label gets P (A) = 0; that value
    never enters a Score (eq. 3), since no instance carries such a label.
    """
    positive = labels
    negative = 1.0 - labels
    presence = (probabilities * positive).sum(0) / positive.sum(0).clamp(min=1.0)
    absence = ((1.0 - probabilities) * negative).sum(0) / negative.sum(0).clamp(min=1.0)
    return presence, absence


def instance_scores(labels: torch.Tensor, presence: torch.Tensor, absence: torch.Tensor) -> torch.Tensor:
    """Score per instance, (N,): ``sum_k 1[y_k=1] P(k) + 1[y_k=0] A(k)`` (eq. 3)."""
    return labels @ presence + (1.0 - labels) @ absence


def sampling_probabilities(probabilities: torch.Tensor, labels: torch.Tensor, min_score: float = 1e-12) -> torch.Tensor:
    """The minority sampler's distribution over the N instances, proportional to ``1 / Score`` (eq. 2-4), float64.

    Scores are clamped at ``min_score`` so that an instance whose every label has zero class confidence gets a
    large but finite weight.
    """
    probabilities = probabilities.double()
    labels = labels.double()
    presence, absence = class_confidences(probabilities, labels)
    inverse = 1.0 / instance_scores(labels, presence, absence).clamp(min=min_score)
    return inverse / inverse.sum()


def manage_labels(labels: torch.Tensor, clean_probability: torch.Tensor, view_confidence: torch.Tensor | None,
                  tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label-wise management (eq. 8-10): ``(refined_labels, categories, loss_weights)``, all (B, K).

    A label is clean (``CLEAN``, weight 1, kept) where ``p_G > 0.5`` (eq. 8). Otherwise it is re-labeled
    (``RELABELED``, weight 1) to 1 where the mean confidence of the augmented views is ``>= tau`` and to 0 where it
    is ``<= 1 - tau`` (eq. 9; the paper prints strict inequalities; fastmix takes inclusive ones, which let
    ``tau = 1`` re-label saturated predictions). The rest are ambiguous (``AMBIGUOUS``, kept, weight ``p_G``,
    eq. 10). With ``view_confidence=None`` nothing is re-labeled.
    """
    clean = clean_probability > 0.5
    labels = labels.to(clean_probability.dtype)
    if view_confidence is None:
        to_one = to_zero = torch.zeros_like(clean)
    else:
        to_one = ~clean & (view_confidence >= tau)
        to_zero = ~clean & (view_confidence <= 1.0 - tau)
    relabeled = to_one | to_zero
    refined = torch.where(to_one, torch.ones_like(labels), torch.where(to_zero, torch.zeros_like(labels), labels))
    categories = torch.full_like(clean, AMBIGUOUS, dtype=torch.int8)
    categories = categories.masked_fill(relabeled, RELABELED).masked_fill(clean, CLEAN)
    weights = torch.where(clean | relabeled, torch.ones_like(clean_probability), clean_probability)
    return refined, categories, weights


def balancemix_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``(1/B) sum_b sum_k w_bk BCE(f(x_b)_k, y_bk)`` (eq. 10) with ``w = 1`` on C and R labels and ``p_G`` on U labels;
    ``weights=None`` is plain BCE summed over classes (the warm-up loss). Computed in float32 (float64 for float64).
    """
    dtype = compute_dtype(logits.dtype)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.to(dtype), targets.to(dtype), reduction="none")
    if weights is not None:
        bce = bce * weights.to(dtype)
    return bce.sum() / logits.size(0)
