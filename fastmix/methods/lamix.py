"""LaMix training logic (LaMix paper, section 2): the two-headed classifier and the per-step schedule."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from fastmix import _backend, _checks, _random
from fastmix.api import lamix as lamix_api
from fastmix.ops import lamix as lamix_ops


class LaMixHead(nn.Module):
    """The classifier ``W_l`` (eq. 7) and the target head ``W_t`` (eq. 9) over the same embedding ``S`` (eq. 6).

    ``forward(S) -> (logits, target_logits)``. Both are ``nn.Linear(in_features, num_classes)``: the paper's
    equations write no bias, but its experiments make W_t "the same as the fully connected layer of the original
    network", which has one; ``bias=False`` gives the equations as written. At test time use ``logits`` only.
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = True):
        super().__init__()
        for name, value in (("in_features", in_features), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.classifier = nn.Linear(in_features, num_classes, bias=bias)
        self.target = nn.Linear(in_features, num_classes, bias=bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier(features), self.target(features)


class LaMixBatch(NamedTuple):
    """What a step's loss needs: labels, per-row mixing ratio and partner, and whether the inputs were averaged."""

    y: torch.Tensor
    lam: torch.Tensor
    partner: torch.Tensor
    mixed: bool


class LaMix(nn.Module):
    """LaMix's schedule (section 2.4): mini-batches of original inputs ``x_ii`` and averaged inputs ``x_ij`` alternate.

    Per step: ``x_in, batch = lamix(x, y)`` (calls 1, 3, 5, ... give the original batch, calls 2, 4, ... the
    averaged one of eq. 4 with ``lam ~ Beta(alpha, alpha)`` per sample, eq. 2), then
    ``loss = lamix.loss(*head(backbone(x_in)), batch)`` (eq. 10-11). Both kinds of batch are trained with the target
    ``beta y~ + (1 - beta) p``; for an original batch ``y~ = y_i``. ``alpha = 1`` (lam uniform on [0, 1]) and
    ``beta = 0.5`` are the paper's settings (section 3.1). In eval mode ``forward`` returns the original batch and
    the schedule does not advance. ``mixed=True/False`` overrides the schedule for one call. ``backend`` goes to both
    the input averaging and the loss: "cpu", "triton", "reference" or None (the loss has no CUDA C++ kernel, so "cuda"
    raises here, at construction).
    """

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, detach_target: bool = False,
                 backend: str | None = None):
        super().__init__()
        self.alpha = _checks.check_positive_finite("alpha", alpha)
        self.beta = _checks.check_real("beta", beta, 0.0, 1.0)
        self.detach_target = _checks.check_bool("detach_target", detach_target)
        self.backend = _backend.check_name(backend, lamix_ops.BACKENDS)
        self.steps = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
                mixed: bool | None = None) -> tuple[torch.Tensor, LaMixBatch]:
        _checks.check_batch_input("x", x)
        _checks.check_generator(generator, x.device)
        _checks.check_tensor("y", y)
        if y.dim() == 0 or y.size(0) != x.size(0):
            raise ValueError(f"y must have the batch size of x ({x.size(0)}), got shape {tuple(y.shape)}")
        if mixed is None:
            mixed = self.training and self.steps % 2 == 1
        if self.training:
            self.steps += 1
        if not mixed:
            partner = torch.arange(x.size(0), device=x.device)
            return x, LaMixBatch(y, torch.ones(x.size(0), device=x.device), partner, False)
        x_avg, perm = lamix_api.lamix_inputs(x, generator=generator, backend=self.backend)
        lam = _random.sample_beta(self.alpha, x.size(0), x.device, generator)
        return x_avg, LaMixBatch(y, lam, perm, True)

    def loss(self, logits: torch.Tensor, target_logits: torch.Tensor, batch: LaMixBatch,
             reduction: str = "mean") -> torch.Tensor:
        return lamix_api.lamix_loss(logits, target_logits, batch.y, batch.lam, batch.partner, beta=self.beta,
                                    detach_target=self.detach_target, reduction=reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, detach_target={self.detach_target}"
