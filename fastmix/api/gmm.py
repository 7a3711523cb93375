"""BalanceMix's per-label-group two-component GMMs (BalanceMix paper, eq. 6-8): one batched EM fit for all groups.

The convention is the noisy-label literature's scikit-learn call (DivideMix's, which BalanceMix follows),
``GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)`` on min-max-normalised losses per group,
clean = the smaller-mean component. Given the same initial parameters the fit matches scikit-learn's; the default
init is a deterministic k-means, so the default fit is scikit-learn's default fit up to the spread of the random
seeds of scikit-learn's k-means.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist

from fastmix import _backend, _checks
from fastmix._dtypes import compute_dtype
from fastmix.methods import gmm as fit_steps
from fastmix.ops import gmm as gmm_ops

_REDUCE_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}
INITS = ("kmeans", "kmeans++", "quantile")
NORMALIZATIONS = ("minmax", "none")
NAN_POLICIES = ("raise", "omit")
FUSED_INITS = ("kmeans", "quantile")
"""Inits the "triton" backend runs, with the EM, in one launch (``gmm_ops.gmm2_fit``) when no process group is given."""


class GMM2Fit(NamedTuple):
    """The fit of every group, all float64 on the values' device; parameters are in the normalised space.

    ``log_likelihood[g, t]`` is the mean log-likelihood of iteration t (before its M-step, as scikit-learn's lower
    bound), NaN after the group stopped. ``min``/``max`` are the normalisation used: ``x' = (x - min) / (max - min)``
    (``x' = x - min`` where ``max == min``; min 0 and max 1 with ``normalize="none"``). A ``degenerate`` group
    (fewer than 2 values, all equal, or a range float64 cannot normalise, see ``fit_gmm2``) is not fitted:
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
    """(N, K) 0/1 labels -> (N, K) int32 groups ``2 k + label``: one group per (class k, label 0/1), 2K in all
    (int32: half the bytes of int64 for the fit to read, and like int64 it indexes tensors). Labels other than 0 and
    1 are rejected (on CUDA tensors by a device-side assert)."""
    _checks.check_tensor("labels", labels)
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape (N, K), got shape {tuple(labels.shape)}")
    if labels.is_complex():
        raise TypeError(f"labels must be 0/1 labels of a real dtype, got dtype {labels.dtype}")
    if labels.dtype != torch.bool:
        _checks.check_on_device(((labels == 0) | (labels == 1)).all(), "labels must hold only 0 and 1")
    classes = torch.arange(labels.size(1), dtype=torch.int32, device=labels.device)
    return 2 * classes + labels.to(torch.int32)


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


def _group_ids(groups: torch.Tensor) -> torch.Tensor:
    """1-D group ids as the kernels read them: int32 and int64 ids as they are, narrower integer dtypes converted to
    int32 and wider unsigned ones (uint32, uint64) to int64, so every id keeps its value."""
    flat = groups.reshape(-1)
    if flat.dtype in gmm_ops.GROUP_DTYPES:
        return flat
    return flat.to(torch.int32 if flat.dtype.itemsize < 4 else torch.int64)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _explicit_init(init, n_groups: int, device: torch.device):
    """Explicit initial (weights, means, variances), checked as scikit-learn checks them: each (G, 2) floating, any
    strides, finite; variances > 0; weights >= 0 summing to 1 per group (within 1e-8, 1e-6 for float32 or lower).
    Returns contiguous float64 copies on ``device``; the values are checked on the device (no host sync)."""
    params = (init.weights, init.means, init.variances) if isinstance(init, GMM2Fit) else tuple(init)
    if len(params) != 3:
        raise ValueError("init must be 'kmeans', 'kmeans++', 'quantile', a GMM2Fit or a (weights, means, variances) "
                         f"tuple, got a sequence of {len(params)}")
    out = []
    for name, param in zip(("weights", "means", "variances"), params):
        _checks.check_tensor(f"init {name}", param)
        if not param.is_floating_point():
            raise TypeError(f"init {name} must be a floating-point tensor, got dtype {param.dtype}")
        if param.shape != (n_groups, 2):
            raise ValueError(f"init {name} must have shape ({n_groups}, 2), got {tuple(param.shape)}")
        out.append(param.to(device=device, dtype=torch.float64, memory_format=torch.contiguous_format, copy=True))
    weights, means, variances = out
    tolerance = 1e-8 if params[0].dtype == torch.float64 else 1e-6
    _checks.check_on_device(torch.isfinite(torch.stack(out)).all(), "init weights, means and variances must be finite")
    _checks.check_on_device((variances > 0).all(), "init variances must be > 0")
    _checks.check_on_device((weights >= 0).all() & ((weights.sum(1) - 1).abs() <= tolerance).all(),
                            f"init weights must be >= 0 and sum to 1 in every group (within {tolerance:g})")
    return weights, means, variances


def _reducer(process_group):
    if process_group is None:
        return fit_steps.no_reduce

    def reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]), group=process_group)
        return tensor

    return reduce


