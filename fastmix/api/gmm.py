"""BalanceMix's per-label-group two-component GMMs (paper 001_*, eq. 6-8): one batched EM fit for all groups.

The convention is the noisy-label literature's scikit-learn call, ``GaussianMixture(n_components=2, max_iter=10,
tol=1e-2, reg_covar=5e-4)`` on min-max-normalised losses per group, clean = the smaller-mean component; given the
same initial parameters, the fit matches scikit-learn's (shared/reference/sklearn_gmm.md).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist

from fastmix import _backend, _checks
from fastmix.ops import gmm as gmm_ops
from fastmix.reference import gmm as reference

_REDUCE_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}


class GMM2Fit(NamedTuple):
    """The fit of every group, all float64 on the values' device; parameters are in the normalised space.

    ``log_likelihood[g, t]`` is the mean log-likelihood of iteration t (before its M-step, as scikit-learn's lower
    bound), NaN after the group stopped. ``min``/``max`` are the normalisation used: ``x' = (x - min) / (max - min)``
    (``x' = x - min`` where ``max == min``). A ``degenerate`` group (fewer than 2 values, or all equal) is not fitted:
    weights (1, 0), means (0, 0), variances ``reg_covar``, log_likelihood NaN, n_iter 0, converged False, and
    ``gmm_posterior`` gives its values 1.0 (nothing separates them, so none is deemed noisy).
    """

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    log_likelihood: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor
    degenerate: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor


def label_groups(labels: torch.Tensor) -> torch.Tensor:
    """(N, K) 0/1 labels -> (N, K) int64 groups ``2 k + label``: one group per (class k, label 0/1), 2K in all."""
    _checks.check_tensor("labels", labels)
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape (N, K), got shape {tuple(labels.shape)}")
    if labels.dtype == torch.bool:
        binary = labels.long()
    else:
        binary = labels.round().long()
        if labels.device.type == "cpu" and not torch.compiler.is_compiling() and bool((labels != binary).any()):
            raise ValueError("labels must hold only 0 and 1")
    classes = torch.arange(labels.size(1), device=labels.device)
    return 2 * classes + binary.clamp(0, 1)


def _check_values(values, groups) -> None:
    """Types, shapes and devices; the data (group range, finite values) is checked by ``gmm_ops.check_data``."""
    _checks.check_tensor("values", values)
    _checks.check_tensor("groups", groups)
    if not values.is_floating_point():
        raise TypeError(f"values must be a floating-point tensor, got dtype {values.dtype}")
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise TypeError(f"groups must be an integer tensor, got dtype {groups.dtype}")
    if groups.shape != values.shape:
        raise ValueError(f"groups must have the shape of values {tuple(values.shape)}, got {tuple(groups.shape)}")
    if groups.device != values.device:
        raise ValueError(f"groups is on {groups.device} but values is on {values.device}")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _explicit_init(init, n_groups: int, device: torch.device):
    params = (init.weights, init.means, init.variances) if isinstance(init, GMM2Fit) else tuple(init)
    if len(params) != 3:
        raise ValueError("init must be 'quantile', 'kmeans', a GMM2Fit or a (weights, means, variances) tuple")
    out = []
    for name, param in zip(("weights", "means", "variances"), params):
        _checks.check_tensor(f"init {name}", param)
        if param.shape != (n_groups, 2):
            raise ValueError(f"init {name} must have shape ({n_groups}, 2), got {tuple(param.shape)}")
        out.append(param.to(device=device, dtype=torch.float64))
    return tuple(out)


def _reducer(process_group):
    if process_group is None:
        return reference.no_reduce

    def reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]), group=process_group)
        return tensor

    return reduce


def fit_gmm2(values: torch.Tensor, groups: torch.Tensor, *, n_groups: int, max_iter: int = 10, tol: float = 1e-2,
             reg_covar: float = 5e-4, normalize: str = "minmax", init="quantile",
             generator: torch.Generator | None = None, backend: str | None = None, nan_policy: str = "raise",
             process_group=None) -> GMM2Fit:
    """Fits a two-component 1-D GMM by EM to the values of each group (paper 001_*, eq. 6-7), all groups at once.

    Args:
        values: float32/float64 tensor of any shape (e.g. per-label BCE losses (N, K)); accumulation is float64.
        groups: int tensor of values' shape with entries in ``[0, n_groups)`` (see ``label_groups``).
        n_groups: the number of groups G; groups with no values are allowed (flagged degenerate).
        max_iter, tol, reg_covar: scikit-learn's meaning: at most ``max_iter`` EM iterations, stop when the mean
            log-likelihood changes by less than ``tol``, ``reg_covar`` added to each variance.
        normalize: "minmax" (per group, as DivideMix/BalanceMix do) or "none".
        init: "quantile" (deterministic: the two halves of a median split), "kmeans" (k-means++ seeded Lloyd from
            ``generator``, scikit-learn's default recipe), or explicit initial params in the normalised space: a
            GMM2Fit or a (weights, means, variances) tuple of (G, 2) tensors.
        backend: "cpu" (C++), "reference", "triton", "cuda", or None for the default.
        nan_policy: "raise" rejects NaN/inf values; "omit" ignores them.
        process_group: a torch.distributed group over which the values are sharded: counts, min/max, the init's
            sums and each iteration's E-step statistics (one (G, 7) all-reduce) are summed over the ranks, so every
            rank gets the fit of the full data. The passes run the "cpu" kernels on CPU tensors and the reference's
            on GPU tensors.

    The kernels ("cpu", "triton", "cuda") take each iteration's statistics in one pass, around the current means
    (algebraically scikit-learn's two-pass variance; the reference does two passes). ``eps`` in ``nk + 10 eps`` is
    that of the values' dtype, as in scikit-learn.

    Returns:
        GMM2Fit. The fit is not differentiable.
    """
    n_groups = _check_int("n_groups", n_groups, 1)
    max_iter = _check_int("max_iter", max_iter, 1)
    tol = _checks.check_real("tol", tol, 0.0, math.inf)
    reg_covar = _checks.check_positive_finite("reg_covar", reg_covar)
    if normalize not in ("minmax", "none"):
        raise ValueError(f"normalize must be 'minmax' or 'none', got {normalize!r}")
    if not (isinstance(init, (GMM2Fit, tuple, list)) or init in ("quantile", "kmeans")):
        raise ValueError(f"init must be 'quantile', 'kmeans', a GMM2Fit or a params tuple, got {init!r}")
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    _check_values(values, groups)
    _checks.check_generator(generator, values.device)
    name = _backend.resolve(backend, values.device, cuda_default=gmm_ops.CUDA_DEFAULT, cpu_default="cpu",
                            supported=gmm_ops.BACKENDS)
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    eps = torch.finfo(values.dtype).eps
    sorted_values, offsets, count, lo, hi = gmm_ops.gmm2_segments(
        values.reshape(-1).contiguous(), groups.reshape(-1).long().contiguous(), n_groups, nan_policy == "omit", name)
    reduce = _reducer(process_group)
    if process_group is not None:
        count, lo, hi = reference.reduce_range(count, lo, hi, reduce)
    degenerate = (count < 2) | (hi == lo)
    if normalize == "none":
        lo, hi = torch.zeros_like(lo), torch.ones_like(hi)
    scale = reference.range_scale(lo, hi)
    if init == "quantile":
        params = gmm_ops.quantile_init(sorted_values, offsets, count, lo, scale, reg_covar, eps, name, reduce)
    elif init == "kmeans":
        params = gmm_ops.kmeans_init(sorted_values, offsets, count, lo, scale, reg_covar, eps, generator, name, reduce)
    else:
        params = _explicit_init(init, n_groups, values.device)
    if process_group is not None:
        def step(weights, means, variances):  # this rank's E-step statistics, summed over the ranks
            stats = gmm_ops.gmm2_estep(sorted_values, offsets, lo, scale, weights, means, variances, name)
            return reference.m_step_from_statistics(reduce(stats, "sum"), means, count, reg_covar, eps)

        fitted = reference.em_loop(step, *params, n_groups=n_groups, max_iter=max_iter, tol=tol)
    else:
        fitted = gmm_ops.gmm2_em(sorted_values, offsets, count, lo, scale, *params, max_iter, tol, reg_covar, eps,
                                 name)
    weights, means, variances, log_likelihood, n_iter, converged = fitted
    flag = degenerate[:, None]
    return GMM2Fit(
        weights=torch.where(flag, torch.tensor([1.0, 0.0], dtype=torch.float64, device=values.device), weights),
        means=torch.where(flag, 0.0, means),
        variances=torch.where(flag, reg_covar, variances),
        log_likelihood=torch.where(flag, math.nan, log_likelihood),
        n_iter=torch.where(degenerate, 0, n_iter),
        converged=converged & ~degenerate,
        degenerate=degenerate,
        min=lo,
        max=hi,
    )


def gmm_posterior(values: torch.Tensor, groups: torch.Tensor, fit: GMM2Fit) -> torch.Tensor:
    """Eq. 8: the probability that each value belongs to its group's small-mean ("clean") component.

    Values are normalised with the fit's per-group min/max, so new values (e.g. the next batch's losses) work too.
    Returns a tensor of values' shape in [0, 1] (float64 for float64 values, else float32); degenerate groups give
    1.0. NaN/inf values give NaN.
    """
    _checks.check_tensor("values", values)
    _checks.check_tensor("groups", groups)
    if not isinstance(fit, GMM2Fit):
        raise TypeError(f"fit must be a GMM2Fit, got {type(fit).__name__}")
    _check_values(values, groups)
    gmm_ops.check_data(values, groups.long(), fit.weights.size(0), omit_nonfinite=True)
    flat_groups = groups.reshape(-1).long()
    x = reference.normalise(values.reshape(-1), flat_groups, fit.min, reference.range_scale(fit.min, fit.max))
    probability = reference.posterior(x, flat_groups, fit.weights, fit.means, fit.variances)
    out_dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
    return probability.view(values.shape).to(out_dtype)
