"""Device-side random draws shared by every method: one Beta sampler."""

from __future__ import annotations

import torch

from fastmix import _checks


def sample_beta(alpha: float, count: int, device, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``count`` draws of Beta(alpha, alpha) on ``device`` from ``generator``, in ``dtype``.

    ``lam = G1 / (G1 + G2)`` with ``G ~ Gamma(alpha)``, computed as ``sigmoid(log G1 - log G2)`` where
    ``log G = log Gamma(alpha + 1) + log(U) / alpha``: exact, and it does not underflow for small alpha (a plain
    Gamma(alpha) draw clamps to the smallest normal number, so the ratio of two such draws is 0.5, not 0 or 1).
    """
    alpha = _checks.check_positive_finite("alpha", alpha)
    shape = torch.full((2, count), alpha + 1.0, dtype=torch.float64, device=device)
    log_gamma = torch._standard_gamma(shape, generator=generator).log()
    uniform = 1.0 - torch.rand((2, count), dtype=torch.float64, device=device, generator=generator)  # in (0, 1]
    log_gamma = log_gamma + uniform.log() / alpha
    return torch.sigmoid(log_gamma[0] - log_gamma[1]).to(dtype)
