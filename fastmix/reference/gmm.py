"""Batched two-component 1-D Gaussian-mixture EM in plain PyTorch (BalanceMix paper, eq. 6-8): the oracle of the GMM
kernels and the "reference" backend of their passes.

One EM per group, all groups at once with ``index_add``; the semantics are scikit-learn's
``GaussianMixture(n_components=2)``: E-step on the current parameters, the lower bound ``lb`` = mean log-likelihood
before the M-step, ``nk = sum r + 10 eps``, the variance in a second pass around the NEW mean with ``reg_covar``
added after dividing, convergence when ``|lb - prev| < tol`` (strict; the first iteration never converges) with the
converging iteration's M-step applied. A converged group stops updating. Everything accumulates in float64.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

LOG_2PI = math.log(2.0 * math.pi)


def group_range(values: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, n_groups: int):
    """Per-group (count, min, max) over the valid values; an empty group has min = max = 0. ``groups``: int32 or
    int64."""
    x = values.double()
    groups = groups.long()  # scatter_reduce takes int64 indices only
    count = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, groups, valid.double())
    lo = torch.full((n_groups,), math.inf, dtype=torch.float64, device=x.device)
    hi = torch.full((n_groups,), -math.inf, dtype=torch.float64, device=x.device)
    lo = lo.scatter_reduce(0, groups, torch.where(valid, x, math.inf), "amin")
    hi = hi.scatter_reduce(0, groups, torch.where(valid, x, -math.inf), "amax")
    empty = count == 0
    return count, torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)


def segments(values: torch.Tensor, groups: torch.Tensor, n_groups: int):
    """The finite values in group order by a stable sort, zeros after them in place of the omitted ones: (sorted
    values, offsets (G + 1,) int64, and per group the count, min and max, see ``group_range``)."""
    valid = torch.isfinite(values)
    keys = torch.where(valid, groups, n_groups)  # omitted values sort after every group
    sorted_keys, order = torch.sort(keys, stable=True)
    offsets = torch.searchsorted(sorted_keys, torch.arange(n_groups + 1, device=values.device))
    count, lo, hi = group_range(values, groups.clamp(0, n_groups - 1), valid, n_groups)
    return torch.where(sorted_keys < n_groups, values[order], 0.0), offsets, count, lo, hi


def normalise(values: torch.Tensor, groups: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-group normalisation in float64, computed as ``(x - lo) * (1 / scale)`` by every backend (a multiplication
    in the kernels' hot loops; within an ulp of the division), so their inits' split decisions agree bit for bit."""
    return (values.double() - lo[groups]) * scale.reciprocal()[groups]


def split_statistics(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, n_groups: int, split: torch.Tensor,
                     shifts: torch.Tensor) -> torch.Tensor:
    """The hard split's statistics (``estep_statistics``' layout, no log-likelihood): x >= split is component 1."""
    upper = x >= split[groups]
    resp = torch.stack([(~upper & valid).double(), (upper & valid).double()], dim=1)
    return _group_statistics(torch.zeros_like(x), resp, x[:, None] - shifts[groups], groups, n_groups)


def race_statistics(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, n_groups: int, keys: torch.Tensor,
                    centre: torch.Tensor | None) -> torch.Tensor:
    """One shard's part of a race: per group the smallest finite key, the sum of the values holding it and their
    count, (G, 3); with ``centre`` each key is divided by ``(x - centre[g])^2``."""
    if centre is not None:
        keys = keys / (x - centre[groups]).square()
    keys = torch.where(valid, keys, math.inf)
    best = torch.full((n_groups,), math.inf, dtype=x.dtype, device=x.device).scatter_reduce(0, groups, keys, "amin")
    won = (keys == best[groups]) & torch.isfinite(keys)
    sums = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, groups, torch.where(won, x, 0.0))
    hits = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, groups, won.double())
    return torch.stack([best, sums, hits], dim=1)


def log_weighted_densities(x: torch.Tensor, groups: torch.Tensor, weights, means, variances) -> torch.Tensor:
    """(N, 2) ``log w_k + log N(x; mu_k, var_k)`` in scikit-learn's form (precision Cholesky ``1/sqrt(var)``)."""
    precision_chol = variances.rsqrt()
    p = precision_chol[groups]
    mu = means[groups]
    log_density = -0.5 * (LOG_2PI + (x[:, None] * p - mu * p).square()) + p.log()
    return log_density + weights.log()[groups]


def responsibilities(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, weights, means, variances):
    """The E-step: (log p(x) (n,), responsibilities (n, 2), 0 where not valid)."""
    weighted = log_weighted_densities(x, groups, weights, means, variances)
    log_prob = torch.logsumexp(weighted, dim=1)
    return log_prob, (weighted - log_prob[:, None]).exp() * valid[:, None]


