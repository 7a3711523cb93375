"""Batched two-component 1-D Gaussian-mixture EM in plain PyTorch (paper 001_*, eq. 6-8).

One EM per group, all groups at once with ``index_add``; the semantics are scikit-learn's
``GaussianMixture(n_components=2)`` (see shared/reference/sklearn_gmm.md): E-step on the current parameters, the
lower bound ``lb`` = mean log-likelihood before the M-step, ``nk = sum r + 10 eps``, the variance in a second pass
around the NEW mean with ``reg_covar`` added after dividing, convergence when ``|lb - prev| < tol`` (strict; the
first iteration never converges) with the converging iteration's M-step applied. A converged group stops updating.
Everything accumulates in float64. ``reduce(tensor, op)`` all-reduces with op "sum", "min" or "max" over the ranks
of a process group (the identity when there is none).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Reduce = Callable[[torch.Tensor, str], torch.Tensor]
LOG_2PI = math.log(2.0 * math.pi)
QUANTILE_BINS = 256


def no_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    return tensor


def group_range(values: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, n_groups: int, reduce: Reduce):
    """Per-group (count, min, max) over the valid values; an empty group has min = max = 0."""
    x = values.double()
    count = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, groups, valid.double())
    lo = torch.full((n_groups,), math.inf, dtype=torch.float64, device=x.device)
    hi = torch.full((n_groups,), -math.inf, dtype=torch.float64, device=x.device)
    lo = lo.scatter_reduce(0, groups, torch.where(valid, x, math.inf), "amin")
    hi = hi.scatter_reduce(0, groups, torch.where(valid, x, -math.inf), "amax")
    count, lo, hi = reduce(count, "sum"), reduce(lo, "min"), reduce(hi, "max")
    empty = count == 0
    return count, torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)


def range_scale(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``max - min``, or 1 where a group has a single distinct value (its values all normalise to 0)."""
    return torch.where(hi > lo, hi - lo, torch.ones_like(hi))


def normalise(values: torch.Tensor, groups: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation per group in float64, computed as ``(x - min) * (1 / (max - min))`` by every backend
    (a multiplication in the kernels' hot loops; within an ulp of the division), so their quantile-init bins agree
    bit for bit."""
    return (values.double() - lo[groups]) * scale.reciprocal()[groups]


def hard_split_params(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, upper: torch.Tensor,
                      count: torch.Tensor, n_groups: int, reg_covar: float, eps: float, reduce: Reduce):
    """scikit-learn's initial M-step from a hard assignment (``upper`` = component 1): weights ``nk / n``."""
    resp = torch.stack([(~upper & valid).double(), (upper & valid).double()], dim=1)
    nk, means, variances = m_step(x, groups, resp, n_groups, reg_covar, eps, reduce)
    return nk / count.clamp(min=1)[:, None], means, variances


def quantile_init(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, count: torch.Tensor, n_groups: int,
                  reg_covar: float, eps: float, reduce: Reduce):
    """Deterministic init: split each group at its median and take the initial M-step of the two halves.

    The median is located on a 256-bin histogram of the normalised values in [0, 1]: the split point is the upper
    edge of the bin where the cumulative count reaches half the group, so each half holds about half the values.
    """
    bins = (x * QUANTILE_BINS).floor().clamp(0, QUANTILE_BINS - 1).long()
    flat = groups * QUANTILE_BINS + bins
    histogram = torch.zeros(n_groups * QUANTILE_BINS, dtype=torch.float64, device=x.device)
    histogram = reduce(histogram.index_add_(0, flat, valid.double()), "sum").view(n_groups, QUANTILE_BINS)
    below_half = histogram.cumsum(1) < (count / 2)[:, None]
    split_edge = (below_half.sum(1) + 1).double() / QUANTILE_BINS
    return hard_split_params(x, groups, valid, x >= split_edge[groups], count, n_groups, reg_covar, eps, reduce)


def kmeans_init(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, count: torch.Tensor, n_groups: int,
                reg_covar: float, eps: float, generator: torch.Generator | None, reduce: Reduce, iterations: int = 20):
    """scikit-learn's default init in batched form: k-means++ seeding, Lloyd steps, then the initial M-step.

    Seeding picks the first centre uniformly and the second with probability proportional to the squared distance
    (exponential races on the device, keyed by ``generator``); ``iterations`` Lloyd steps follow (a fixed count, so
    no host sync). Not bit-compatible with scikit-learn's KMeans (its RNG differs); use explicit params for parity.
    """
    race = torch.empty_like(x).exponential_(generator=generator)

    def race_winner(keys: torch.Tensor) -> torch.Tensor:
        keys = torch.where(valid, keys, math.inf)
        best = torch.full((n_groups,), math.inf, dtype=x.dtype, device=x.device).scatter_reduce(0, groups, keys, "amin")
        best = reduce(best, "min")
        won = (keys == best[groups]) & torch.isfinite(keys)
        centre = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, groups, torch.where(won, x, 0.0))
        hits = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, groups, won.double())
        return reduce(centre, "sum") / reduce(hits, "sum").clamp(min=1)

    first = race_winner(race)
    second_race = torch.empty_like(x).exponential_(generator=generator)
    second = race_winner(second_race / (x - first[groups]).square())
    centres = torch.stack([torch.minimum(first, second), torch.maximum(first, second)], dim=1)
    for _ in range(iterations):
        upper = (x - centres[groups, 1]).abs() < (x - centres[groups, 0]).abs()
        resp = torch.stack([(~upper & valid).double(), (upper & valid).double()], dim=1)
        sums = reduce(torch.zeros(n_groups, 2, dtype=x.dtype, device=x.device).index_add_(0, groups, resp * x[:, None]), "sum")
        sizes = reduce(torch.zeros(n_groups, 2, dtype=x.dtype, device=x.device).index_add_(0, groups, resp), "sum")
        centres = torch.where(sizes > 0, sums / sizes.clamp(min=1), centres)
    upper = (x - centres[groups, 1]).abs() < (x - centres[groups, 0]).abs()
    return hard_split_params(x, groups, valid, upper, count, n_groups, reg_covar, eps, reduce)


