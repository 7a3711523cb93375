"""zeta-mixup in plain PyTorch (zeta-mixup paper, eq. 2-3 and Appendix B)."""

from __future__ import annotations

import torch

from fastmix.reference.mix import store


def p_series(batch: int, gamma: float, dtype: torch.dtype, device) -> torch.Tensor:
    """``n^-gamma / C`` for n = 1..batch, ``C = sum_n n^-gamma`` (eq. 3), computed in float64."""
    terms = torch.arange(1, batch + 1, dtype=torch.float64, device=device).pow(-gamma)
    return (terms / terms.sum()).to(dtype)


def zeta_weights(keys: torch.Tensor, gamma: float, self_dominant: bool) -> torch.Tensor:
    """W[p, i] = s_i^-gamma / C where s is the rank of keys[p, i] within row p (eq. 3).

    The ranks of i.i.d. uniform keys form a uniformly random permutation per row; ties (probability ~0)
    go to the lower column. With ``self_dominant`` the diagonal takes rank 1, so sample p dominates its row
    (Theorem 1) and the other ranks are a random permutation of the other samples.
    """
    if self_dominant:
        keys = keys.clone()
        keys.diagonal().fill_(float("-inf"))
    ranks = keys.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    return p_series(keys.size(0), gamma, keys.dtype, keys.device)[ranks]


def zeta_mix(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``W @ x`` over the batch dim (eq. 2) in the weights' precision, output in x's dtype (uint8 saturated and
    rounded half to even)."""
    return store(torch.tensordot(weights, x.to(weights.dtype), dims=([1], [0])), x.dtype)