def m_step(x: torch.Tensor, groups: torch.Tensor, resp: torch.Tensor, n_groups: int, reg_covar: float, eps: float):
    """scikit-learn's M-step: (``nk = sum r + 10 eps``, means, two-pass variances + ``reg_covar``), all (G, 2)."""
    zeros = torch.zeros(n_groups, 2, dtype=torch.float64, device=x.device)
    nk = zeros.index_add(0, groups, resp) + 10 * eps
    means = zeros.index_add(0, groups, resp * x[:, None]) / nk
    spread = zeros.index_add(0, groups, resp * (x[:, None] - means[groups]).square())
    return nk, means, spread / nk + reg_covar


def em_loop(step: Callable, weights, means, variances, *, n_groups: int, max_iter: int, tol: float):
    """scikit-learn's EM iterations from the given (G, 2) params, ``step(weights, means, variances)`` returning
    the lower bound (G,) of the current params and the M-step's (weights, means, variances).

    Returns (weights, means, variances, log_likelihood (G, max_iter), n_iter, converged): ``log_likelihood[g, t]``
    is iteration t's lower bound, NaN after the group stopped. A fixed loop of ``max_iter`` masked iterations: no
    host sync.
    """
    weights, means, variances = weights.double(), means.double(), variances.double()
    device = weights.device
    log_likelihood = torch.full((n_groups, max_iter), math.nan, dtype=torch.float64, device=device)
    previous = torch.full((n_groups,), -math.inf, dtype=torch.float64, device=device)
    active = torch.ones(n_groups, dtype=torch.bool, device=device)
    n_iter = torch.zeros(n_groups, dtype=torch.int64, device=device)
    for iteration in range(max_iter):
        lower_bound, new_weights, new_means, new_variances = step(weights, means, variances)
        update = active[:, None]
        weights = torch.where(update, new_weights, weights)
        means = torch.where(update, new_means, means)
        variances = torch.where(update, new_variances, variances)
        log_likelihood[:, iteration] = torch.where(active, lower_bound, math.nan)
        n_iter += active.long()
        converged_now = active & ((lower_bound - previous).abs() < tol)
        previous = lower_bound
        active = active & ~converged_now
    return weights, means, variances, log_likelihood, n_iter, ~active


def fit_em(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, count: torch.Tensor, weights, means,
           variances, *, n_groups: int, max_iter: int, tol: float, reg_covar: float, eps: float):
    """EM from the given (G, 2) params with scikit-learn's two-pass M-step (see em_loop for the outputs)."""

    def step(weights, means, variances):
        log_prob, resp = responsibilities(x, groups, valid, weights, means, variances)
        total = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(
            0, groups, torch.where(valid, log_prob, 0.0))
        nk, new_means, new_variances = m_step(x, groups, resp, n_groups, reg_covar, eps)
        return total / count.clamp(min=1), nk / nk.sum(1, keepdim=True), new_means, new_variances

    return em_loop(step, weights, means, variances, n_groups=n_groups, max_iter=max_iter, tol=tol)


def estep_statistics(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, n_groups: int, weights, means,
                     variances) -> torch.Tensor:
    """One E-step's statistics per group, (G, 7) float64, taken around the given means ``mu_k`` (the layout of the
    kernels, csrc/gmm.h): sum log p(x), sum r_k, sum r_k (x - mu_k), sum r_k (x - mu_k)^2."""
    log_prob, resp = responsibilities(x, groups, valid, weights, means, variances)
    return _group_statistics(torch.where(valid, log_prob, 0.0), resp, x[:, None] - means[groups], groups, n_groups)


def _group_statistics(log_prob, resp, d, groups, n_groups: int) -> torch.Tensor:
    """Per group: sum log_prob, sum r_k, sum r_k d_k, sum r_k d_k^2 (G, 7), from per-value (n,), (n, 2), (n, 2)."""
    per_value = torch.cat([log_prob[:, None], resp, resp * d, resp * d.square()], dim=1)
    return torch.zeros(n_groups, 7, dtype=torch.float64, device=d.device).index_add_(0, groups, per_value)


def posterior(x: torch.Tensor, groups: torch.Tensor, weights, means, variances) -> torch.Tensor:
    """Eq. 8: the responsibility of the smaller-mean ("clean") component of each value's group, in float64."""
    weighted = log_weighted_densities(x, groups, weights, means, variances)
    resp = (weighted - torch.logsumexp(weighted, dim=1, keepdim=True)).exp()
    clean = (means[:, 1] < means[:, 0]).long()[groups]
    return resp.gather(1, clean[:, None]).squeeze(1)