def log_weighted_densities(x: torch.Tensor, groups: torch.Tensor, weights, means, variances) -> torch.Tensor:
    """(N, 2) ``log w_k + log N(x; mu_k, var_k)`` in scikit-learn's form (precision Cholesky ``1/sqrt(var)``)."""
    precision_chol = variances.rsqrt()
    p = precision_chol[groups]
    mu = means[groups]
    log_density = -0.5 * (LOG_2PI + (x[:, None] * p - mu * p).square()) + p.log()
    return log_density + weights.log()[groups]


def m_step(x: torch.Tensor, groups: torch.Tensor, resp: torch.Tensor, n_groups: int, reg_covar: float, eps: float,
           reduce: Reduce):
    """scikit-learn's M-step: (``nk = sum r + 10 eps``, means, two-pass variances + ``reg_covar``), all (G, 2)."""
    zeros = torch.zeros(n_groups, 2, dtype=torch.float64, device=x.device)
    nk = reduce(zeros.index_add(0, groups, resp), "sum") + 10 * eps
    means = reduce(zeros.index_add(0, groups, resp * x[:, None]), "sum") / nk
    spread = reduce(zeros.index_add(0, groups, resp * (x[:, None] - means[groups]).square()), "sum")
    return nk, means, spread / nk + reg_covar


def fit_em(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, count: torch.Tensor, weights, means,
           variances, *, n_groups: int, max_iter: int, tol: float, reg_covar: float, eps: float,
           reduce: Reduce = no_reduce):
    """EM from the given (G, 2) params: (weights, means, variances, log_likelihood (G, max_iter), n_iter, converged).

    ``log_likelihood[g, t]`` is iteration t's lower bound, NaN after the group stopped. A fixed loop of
    ``max_iter`` masked iterations: no host sync.
    """
    device = x.device
    weights, means, variances = weights.double(), means.double(), variances.double()
    log_likelihood = torch.full((n_groups, max_iter), math.nan, dtype=torch.float64, device=device)
    previous = torch.full((n_groups,), -math.inf, dtype=torch.float64, device=device)
    active = torch.ones(n_groups, dtype=torch.bool, device=device)
    n_iter = torch.zeros(n_groups, dtype=torch.int64, device=device)
    for iteration in range(max_iter):
        weighted = log_weighted_densities(x, groups, weights, means, variances)
        log_prob = torch.logsumexp(weighted, dim=1)
        resp = (weighted - log_prob[:, None]).exp() * valid[:, None]
        total = torch.zeros(n_groups, dtype=torch.float64, device=device).index_add_(0, groups, torch.where(valid, log_prob, 0.0))
        lower_bound = reduce(total, "sum") / count.clamp(min=1)
        nk, new_means, new_variances = m_step(x, groups, resp, n_groups, reg_covar, eps, reduce)
        update = active[:, None]
        weights = torch.where(update, nk / nk.sum(1, keepdim=True), weights)
        means = torch.where(update, new_means, means)
        variances = torch.where(update, new_variances, variances)
        log_likelihood[:, iteration] = torch.where(active, lower_bound, math.nan)
        n_iter += active.long()
        converged_now = active & ((lower_bound - previous).abs() < tol)
        previous = lower_bound
        active = active & ~converged_now
    return weights, means, variances, log_likelihood, n_iter, ~active


def posterior(x: torch.Tensor, groups: torch.Tensor, weights, means, variances) -> torch.Tensor:
    """Eq. 8: the responsibility of the smaller-mean ("clean") component of each value's group, in float64."""
    weighted = log_weighted_densities(x, groups, weights, means, variances)
    resp = (weighted - torch.logsumexp(weighted, dim=1, keepdim=True)).exp()
    clean = (means[:, 1] < means[:, 0]).long()[groups]
    return resp.gather(1, clean[:, None]).squeeze(1)
