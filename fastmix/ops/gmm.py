"""Two-component GMM custom ops (BalanceMix paper, eq. 6-8): ``fastmix::gmm2_segments``, ``gmm2_split_statistics``
and ``gmm2_race`` (the inits' passes; ``gmm2_kmeans``, all of the k-means init's passes in one call on "cpu" and
"triton"), ``gmm2_em``, ``gmm2_estep``, and ``gmm2_fit`` (on "triton": the whole fit after the grouping, one
persistent launch after zeroing its work queue's counters).

The fit is not differentiable (no autograd formula): its outputs are statistics of the data, used as constants by
BalanceMix. ``gmm2_segments`` validates the data and puts the finite values in group order once per fit (group g
at ``sorted_values[offsets[g]:offsets[g + 1]]``, zeros after ``offsets[G]`` in place of the omitted values); the
init's passes, the EM and the single E-step (for the distributed fit) read those segments and normalise on
the fly with the per-group ``lo`` and ``scale``. Backends: "cpu" (C++, OpenMP, vectorised passes), "reference",
and on CUDA tensors "triton" and "cuda" (the native EM, one persistent launch per fit; its grouping, init and
passes run the Triton kernels). The CUDA default is Triton: neither GPU kernel has been timed (nor the CUDA one
run) on a GPU yet, and only Triton fuses the whole fit into one launch. Every (G, 2) parameter tensor handed to a
kernel is a contiguous float64 copy."""

from __future__ import annotations

import torch

from fastmix import _checks, _native
from fastmix._dtypes import compute_dtype
from fastmix.reference import gmm as reference

BACKENDS = ("cpu", "reference", "triton", "cuda")
CUDA_DEFAULT = "triton"
KMEANS_BACKENDS = ("cpu", "triton", "cuda")
GPU_BACKENDS = ("triton", "cuda")
POSTERIOR_BACKENDS = ("reference", "triton")
"""Backends whose grouping, init and passes run the Triton kernels."""
MEDIAN_BISECTIONS = 8
"""The median split is the upper edge of the step of a 2^8 = 256-step grid of the group's range holding the median."""


def _float64(n_groups: int, device, columns: int = 0) -> torch.Tensor:
    return torch.empty((n_groups, columns) if columns else (n_groups,), dtype=torch.float64, device=device)


def _float64_buffer(tensor: torch.Tensor | None, numel: int) -> _native.Buffer | int:
    """A kernel's float64 argument of ``numel`` elements: a contiguous float64 copy of ``tensor`` (the tensor itself
    when it already is one), or 0, the kernel's null pointer, for None."""
    if tensor is None:
        return 0
    return _native.Buffer(tensor.to(torch.float64).contiguous(), torch.float64, numel)