def _check_ranks_agree(process_group, values: torch.Tensor, groups: torch.Tensor, n_groups: int, options: dict,
                       omit_nonfinite: bool) -> None:
    """Before the first all-reduce of (G,)-sized statistics: every rank of ``process_group`` must fit the same
    problem (``options``: n_groups, dtype and the fit's options), and a rank's bad data (groups out of range, NaN/inf
    under nan_policy="raise") raises the same ValueError on every rank instead of leaving the others waiting. Two
    small all-reduces (min and max) and one host read per fit."""
    bad_groups = bad_values = torch.zeros((), dtype=torch.bool, device=values.device)
    if values.numel():
        bad_groups = ((groups < 0) | (groups >= n_groups)).any()
        if not omit_nonfinite:
            bad_values = ~torch.isfinite(values).all()
    options_here = torch.tensor([float(v) for v in options.values()], dtype=torch.float64).to(values.device)
    local = torch.cat([options_here, torch.stack([bad_groups, bad_values]).double()])
    low, high = local.clone(), local.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=process_group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=process_group)
    low, high = low.tolist(), high.tolist()
    differing = [name for name, a, b in zip(options, low, high) if a != b]
    if differing:
        raise ValueError(f"the ranks of process_group disagree on {', '.join(differing)}: every rank must call "
                         "fit_gmm2 with the same n_groups, values dtype and options")
    if high[-2]:
        raise ValueError(f"groups holds indices outside [0, n_groups={n_groups}) on a rank of process_group")
    if high[-1]:
        raise ValueError("values contains NaN or infinity on a rank of process_group; pass nan_policy='omit' to "
                         "ignore those values")


def _initial_params(init, segments: fit_steps.Segments, lo: torch.Tensor, hi: torch.Tensor, reg_covar: float,
                    eps: float, generator: torch.Generator | None):
    """(weights, means, variances) (G, 2) of the named init, or the explicit ones with dead groups re-seeded."""
    if init == "quantile":
        return fit_steps.quantile_init(segments, lo, hi, reg_covar, eps)
    if init == "kmeans++":
        seeds = fit_steps.kmeans_plus_plus_seeds(segments, generator)
        return fit_steps.kmeans_init(segments, lo, hi, seeds, reg_covar, eps)
    if init == "kmeans":
        return fit_steps.kmeans_init(segments, lo, hi, None, reg_covar, eps)
    params = _explicit_init(init, lo.size(0), lo.device)
    # A component of weight 0 never takes responsibility for a value again (a previous fit's placeholder of a
    # degenerate group is one): such groups start from the default init instead. On CPU tensors without ranks (whose
    # inits could differ) the default init's passes are skipped when no group needs them (known without a sync).
    dead = (params[0] == 0).any(1)
    local = dead.device.type == "cpu" and segments.reduce is fit_steps.no_reduce
    if local and not torch.compiler.is_compiling() and not bool(dead.any()):
        return params
    fresh = _initial_params("kmeans", segments, lo, hi, reg_covar, eps, generator)
    return tuple(torch.where(dead[:, None], new, old) for new, old in zip(fresh, params))


