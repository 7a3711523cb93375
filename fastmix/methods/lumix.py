"""LUMix training step (LUMix paper, Algorithm 1): CutMix the batch, run the model, re-weight the labels, LUMix loss."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import nn

import fastmix
from fastmix import _backend, _checks
from fastmix.api.lumix import check_ratios, lumix_lambda, lumix_loss
from fastmix.ops import lumix as lumix_ops


class LUMixOutput(NamedTuple):
    """One step's loss (scalar), the model's logits (B, K), the label weight of eq. 3 (B,) and CutMix's params."""

    loss: torch.Tensor
    logits: torch.Tensor
    lam: torch.Tensor
    params: object


class LUMix(nn.Module):
    """LUMix on top of CutMix (LUMix paper, Algorithm 1) as one call per training step.

    In training mode ``lumix(model, x, y)`` runs ``fastmix.cutmix`` on the batch (sample i keeps the fraction
    ``params.lam[i]`` of its own image and takes a box from ``x[params.partner[i]]``), feeds the mixed images to
    ``model``, draws ``lam = (1 - r1 - r2) lam0 + r1 lam_r + r2 lam_s`` (eq. 3) with ``lam0 = params.lam`` as the
    weight of the sample's own label ``y`` and ``y[partner]`` as the other label, and returns ``L0 + eta R``
    (eq. 6-8) averaged over the batch. In eval mode it runs the model on the unmixed batch and returns the plain
    cross-entropy (``lam = 1``, ``eta = 0``).

    Args:
        num_classes: needed by ``fastmix.cutmix`` when ``y`` holds class indices.
        cutmix_alpha: CutMix's Beta(alpha, alpha) for the box area, > 0.
        correct_lam: ``lam0`` is the kept-area fraction after the box is clipped to the image (CutMix eq. 1-2).
        r1, r2, alpha: as in ``fastmix.lumix_lambda`` (paper defaults 0.4, 0.1, 2.0).
        eta: weight of the hinge R, as in ``fastmix.lumix_loss``.
        backend: the backend of the label weight and the loss, as in ``fastmix.lumix_lambda`` and
            ``fastmix.lumix_loss``.
    """

    def __init__(self, num_classes: int | None = None, *, cutmix_alpha: float = 1.0, correct_lam: bool = True,
                 r1: float = 0.4, r2: float = 0.1, alpha: float = 2.0, eta: float = 1.0, backend: str | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.cutmix_alpha = _checks.check_positive_finite("cutmix_alpha", cutmix_alpha)
        self.correct_lam = _checks.check_bool("correct_lam", correct_lam)
        self.r1, self.r2 = check_ratios(r1, r2)
        self.alpha = _checks.check_positive_finite("alpha", alpha)
        self.eta = _checks.check_real("eta", eta, 0.0, math.inf)
        self.backend = _backend.check_name(backend, lumix_ops.BACKENDS)

    def forward(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> LUMixOutput:
        if not self.training:
            logits = model(x)
            lam = torch.ones(logits.size(0), dtype=torch.float32, device=logits.device)
            return LUMixOutput(lumix_loss(logits, y, y, lam, eta=0.0, backend=self.backend), logits, lam, None)
        x_mixed, _, params = fastmix.cutmix(x, y, alpha=self.cutmix_alpha, correct_lam=self.correct_lam,
                                            num_classes=self.num_classes, generator=generator)
        logits = model(x_mixed)
        y_partner = y.index_select(0, params.partner)
        lam = lumix_lambda(params.lam, logits, y, y_partner, r1=self.r1, r2=self.r2, alpha=self.alpha,
                           generator=generator, backend=self.backend)
        loss = lumix_loss(logits, y, y_partner, lam, eta=self.eta, backend=self.backend)
        return LUMixOutput(loss, logits, lam, params)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, cutmix_alpha={self.cutmix_alpha}, correct_lam={self.correct_lam}, "
                f"r1={self.r1}, r2={self.r2}, alpha={self.alpha}, eta={self.eta}")
