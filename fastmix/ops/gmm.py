"""Two-component GMM custom ops (paper 001_*, eq. 6-8): ``fastmix::gmm2_range``, ``fastmix::gmm2_quantile_init``,
``fastmix::gmm2_em``.

The fit is not differentiable (no autograd formula): its outputs are statistics of the data, used as constants by
BalanceMix. The ops take raw values and normalise them on the fly with the per-group ``lo`` and ``scale``; values
that are not finite are skipped (the API has already rejected them unless nan_policy="omit"). Backends: "cpu" (C++,
OpenMP), "reference", and on CUDA tensors "triton" and "cuda" (one persistent launch per fit over the values sorted
by group); range and init run the reference (torch) there. The CUDA default is Triton: neither GPU kernel has been
timed (nor the CUDA one run) on a GPU yet.
"""

from __future__ import annotations

import torch

from fastmix import _native
from fastmix.reference import gmm as reference

BACKENDS = ("cpu", "reference", "triton", "cuda")
CUDA_DEFAULT = "triton"


def _float64(n_groups: int, device, columns: int = 0) -> torch.Tensor:
    return torch.empty((n_groups, columns) if columns else (n_groups,), dtype=torch.float64, device=device)


@torch.library.custom_op("fastmix::gmm2_range", mutates_args=())
def gmm2_range(values: torch.Tensor, groups: torch.Tensor, n_groups: int, backend: str
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group (count, min, max) of the finite values, float64 (G,); an empty group has min = max = 0."""
    if backend != "cpu":
        return reference.group_range(values, groups, torch.isfinite(values), n_groups, reference.no_reduce)
    count, lo, hi = (_float64(n_groups, values.device) for _ in range(3))
    _native.native().gmm2_range_cpu(values.data_ptr(), groups.data_ptr(), values.numel(),
                                    _native.DTYPE_CODES[values.dtype], n_groups, count.data_ptr(), lo.data_ptr(),
                                    hi.data_ptr())
    return count, lo, hi


@gmm2_range.register_fake
def _(values, groups, n_groups, backend):
    return tuple(_float64(n_groups, values.device) for _ in range(3))


@torch.library.custom_op("fastmix::gmm2_quantile_init", mutates_args=())
def gmm2_quantile_init(values: torch.Tensor, groups: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
                       scale: torch.Tensor, reg_covar: float, eps: float, backend: str
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The deterministic median-split init (reference.quantile_init): (weights, means, variances) (G, 2) float64."""
    n_groups = count.size(0)
    if backend != "cpu":
        valid = torch.isfinite(values)
        x = torch.where(valid, reference.normalise(values, groups, lo, scale), 0.0)
        return reference.quantile_init(x, groups, valid, count, n_groups, reg_covar, eps, reference.no_reduce)
    weights, means, variances = (_float64(n_groups, values.device, 2) for _ in range(3))
    _native.native().gmm2_quantile_init_cpu(values.data_ptr(), groups.data_ptr(), values.numel(),
                                            _native.DTYPE_CODES[values.dtype], n_groups, count.data_ptr(),
                                            lo.data_ptr(), scale.data_ptr(), reg_covar, eps, weights.data_ptr(),
                                            means.data_ptr(), variances.data_ptr())
    return weights, means, variances


@gmm2_quantile_init.register_fake
def _(values, groups, count, lo, scale, reg_covar, eps, backend):
    return tuple(_float64(count.size(0), values.device, 2) for _ in range(3))


def sort_by_group(values: torch.Tensor, groups: torch.Tensor, n_groups: int):
    """Values sorted by group (stable) and the (G + 1,) int64 segment offsets: group g is ``offsets[g]:offsets[g+1]``."""
    order = torch.argsort(groups, stable=True)
    offsets = torch.zeros(n_groups + 1, dtype=torch.int64, device=values.device)
    offsets[1:] = torch.bincount(groups, minlength=n_groups).cumsum(0)
    return values[order], offsets


@torch.library.custom_op("fastmix::gmm2_em", mutates_args=())
def gmm2_em(values: torch.Tensor, groups: torch.Tensor, count: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor,
            weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, max_iter: int, tol: float,
            reg_covar: float, eps: float, backend: str
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM on every group from the given (G, 2) float64 params.

    Returns (weights, means, variances) (G, 2) float64, log_likelihood (G, max_iter) float64 (NaN after a group
    stopped), n_iter (G,) int64 and converged (G,) bool.
    """
    n_groups = count.size(0)
    if backend == "reference":
        valid = torch.isfinite(values)
        x = torch.where(valid, reference.normalise(values, groups, lo, scale), 0.0)
        return reference.fit_em(x, groups, valid, count, weights, means, variances, n_groups=n_groups,
                                max_iter=max_iter, tol=tol, reg_covar=reg_covar, eps=eps)
    out_weights, out_means, out_variances = weights.clone(), means.clone(), variances.clone()
    log_likelihood = torch.full((n_groups, max_iter), float("nan"), dtype=torch.float64, device=values.device)
    n_iter = torch.zeros(n_groups, dtype=torch.int64, device=values.device)
    converged = torch.zeros(n_groups, dtype=torch.bool, device=values.device)
    if backend == "cpu":
        _native.native().gmm2_em_cpu(
            values.data_ptr(), groups.data_ptr(), values.numel(), _native.DTYPE_CODES[values.dtype], n_groups,
            count.data_ptr(), lo.data_ptr(), scale.data_ptr(), out_weights.data_ptr(), out_means.data_ptr(),
            out_variances.data_ptr(), log_likelihood.data_ptr(), n_iter.data_ptr(), converged.data_ptr(), max_iter,
            tol, reg_covar, eps)
    elif backend == "cuda":
        sorted_values, offsets = sort_by_group(values, groups, n_groups)
        converged_bytes = torch.zeros(n_groups, dtype=torch.uint8, device=values.device)
        with torch.cuda.device(values.device):
            _native.native().gmm2_em_cuda(
                sorted_values.data_ptr(), offsets.data_ptr(), _native.DTYPE_CODES[values.dtype], n_groups,
                count.data_ptr(), lo.data_ptr(), scale.data_ptr(), out_weights.data_ptr(), out_means.data_ptr(),
                out_variances.data_ptr(), log_likelihood.data_ptr(), n_iter.data_ptr(), converged_bytes.data_ptr(),
                max_iter, tol, reg_covar, eps, _native.stream_handle(values.device))
        converged = converged_bytes.bool()
    elif backend == "triton":
        from fastmix.kernels.triton import gmm as triton_gmm

        sorted_values, offsets = sort_by_group(values, groups, n_groups)
        converged_bytes = torch.zeros(n_groups, dtype=torch.int8, device=values.device)
        triton_gmm.gmm2_em(sorted_values, offsets, count, lo, scale, out_weights, out_means, out_variances,
                           log_likelihood, n_iter, converged_bytes, max_iter, tol, reg_covar, eps)
        converged = converged_bytes.bool()
    else:
        raise ValueError(f"gmm2_em has no {backend!r} backend")
    return out_weights, out_means, out_variances, log_likelihood, n_iter, converged


@gmm2_em.register_fake
def _(values, groups, count, lo, scale, weights, means, variances, max_iter, tol, reg_covar, eps, backend):
    n_groups = count.size(0)
    torch._check(weights.shape == (n_groups, 2) and means.shape == (n_groups, 2) and variances.shape == (n_groups, 2))
    pair = weights.new_empty((n_groups, 2), dtype=torch.float64)
    return (pair, pair.clone(), pair.clone(), weights.new_empty((n_groups, max_iter), dtype=torch.float64),
            weights.new_empty((n_groups,), dtype=torch.int64), weights.new_empty((n_groups,), dtype=torch.bool))