def fit_gmm2(values: torch.Tensor, groups: torch.Tensor, *, n_groups: int, max_iter: int = 10, tol: float = 1e-2,
             reg_covar: float = 5e-4, normalize: str = "minmax", init="kmeans",
             generator: torch.Generator | None = None, backend: str | None = None, nan_policy: str = "raise",
             process_group=None) -> GMM2Fit:
    """Fits a two-component 1-D GMM by EM to the values of each group (BalanceMix paper, eq. 6-7), all groups at once.

    Args:
        values: float32/float64 tensor of any shape (e.g. per-label BCE losses (N, K)); accumulation is float64.
        groups: integer tensor of values' shape with entries in ``[0, n_groups)`` (see ``label_groups``); int32 and
            int64 ids are read as they are (int32 is the cheaper), other integer dtypes converted once.
        n_groups: the number of groups G; groups with no values are allowed (flagged degenerate).
        max_iter, tol, reg_covar: scikit-learn's meaning: at most ``max_iter`` EM iterations, stop when the mean
            log-likelihood changes by less than ``tol``, ``reg_covar`` added to each variance.
        normalize: "minmax" (per group, as DivideMix/BalanceMix do) or "none" (values of any range; the inits work
            on each group's range).
        init: "kmeans" (the default; deterministic): scikit-learn's default init, k-means then one M-step of its
            two clusters, with the k-means seeded by the means of the two halves of the median split instead of
            scikit-learn's random k-means++ seeds, then up to 30 Lloyd steps (a group stops at its fixed point;
            on "cpu" and the GPU backends one call runs them all). With DivideMix's settings EM stops 2-4 iterations after
            its start, so the init decides the clean set: this one gives scikit-learn's default fit up to the
            spread of scikit-learn's own seeds. "kmeans++": the same with k-means++ seeds drawn
            from ``generator``. "quantile": the median split's two halves (no k-means; EM then stays near a 50/50
            split). Or explicit initial params in the normalised space: a GMM2Fit (a warm start) or a (weights,
            means, variances) tuple of (G, 2) floating tensors, checked as scikit-learn checks them (finite,
            variances > 0, weights >= 0 summing to 1); a group with a zero weight (e.g. a previous fit's
            degenerate placeholder) starts from the "kmeans" init instead, as that component could never recover.
        generator: the random source of init="kmeans++" (nothing else is random).
        backend: "cpu" (C++), "reference", "triton", "cuda", or None for the default. On "triton" a fit with
            init "kmeans" or "quantile" and no process group is 7 launches and no host sync on CUDA tensors: the
            grouping (a stable counting sort in three kernels, two device-side asserts), the zeroing of a work
            queue's counters and one persistent kernel for the rest of the fit, each group's values split into
            chunks over all the programs.
        nan_policy: "raise" rejects NaN/inf values; "omit" ignores them.
        process_group: a torch.distributed group over which the values are sharded: counts, min/max, the init's
            passes and each iteration's E-step statistics (one (G, 7) all-reduce) are summed over the ranks, so every
            rank gets the fit of the full data. First the ranks check (one host read) that they fit the same problem
            and that no rank's data is rejected: a mismatch or a rank's bad data raises the same ValueError on every
            rank. The passes run the "cpu" kernels on CPU tensors and the Triton ones on GPU tensors.

    The kernels ("cpu", "triton", "cuda") take each iteration's statistics in one pass, around the current means
    (algebraically scikit-learn's two-pass variance; the reference does two passes). The Triton E-step computes each
    float32 value's terms in float32 (float64 sums per group), float64 values in float64. ``eps`` in ``nk + 10 eps`` is
    that of the values' dtype, as in scikit-learn. A float64 group whose range float64 cannot normalise (max - min
    overflows, or its reciprocal does; with normalize="none", magnitudes above 2^500) is flagged degenerate, the
    same on every backend.

    Returns:
        GMM2Fit. The fit is not differentiable.
    """
    n_groups = _check_int("n_groups", n_groups, 1)
    max_iter = _check_int("max_iter", max_iter, 1)
    tol = _checks.check_real("tol", tol, 0.0, math.inf)
    reg_covar = _checks.check_positive_finite("reg_covar", reg_covar)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be 'minmax' or 'none', got {normalize!r}")
    if not (isinstance(init, (GMM2Fit, tuple, list)) or init in INITS):
        raise ValueError(f"init must be 'kmeans', 'kmeans++', 'quantile', a GMM2Fit or a params tuple, got {init!r}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    _check_values(values, groups)
    _checks.check_generator(generator, values.device)
    name = _backend.resolve(backend, values.device, cuda_default=gmm_ops.CUDA_DEFAULT, cpu_default="cpu",
                            supported=gmm_ops.BACKENDS)
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    eps = torch.finfo(values.dtype).eps
    flat_values, flat_groups = values.reshape(-1).contiguous(), _group_ids(groups).contiguous()
    reduce = _reducer(process_group)
    if process_group is not None:
        init_code = INITS.index(init) if isinstance(init, str) else len(INITS)
        options = {"n_groups": n_groups, "values dtype": values.dtype == torch.float64, "max_iter": max_iter,
                   "tol": tol, "reg_covar": reg_covar, "normalize": NORMALIZATIONS.index(normalize),
                   "init": init_code, "nan_policy": NAN_POLICIES.index(nan_policy)}
        _check_ranks_agree(process_group, flat_values, flat_groups, n_groups, options, nan_policy == "omit")
    sorted_values, offsets, count, lo, hi = gmm_ops.gmm2_segments(flat_values, flat_groups, n_groups,
                                                                  nan_policy == "omit", name)
    if name == "triton" and process_group is None and isinstance(init, str) and init in FUSED_INITS:
        return GMM2Fit(*gmm_ops.gmm2_fit(sorted_values, offsets, count, lo, hi, normalize == "minmax", init == "kmeans",
                                         max_iter, fit_steps.LLOYD_STEPS, tol, reg_covar, eps, fit_steps.MAX_MAGNITUDE,
                                         name))
    if process_group is not None:
        count, lo, hi = fit_steps.reduce_range(count, lo, hi, reduce)
    shift, scale, unusable = fit_steps.normalisation(lo, hi, normalize, values.dtype)
    degenerate = (count < 2) | (hi == lo) | unusable
    segments = fit_steps.Segments(sorted_values, offsets, count, shift, scale, name, reduce)
    params = _initial_params(init, segments, lo, hi, reg_covar, eps, generator)
    if process_group is not None:
        fitted = fit_steps.distributed_em(segments, *params, max_iter=max_iter, tol=tol, reg_covar=reg_covar, eps=eps)
    else:
        fitted = gmm_ops.gmm2_em(sorted_values, offsets, count, shift, scale, *params, max_iter, tol, reg_covar, eps,
                                 name)
    weights, means, variances, log_likelihood, n_iter, converged = fitted
    flag = degenerate[:, None]
    if normalize == "none":
        lo, hi = torch.zeros_like(lo), torch.ones_like(hi)
    return GMM2Fit(
        weights=torch.where(flag, torch.eye(1, 2, dtype=torch.float64, device=values.device), weights),
        means=torch.where(flag, 0.0, means),
        variances=torch.where(flag, reg_covar, variances),
        log_likelihood=torch.where(flag, math.nan, log_likelihood),
        n_iter=torch.where(degenerate, 0, n_iter),
        converged=converged & ~degenerate,
        degenerate=degenerate,
        min=lo,
        max=hi,
    )


def gmm_posterior(values: torch.Tensor, groups: torch.Tensor, fit: GMM2Fit, *, backend: str | None = None
                  ) -> torch.Tensor:
    """Eq. 8: the probability that each value belongs to its group's small-mean ("clean") component.

    Values are normalised with the fit's per-group min/max, so new values (e.g. the next batch's losses) work too.
    Returns a tensor of values' shape in [0, 1] (float64 for float64 values, else float32); degenerate groups give
    1.0. NaN/inf values give NaN. backend: "reference" (PyTorch; the default on CPU tensors), "triton" (one kernel
    and the group-range check: 3 launches, the default on CUDA tensors), or None for the default.
    """
    _checks.check_tensor("values", values)
    _checks.check_tensor("groups", groups)
    if not isinstance(fit, GMM2Fit):
        raise TypeError(f"fit must be a GMM2Fit, got {type(fit).__name__}")
    _check_values(values, groups)
    name = _backend.resolve(backend, values.device, cuda_default="triton", cpu_default="reference",
                            supported=gmm_ops.POSTERIOR_BACKENDS)
    flat_values, flat_groups = values.reshape(-1), _group_ids(groups)
    if name == "triton":
        return gmm_ops.gmm2_posterior(flat_values, flat_groups, fit.weights, fit.means, fit.variances, fit.min,
                                      fit.max, fit.degenerate, name).view(values.shape)
    gmm_ops.check_data(flat_values, flat_groups, fit.weights.size(0), omit_nonfinite=True)
    probability = torch.where(fit.degenerate[flat_groups] & torch.isfinite(flat_values), 1.0,
                              _clean_posterior(flat_values, flat_groups, fit))
    out_dtype = compute_dtype(values.dtype)
    return probability.view(values.shape).to(out_dtype)


def _clean_posterior(values: torch.Tensor, groups: torch.Tensor, fit: GMM2Fit) -> torch.Tensor:
    """Eq. 8 for two components as one sigmoid, float64: ``p_c = sigmoid(log w_c N(x; c) - log w_n N(x; n))`` for the
    clean (smaller-mean) component c and the other one n, with ``x = (value - min) / range`` in the value's group.

    The normalisation and both components are folded into one (G, 7) table per group, gathered once per value.
    """
    clean = (fit.means[:, 1] < fit.means[:, 0]).long()
    order = torch.stack([clean, 1 - clean], dim=1)
    means, variances = fit.means.gather(1, order), fit.variances.gather(1, order)
    precisions = variances.rsqrt()
    log_scales = fit.weights.gather(1, order).log() + precisions.log()
    log_odds = log_scales[:, 0] - log_scales[:, 1]
    inverse_range = fit_steps.range_scale(fit.min, fit.max).reciprocal()
    table = torch.cat([fit.min[:, None], inverse_range[:, None], log_odds[:, None], means, precisions], dim=1)[groups]
    x = (values.double() - table[:, 0]) * table[:, 1]
    distances = ((x[:, None] - table[:, 3:5]) * table[:, 5:7]).square()
    return torch.sigmoid(table[:, 2] + 0.5 * (distances[:, 1] - distances[:, 0]))
