"""The host-side algorithm of BalanceMix's batched GMM fit (BalanceMix paper, eq. 6-7) between the kernel passes.

Every step here works on (G,)-sized per-group tensors; the passes over the values are the custom ops of
``fastmix.ops.gmm``, each one's (G, columns) statistics summed over the ranks of a process group by ``reduce(tensor,
op)`` (op "sum", "min" or "max"; the identity without one). Statistics are laid out as csrc/gmm.h's: per group
``sum log p(x)``, ``sum r_k``, ``sum r_k (x - c_k)``, ``sum r_k (x - c_k)^2`` around given centres ``c_k``.

- ``normalisation``: the per-group shift and scale every pass applies (min-max, or none) and which groups' ranges
  are unusable in float64.
- The inits, all in the fit's (normalised) space: ``median_split`` (the 50/50 split, found by bisection over a
  256-step grid of the group's range: O(G) memory), ``kmeans_centres`` (Lloyd steps, each a hard split at the
  centres' midpoint), ``kmeans_plus_plus_seeds`` (races keyed by the generator), and the initial M-step.
- ``distributed_em``: scikit-learn's EM iterations with each E-step's statistics all-reduced.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from fastmix.ops import gmm as gmm_ops

Reduce = Callable[[torch.Tensor, str], torch.Tensor]
LLOYD_STEPS = 30
"""k-means' Lloyd steps: a fixed count (no host sync); a group whose split stopped moving stays at its fixed point."""
MAX_MAGNITUDE = 2.0 ** 500
"""The largest magnitude of a normalised value whose squares and products in the passes stay finite in float64."""


def no_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    return tensor


def reduce_range(count: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, reduce: Reduce):
    """Per-group (count, min, max) of the shards' union from each shard's; an empty group has min = max = 0."""
    held = count > 0
    count = reduce(count.clone(), "sum")
    lo = reduce(torch.where(held, lo, math.inf), "min")
    hi = reduce(torch.where(held, hi, -math.inf), "max")
    empty = count == 0
    return count, torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)


def range_scale(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``max - min``, or 1 where a group has a single distinct value (its values all normalise to 0)."""
    return torch.where(hi > lo, hi - lo, torch.ones_like(hi))


def normalisation(lo: torch.Tensor, hi: torch.Tensor, normalize: str, dtype: torch.dtype):
    """(shift, scale, unusable), each (G,): the passes fit ``x = (value - shift) / scale``.

    "minmax": shift = min, scale = max - min (1 where max == min). "none": shift 0, scale 1. ``unusable`` flags the
    groups whose range the values' ``dtype`` cannot normalise (max - min overflows float64, or its reciprocal
    exceeds the dtype's largest finite value: the float32 passes scale by it in float32, so a float32 group whose
    range is below 2^-128 counts) or, unnormalised, whose magnitude exceeds ``MAX_MAGNITUDE``; their values are
    divided by the largest magnitude (at least 1) instead, so no pass sees a NaN, and the fit flags them degenerate:
    every backend decides this from the same min and max.
    """
    magnitude = torch.maximum(lo.abs(), hi.abs())
    if normalize == "minmax":
        span = hi - lo
        unusable = ~torch.isfinite(span) | ((span > 0) & ~(span.reciprocal() <= torch.finfo(dtype).max))
        shift, scale = lo, range_scale(lo, hi)
    else:
        unusable = magnitude > MAX_MAGNITUDE
        shift, scale = torch.zeros_like(lo), torch.ones_like(hi)
    return torch.where(unusable, 0.0, shift), torch.where(unusable, magnitude.clamp(min=1), scale), unusable


class Segments:
    """The values in group order (``gmm_ops.gmm2_segments``) with the fit's normalisation, the backend and the
    reduction over ranks: the passes of the inits and the distributed EM."""

    def __init__(self, sorted_values, offsets, count, shift, scale, backend: str, reduce: Reduce):
        self.sorted_values, self.offsets, self.count = sorted_values, offsets, count
        self.shift, self.scale, self.backend, self.reduce = shift, scale, backend, reduce

    def split_statistics(self, split: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """All ranks' statistics (G, 7) of the hard split ``x >= split`` is component 1, around ``centres`` (G, 2)."""
        return self.reduce(gmm_ops.gmm2_split_statistics(self.sorted_values, self.offsets, self.shift, self.scale,
                                                         split, centres, self.backend), "sum")

    def race(self, keys: torch.Tensor, centre: torch.Tensor | None) -> torch.Tensor:
        """The winning value of each group's race over all ranks (see ``kmeans_plus_plus_seeds``)."""
        stats = gmm_ops.gmm2_race(self.sorted_values, self.offsets, self.shift, self.scale, keys, centre,
                                  self.backend)
        best = self.reduce(stats[:, 0].clone(), "min")
        held = stats[:, 0] == best
        sums = self.reduce(torch.where(held, stats[:, 1], 0.0), "sum")
        return sums / self.reduce(torch.where(held, stats[:, 2], 0.0), "sum").clamp(min=1)

    def estep(self, weights, means, variances) -> torch.Tensor:
        """All ranks' E-step statistics (G, 7) around ``means``."""
        return self.reduce(gmm_ops.gmm2_estep(self.sorted_values, self.offsets, self.shift, self.scale, weights,
                                              means, variances, self.backend), "sum")


