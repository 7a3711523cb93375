"""Device-side random draws shared by every method: one Beta sampler, and the seed of the in-kernel sampler."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastmix import _checks


def sample_betas(alphas: Sequence[float], count: int, device, generator: torch.Generator | None = None,
                 uniform: torch.Tensor | None = None) -> torch.Tensor:
    """(len(alphas), count) float64 draws, row r from Beta(alphas[r], alphas[r]), with one Gamma draw for all rows.

    ``lam = G1 / (G1 + G2)`` with ``G ~ Gamma(alpha)``, computed as ``sigmoid(log G1 - log G2)`` where
    ``log G = log Gamma(alpha + 1) + log(U) / alpha``: exact, and it does not underflow for small alpha (a plain
    Gamma(alpha) draw clamps to the smallest normal number, so the ratio of two such draws is 0.5, not 0 or 1).
    ``uniform``: the (len(alphas), 2, count) float64 uniforms in [0, 1) for ``U``, when the caller takes them from
    its own single ``torch.rand``; drawn here otherwise.
    """
    alphas = [_checks.check_positive_finite("alpha", alpha) for alpha in alphas]
    shape = torch.full((len(alphas), 2, count), alphas[0] + 1.0, dtype=torch.float64, device=device)
    for row, alpha in enumerate(alphas[1:], start=1):
        if alpha != alphas[0]:
            shape[row].fill_(alpha + 1.0)
    log_gamma = torch._standard_gamma(shape, generator=generator).log()
    if uniform is None:
        uniform = torch.rand(shape.shape, dtype=torch.float64, device=device, generator=generator)
    log_gamma = torch.addcdiv(log_gamma, (1.0 - uniform).log(), shape - 1.0)  # 1 - U lies in (0, 1]
    return torch.sigmoid(log_gamma[:, 0] - log_gamma[:, 1])


def sample_beta(alpha: float, count: int, device, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``count`` draws of Beta(alpha, alpha) on ``device`` from ``generator``, in ``dtype`` (see ``sample_betas``)."""
    return sample_betas((alpha,), count, device, generator)[0].to(dtype)


def draw_seed(generator: torch.Generator | None, device) -> torch.Tensor:
    """A (1,) int64 seed on ``device`` for the in-kernel sampler (fastmix/kernels/triton/random.py): one
    ``torch.randint`` over all 64 bits, drawn on the device (no host sync; a CUDA-graph replay draws a new one)."""
    return torch.randint(-2**63, 2**63 - 1, (1,), dtype=torch.int64, device=device, generator=generator)