def _float64_contiguous(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(torch.float64).contiguous()


def _segment_arguments(sorted_values: torch.Tensor, offsets: torch.Tensor, n_groups: int) -> tuple:
    """The segments as every native GMM kernel takes them: values, offsets (G + 1,), dtype code, G."""
    return (sorted_values.contiguous(), _native.Buffer(offsets.contiguous(), torch.int64, n_groups + 1),
            _native.DTYPE_CODES[sorted_values.dtype], n_groups)


NONFINITE_MESSAGE = "values contains NaN or infinity; pass nan_policy='omit' to ignore those values"


def check_data(values: torch.Tensor, groups: torch.Tensor, n_groups: int, omit_nonfinite: bool) -> None:
    """Groups in range and (unless omitted) finite values, checked on the device (gmm2_segments_cpu does both in
    its first pass)."""
    if values.numel() == 0:
        return
    smallest, largest = torch.aminmax(groups)
    _checks.check_on_device((smallest >= 0) & (largest < n_groups),
                            f"groups holds indices outside [0, n_groups={n_groups})")
    if not omit_nonfinite:
        _checks.check_on_device(torch.isfinite(values).all(), NONFINITE_MESSAGE)


GROUP_DTYPES = (torch.int32, torch.int64)
"""The group-id dtypes the kernels read as they are."""


def _group_is_int32(groups: torch.Tensor) -> bool:
    if groups.dtype not in GROUP_DTYPES:
        raise TypeError(f"groups must be int32 or int64, got dtype {groups.dtype}")
    return groups.dtype == torch.int32


@torch.library.custom_op("fastmix::gmm2_segments", mutates_args=())
def gmm2_segments(values: torch.Tensor, groups: torch.Tensor, n_groups: int, omit_nonfinite: bool, backend: str
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checks 1-D values/int32 or int64 groups, then returns (sorted_values, offsets (G + 1,) int64, and per group the
    float64 count, min and max of its finite values; an empty group has min = max = 0). The sort is stable."""
    n = values.numel()
    if backend == "reference":
        check_data(values, groups, n_groups, omit_nonfinite)
        return reference.segments(values, groups, n_groups)
    sorted_values = torch.empty(n, dtype=values.dtype, device=values.device)
    offsets = torch.empty(n_groups + 1, dtype=torch.int64, device=values.device)
    count, lo, hi = (_float64(n_groups, values.device) for _ in range(3))
    if backend in GPU_BACKENDS:
        from fastmix.kernels.triton import gmm as triton_gmm

        ok = torch.empty(2, dtype=torch.bool, device=values.device)
        triton_gmm.gmm2_segments(values.contiguous(), groups.contiguous(), n_groups, omit_nonfinite, sorted_values,
                                 offsets, count, lo, hi, ok)
        _checks.check_on_device(ok[0], f"groups holds indices outside [0, n_groups={n_groups})")
        if not omit_nonfinite:
            _checks.check_on_device(ok[1], NONFINITE_MESSAGE)
        return sorted_values, offsets, count, lo, hi
    _native.launch("gmm2_segments_cpu", values.device, values.contiguous(), _native.Buffer(groups.contiguous(), None, n),
                   _group_is_int32(groups), n, _native.DTYPE_CODES[values.dtype], n_groups,
                   omit_nonfinite, _native.Buffer(sorted_values, values.dtype, n), offsets, count, lo, hi)
    return sorted_values, offsets, count, lo, hi


@gmm2_segments.register_fake
def _(values, groups, n_groups, omit_nonfinite, backend):
    offsets = values.new_empty((n_groups + 1,), dtype=torch.int64)
    return (torch.empty_like(values), offsets, *(_float64(n_groups, values.device) for _ in range(3)))


def normalised_segments(sorted_values: torch.Tensor, offsets: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor):
    """The reference's view of segments: (x, groups, valid), all (n,): each position's normalised value (0 where
    none is held), group and whether it holds a value."""
    positions = torch.arange(sorted_values.numel(), device=sorted_values.device)
    groups = torch.searchsorted(offsets[1:].contiguous(), positions, right=True).clamp(max=offsets.numel() - 2)
    valid = positions < offsets[-1]
    return torch.where(valid, reference.normalise(sorted_values, groups, lo, scale), 0.0), groups, valid


def _segment_pass(backend: str, reference_pass, native_pass: str, columns: int, sorted_values: torch.Tensor,
                  offsets: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor,
                  *extra: tuple[torch.Tensor | None, int]):
    """One pass over every group's segment, (G, columns) float64: the C++ kernel ``native_pass`` on "cpu", its
    Triton twin (``native_pass`` without "_cpu") on the GPU backends, ``reference_pass(x, groups, valid, n_groups,
    *tensors)`` on the reference's view. ``extra``: (tensor or None, the element count the kernel reads from it)
    pairs."""
    n_groups = lo.size(0)
    if backend == "reference":
        return reference_pass(*normalised_segments(sorted_values, offsets, lo, scale), n_groups,
                              *(tensor for tensor, _ in extra))
    out = _float64(n_groups, sorted_values.device, columns)
    if backend in GPU_BACKENDS:
        from fastmix.kernels.triton import gmm as triton_gmm

        if n_groups:
            getattr(triton_gmm, native_pass.removesuffix("_cpu"))(
                sorted_values.contiguous(), offsets.contiguous(), *(_float64_contiguous(t) for t in (lo, scale)),
                *(_float64_contiguous(tensor) for tensor, _ in extra), out)
        return out
    _native.launch(native_pass, sorted_values.device, *_segment_arguments(sorted_values, offsets, n_groups),
                   _float64_buffer(lo, n_groups), _float64_buffer(scale, n_groups),
                   *(_float64_buffer(tensor, numel) for tensor, numel in extra), out)
    return out


@torch.library.custom_op("fastmix::gmm2_split_statistics", mutates_args=())
def gmm2_split_statistics(sorted_values: torch.Tensor, offsets: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor,
                          split: torch.Tensor, shifts: torch.Tensor, backend: str) -> torch.Tensor:
    """The statistics (G, 7) of every group's hard split at ``split`` around ``shifts`` (reference.split_statistics)."""
    n_groups = lo.size(0)
    return _segment_pass(backend, reference.split_statistics, "gmm2_split_statistics_cpu", 7, sorted_values, offsets,
                         lo, scale, (split, n_groups), (shifts, 2 * n_groups))


@gmm2_split_statistics.register_fake
def _(sorted_values, offsets, lo, scale, split, shifts, backend):
    return _float64(lo.size(0), sorted_values.device, 7)


@torch.library.custom_op("fastmix::gmm2_race", mutates_args=())
def gmm2_race(sorted_values: torch.Tensor, offsets: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor,
              keys: torch.Tensor, centre: torch.Tensor | None, backend: str) -> torch.Tensor:
    """The k-means++ seeding's race over every group's segment (reference.race_statistics), (G, 3) float64; keys
    (n,) float64 at the segments' positions."""
    return _segment_pass(backend, reference.race_statistics, "gmm2_race_cpu", 3, sorted_values, offsets, lo, scale,
                         (keys, sorted_values.numel()), (centre, lo.size(0)))


@gmm2_race.register_fake
def _(sorted_values, offsets, lo, scale, keys, centre, backend):
    return _float64(lo.size(0), sorted_values.device, 3)


@torch.library.custom_op("fastmix::gmm2_kmeans", mutates_args=())
def gmm2_kmeans(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
                scale: torch.Tensor, low: torch.Tensor, high: torch.Tensor, seeds: torch.Tensor | None, steps: int,
                backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-means inits' passes in one call on "cpu" (C++, one group per thread with its segment in cache) and
    the GPU backends (Triton, one program per group): from ``seeds`` (G, 2), or without them from the means of the halves of the
    median split over the 2^MEDIAN_BISECTIONS-step grid of [low, high] (G,), at most ``steps`` Lloyd steps
    (stopping once the centres stop moving or a step's split leaves as many values below it as the previous step's:
    the same partition), then the final split's statistics. Returns (centres (G, 2),
    statistics (G, 7)); fastmix/methods/gmm.py composes the same from ``gmm2_split_statistics`` passes on the other
    backends."""
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"gmm2_kmeans has no {backend!r} backend")
    n_groups = count.size(0)
    centres = _float64(n_groups, sorted_values.device, 2)
    stats = _float64(n_groups, sorted_values.device, 7)
    if n_groups == 0:
        return centres, stats
    if backend in GPU_BACKENDS:
        from fastmix.kernels.triton import gmm as triton_gmm

        inputs = [t.contiguous() for t in (sorted_values, offsets, count, lo, scale, low, high)]
        triton_gmm.gmm2_kmeans(*inputs, _float64_contiguous(seeds), steps, MEDIAN_BISECTIONS, centres, stats)
        return centres, stats
    _native.launch("gmm2_kmeans_cpu", sorted_values.device, *_segment_arguments(sorted_values, offsets, n_groups),
                   *(_float64_buffer(t, n_groups) for t in (count, lo, scale, low, high)),
                   _float64_buffer(seeds, 2 * n_groups), MEDIAN_BISECTIONS, steps, centres, stats)
    return centres, stats


@gmm2_kmeans.register_fake
def _(sorted_values, offsets, count, lo, scale, low, high, seeds, steps, backend):
    return _float64(count.size(0), sorted_values.device, 2), _float64(count.size(0), sorted_values.device, 7)


@torch.library.custom_op("fastmix::gmm2_estep", mutates_args=())
def gmm2_estep(sorted_values: torch.Tensor, offsets: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor,
               weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, backend: str) -> torch.Tensor:
    """One E-step's statistics of every group's segment, (G, 7) float64 around ``means``
    (reference.estep_statistics); the distributed fit all-reduces them. "cpu" runs the C++ pass, the other
    backends the reference."""
    return _segment_pass(backend, reference.estep_statistics, "gmm2_estep_cpu", 7, sorted_values, offsets, lo, scale,
                         *((param, 2 * lo.size(0)) for param in (weights, means, variances)))


@gmm2_estep.register_fake
def _(sorted_values, offsets, lo, scale, weights, means, variances, backend):
    return _float64(lo.size(0), sorted_values.device, 7)


@torch.library.custom_op("fastmix::gmm2_em", mutates_args=())
def gmm2_em(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
            scale: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, max_iter: int,
            tol: float, reg_covar: float, eps: float, backend: str
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM on every group's segment from the given (G, 2) float64 params.

    Returns (weights, means, variances) (G, 2) float64, log_likelihood (G, max_iter) float64 (NaN after a group
    stopped), n_iter (G,) int64 and converged (G,) bool.
    """
    n_groups = count.size(0)
    if backend == "reference":
        x, groups, valid = normalised_segments(sorted_values, offsets, lo, scale)
        return reference.fit_em(x, groups, valid, count, weights, means, variances, n_groups=n_groups,
                                max_iter=max_iter, tol=tol, reg_covar=reg_covar, eps=eps)
    device = sorted_values.device
    out_weights, out_means, out_variances = (p.to(torch.float64).clone(memory_format=torch.contiguous_format)
                                             for p in (weights, means, variances))
    sorted_values, offsets, count, lo, scale = (t.contiguous() for t in (sorted_values, offsets, count, lo, scale))
    if backend == "triton":  # the kernel writes every output element
        from fastmix.kernels.triton import gmm as triton_gmm

        log_likelihood = torch.empty((n_groups, max_iter), dtype=torch.float64, device=device)
        n_iter = torch.empty(n_groups, dtype=torch.int64, device=device)
        converged = torch.empty(n_groups, dtype=torch.uint8, device=device)
        triton_gmm.gmm2_em(sorted_values, offsets, count, lo, scale, out_weights, out_means, out_variances,
                           log_likelihood, n_iter, converged, max_iter, tol, reg_covar, eps)
        return out_weights, out_means, out_variances, log_likelihood, n_iter, converged.bool()
    log_likelihood = torch.full((n_groups, max_iter), float("nan"), dtype=torch.float64, device=device)
    n_iter = torch.zeros(n_groups, dtype=torch.int64, device=device)
    converged = torch.zeros(n_groups, dtype=torch.uint8, device=device)
    if sorted_values.numel() == 0:  # every group is empty: nothing to launch
        return out_weights, out_means, out_variances, log_likelihood, n_iter, converged.bool()
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"gmm2_em has no {backend!r} backend")
    _native.launch(f"gmm2_em_{backend}", device, *_segment_arguments(sorted_values, offsets, n_groups),
                   *(_float64_buffer(t, n_groups) for t in (count, lo, scale)),
                   *(_native.Buffer(p, torch.float64, 2 * n_groups) for p in (out_weights, out_means, out_variances)),
                   log_likelihood, n_iter, converged, max_iter, tol, reg_covar, eps)
    return out_weights, out_means, out_variances, log_likelihood, n_iter, converged.bool()


@gmm2_em.register_fake
def _(sorted_values, offsets, count, lo, scale, weights, means, variances, max_iter, tol, reg_covar, eps, backend):
    n_groups = count.size(0)
    torch._check(weights.shape == (n_groups, 2) and means.shape == (n_groups, 2) and variances.shape == (n_groups, 2))
    pair = weights.new_empty((n_groups, 2), dtype=torch.float64)
    return (pair, pair.clone(), pair.clone(), weights.new_empty((n_groups, max_iter), dtype=torch.float64),
            weights.new_empty((n_groups,), dtype=torch.int64), weights.new_empty((n_groups,), dtype=torch.bool))


@torch.library.custom_op("fastmix::gmm2_fit", mutates_args=())
def gmm2_fit(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
             hi: torch.Tensor, minmax: bool, kmeans: bool, max_iter: int, steps: int, tol: float, reg_covar: float,
             eps: float, max_magnitude: float, backend: str
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                        torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole fit after ``gmm2_segments`` in one persistent launch ("triton"; each group's passes split into
    chunks over all its programs, after one memset of the work queue's counters): per group the normalisation
    ("minmax" if ``minmax`` else "none", unusable ranges beyond ``max_magnitude``), the "kmeans" (``kmeans``, at
    most ``steps`` Lloyd steps) or "quantile" init, the EM and the degenerate placeholders. Returns the fields of a GMM2Fit:
    (weights, means, variances (G, 2), log_likelihood (G, max_iter), n_iter, converged, degenerate, min, max)."""
    if backend != "triton":
        raise ValueError(f"gmm2_fit has no {backend!r} backend")
    from fastmix.kernels.triton import gmm as triton_gmm

    outputs = _fit_outputs(count, max_iter)
    triton_gmm.gmm2_fit(sorted_values.contiguous(), offsets.contiguous(), count.contiguous(), lo.contiguous(),
                        hi.contiguous(), outputs, minmax, kmeans, max_iter, steps, MEDIAN_BISECTIONS, tol, reg_covar,
                        eps, max_magnitude)
    return outputs


def _fit_outputs(count: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, ...]:
    n_groups, device = count.size(0), count.device
    pairs = tuple(_float64(n_groups, device, 2) for _ in range(3))
    return (*pairs, _float64(n_groups, device, max_iter), torch.empty(n_groups, dtype=torch.int64, device=device),
            torch.empty(n_groups, dtype=torch.bool, device=device),
            torch.empty(n_groups, dtype=torch.bool, device=device), _float64(n_groups, device),
            _float64(n_groups, device))


@gmm2_fit.register_fake
def _(sorted_values, offsets, count, lo, hi, minmax, kmeans, max_iter, steps, tol, reg_covar, eps, max_magnitude,
      backend):
    return _fit_outputs(count, max_iter)


@torch.library.custom_op("fastmix::gmm2_posterior", mutates_args=())
def gmm2_posterior(values: torch.Tensor, groups: torch.Tensor, weights: torch.Tensor, means: torch.Tensor,
                   variances: torch.Tensor, fit_min: torch.Tensor, fit_max: torch.Tensor, degenerate: torch.Tensor,
                   backend: str) -> torch.Tensor:
    """Eq. 8 on "triton" (one kernel, then the group-range check: 3 launches): the clean component's posterior of
    each of the 1-D ``values`` in its group's fit, in ``compute_dtype(values.dtype)``."""
    if backend != "triton":
        raise ValueError(f"gmm2_posterior has no {backend!r} backend")
    from fastmix.kernels.triton import gmm as triton_gmm

    out = torch.empty(values.shape, dtype=compute_dtype(values.dtype), device=values.device)
    fit = tuple(t.to(torch.float64).contiguous() for t in (weights, means, variances, fit_min, fit_max))
    ok = triton_gmm.gmm2_posterior(values.contiguous(), groups.contiguous(), (*fit, degenerate.contiguous()), out)
    _checks.check_on_device(ok.all(), f"groups holds indices outside [0, n_groups={weights.size(0)})")
    return out


@gmm2_posterior.register_fake
def _(values, groups, weights, means, variances, fit_min, fit_max, degenerate, backend):
    return torch.empty(values.shape, dtype=compute_dtype(values.dtype), device=values.device)