def data_range(segments: Segments, lo: torch.Tensor, hi: torch.Tensor):
    """The groups' (min, max) in the fit's space."""
    return (lo - segments.shift) / segments.scale, (hi - segments.shift) / segments.scale


def median_split(segments: Segments, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The 50/50 split of each group, (G,): the smallest ``low + j/256 (high - low)``, j = 1..256, with at least half
    the group's values below it, by bisection over j (``gmm_ops.MEDIAN_BISECTIONS`` counting passes; no histogram)."""
    steps = 1 << gmm_ops.MEDIAN_BISECTIONS
    below, above = torch.zeros_like(low), torch.full_like(low, steps)  # j = 0 never qualifies, j = 256 always does
    for _ in range(gmm_ops.MEDIAN_BISECTIONS):
        middle = ((below + above) / 2).floor()
        split = low + middle / steps * (high - low)
        enough = segments.split_statistics(split, torch.stack([split, split], 1))[:, 1] >= segments.count / 2
        above = torch.where(enough, middle, above)
        below = torch.where(enough, below, middle)
    return low + above / steps * (high - low)


def component_update(stats: torch.Tensor, centres: torch.Tensor, reg_covar: float, eps: float):
    """(nk, means, variances) (G, 2) from statistics around ``centres``, as csrc/gmm.h's update_component:
    ``nk = sum r + 10 eps``, the mean, the variance re-centred on it plus ``reg_covar`` (scikit-learn's M-step)."""
    resp_sum, shifted_sum, squared_sum = stats[:, 1:3], stats[:, 3:5], stats[:, 5:7]
    nk = resp_sum + 10 * eps
    means = (shifted_sum + centres * resp_sum) / nk
    d = means - centres
    spread = squared_sum - 2 * d * shifted_sum + d.square() * resp_sum
    return nk, means, spread.clamp(min=0) / nk + reg_covar


def initial_m_step(stats: torch.Tensor, centres: torch.Tensor, count: torch.Tensor, reg_covar: float, eps: float):
    """scikit-learn's initial M-step of a hard split: (weights ``nk / n``, means, variances), all (G, 2)."""
    nk, means, variances = component_update(stats, centres, reg_covar, eps)
    return nk / count.clamp(min=1)[:, None], means, variances


def split_centres(split: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(G, 2): the midpoints of [low, split] and [split, high], around which a split's statistics are taken."""
    return torch.stack([0.5 * (low + split), 0.5 * (split + high)], dim=1)


def quantile_init(segments: Segments, lo, hi, reg_covar: float, eps: float):
    """The two halves of the median split and their initial M-step: (weights, means, variances) (G, 2)."""
    low, high = data_range(segments, lo, hi)
    split = median_split(segments, low, high)
    centres = split_centres(split, low, high)
    return initial_m_step(segments.split_statistics(split, centres), centres, segments.count, reg_covar, eps)


def lloyd_step(stats: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """New (G, 2) centres from a split's statistics around ``centres``: each side's mean, or the old centre where a
    side is empty."""
    sizes = stats[:, 1:3]
    return torch.where(sizes > 0, centres + stats[:, 3:5] / sizes.clamp(min=1), centres)


def kmeans_centres(segments: Segments, centres: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` Lloyd steps of 1-D 2-means from ordered (G, 2) centres: each value goes to the nearer centre,
    decided as ``x >= (c0 + c1) / 2`` (a tie goes up), then each centre moves to its cluster's mean."""
    for _ in range(steps):
        centres = lloyd_step(segments.split_statistics(centres.mean(1), centres), centres)
    return centres


def kmeans_init(segments: Segments, lo, hi, seeds: torch.Tensor | None, reg_covar: float, eps: float,
                steps: int = LLOYD_STEPS):
    """scikit-learn's k-means init: k-means from ``seeds`` (G, 2), or None for ``median_seeds``, then the initial
    M-step of the two clusters. Without ranks the "cpu" backend and the GPU ones run all its passes in one
    ``gmm2_kmeans`` call (which stops a group's Lloyd steps at their fixed point or once their partition repeats:
    the same centres, to their rounding)."""
    if segments.backend in gmm_ops.KMEANS_BACKENDS and segments.reduce is no_reduce:
        low, high = data_range(segments, lo, hi)
        centres, stats = gmm_ops.gmm2_kmeans(segments.sorted_values, segments.offsets, segments.count, segments.shift,
                                             segments.scale, low, high, seeds, steps, segments.backend)
    else:
        centres = kmeans_centres(segments, median_seeds(segments, lo, hi) if seeds is None else seeds, steps)
        stats = segments.split_statistics(centres.mean(1), centres)
    return initial_m_step(stats, centres, segments.count, reg_covar, eps)


def median_seeds(segments: Segments, lo, hi) -> torch.Tensor:
    """Deterministic k-means seeds (G, 2): the means of the two halves of the median split."""
    low, high = data_range(segments, lo, hi)
    split = median_split(segments, low, high)
    centres = split_centres(split, low, high)
    return lloyd_step(segments.split_statistics(split, centres), centres)


def kmeans_plus_plus_seeds(segments: Segments, generator: torch.Generator | None) -> torch.Tensor:
    """k-means++ seeding of two centres per group, (G, 2) ordered, by races on the device keyed by ``generator`` (no
    host sync): the first centre is the value with the smallest uniform key, a uniform choice; the second the value
    with the smallest ``E / d^2``, E exponential (``-log U``) and d the distance to the first, a choice with
    probability proportional to ``d^2``. Not bit-compatible with scikit-learn's KMeans (its RNG differs)."""
    keys = torch.empty(segments.sorted_values.numel(), dtype=torch.float64, device=segments.sorted_values.device)
    first = segments.race(keys.uniform_(generator=generator), None)
    second = segments.race(keys.uniform_(generator=generator).log_().neg_(), first)
    return torch.stack([torch.minimum(first, second), torch.maximum(first, second)], dim=1)


def distributed_em(segments: Segments, weights, means, variances, *, max_iter: int, tol: float, reg_covar: float,
                   eps: float):
    """scikit-learn's EM iterations from (G, 2) params, each E-step's statistics summed over the ranks; the outputs
    of ``gmm_ops.gmm2_em``. A fixed loop of ``max_iter`` masked iterations (no host sync): a group stops updating
    once ``|lb - previous lb| < tol``."""
    n_groups = weights.size(0)
    device = weights.device
    log_likelihood = torch.full((n_groups, max_iter), math.nan, dtype=torch.float64, device=device)
    previous = torch.full((n_groups,), -math.inf, dtype=torch.float64, device=device)
    active = torch.ones(n_groups, dtype=torch.bool, device=device)
    n_iter = torch.zeros(n_groups, dtype=torch.int64, device=device)
    for iteration in range(max_iter):
        stats = segments.estep(weights, means, variances)
        lower_bound = stats[:, 0] / segments.count.clamp(min=1)
        nk, new_means, new_variances = component_update(stats, means, reg_covar, eps)
        update = active[:, None]
        weights = torch.where(update, nk / nk.sum(1, keepdim=True), weights)
        means = torch.where(update, new_means, means)
        variances = torch.where(update, new_variances, variances)
        log_likelihood[:, iteration] = torch.where(active, lower_bound, math.nan)
        n_iter += active.long()
        active = active & ~((lower_bound - previous).abs() < tol)
        previous = lower_bound
    return weights, means, variances, log_likelihood, n_iter, ~active
