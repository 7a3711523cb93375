"""Two-component GMM custom ops (BalanceMix paper, eq. 6-8): ``fastmix::gmm2_segments``, ``gmm2_split_statistics``
and ``gmm2_race`` (the inits' passes; ``gmm2_kmeans``, all of the k-means init's passes in one call on "cpu"),
``gmm2_em``, ``gmm2_estep``.

The fit is not differentiable (no autograd formula): its outputs are statistics of the data, used as constants by
BalanceMix. ``gmm2_segments`` validates the data and puts the finite values in group order once per fit (group g
at ``sorted_values[offsets[g]:offsets[g + 1]]``, zeros after ``offsets[G]`` in place of the omitted values); the
init's passes, the EM and the single E-step (for the distributed fit) read those segments and normalise on
the fly with the per-group ``lo`` and ``scale``. Backends: "cpu" (C++, OpenMP, vectorised passes), "reference",
and on CUDA tensors "triton" and "cuda" (one persistent launch per fit); segments, init and the single E-step run
the reference (torch) there. The CUDA default is Triton: neither GPU kernel has been timed (nor the CUDA one run)
on a GPU yet. Every (G, 2) parameter tensor handed to a kernel is a contiguous float64 copy."""

from __future__ import annotations

import torch

from fastmix import _checks, _native
from fastmix.reference import gmm as reference

BACKENDS = ("cpu", "reference", "triton", "cuda")
CUDA_DEFAULT = "triton"
KMEANS_BACKENDS = ("cpu", "triton")
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


def _segment_arguments(sorted_values: torch.Tensor, offsets: torch.Tensor, n_groups: int) -> tuple:
    """The segments as every native GMM kernel takes them: values, offsets (G + 1,), dtype code, G."""
    return (sorted_values.contiguous(), _native.Buffer(offsets.contiguous(), torch.int64, n_groups + 1),
            _native.DTYPE_CODES[sorted_values.dtype], n_groups)


def check_data(values: torch.Tensor, groups: torch.Tensor, n_groups: int, omit_nonfinite: bool) -> None:
    """Groups in range and (unless omitted) finite values, checked on the device (gmm2_segments_cpu does both in
    its first pass)."""
    if values.numel() == 0:
        return
    smallest, largest = torch.aminmax(groups)
    _checks.check_on_device((smallest >= 0) & (largest < n_groups),
                            f"groups holds indices outside [0, n_groups={n_groups})")
    if not omit_nonfinite:
        _checks.check_on_device(torch.isfinite(values).all(),
                                "values contains NaN or infinity; pass nan_policy='omit' to ignore those values")


@torch.library.custom_op("fastmix::gmm2_segments", mutates_args=())
def gmm2_segments(values: torch.Tensor, groups: torch.Tensor, n_groups: int, omit_nonfinite: bool, backend: str
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checks 1-D values/int64 groups, then returns (sorted_values, offsets (G + 1,) int64, and per group the
    float64 count, min and max of its finite values; an empty group has min = max = 0). The sort is stable."""
    if backend != "cpu":
        check_data(values, groups, n_groups, omit_nonfinite)
        valid = torch.isfinite(values)
        keys = torch.where(valid, groups, n_groups)  # omitted values sort after every group
        offsets = torch.zeros(n_groups + 1, dtype=torch.int64, device=values.device)
        offsets[1:] = torch.bincount(keys, minlength=n_groups + 1)[:n_groups].cumsum(0)
        count, lo, hi = reference.group_range(values, groups.clamp(0, n_groups - 1), valid, n_groups)
        sorted_values = values[torch.argsort(keys, stable=True)]
        held = torch.arange(values.numel(), device=values.device) < offsets[-1]
        return torch.where(held, sorted_values, 0.0), offsets, count, lo, hi
    n = values.numel()
    sorted_values = torch.empty(n, dtype=values.dtype, device=values.device)
    offsets = torch.empty(n_groups + 1, dtype=torch.int64, device=values.device)
    count, lo, hi = (_float64(n_groups, values.device) for _ in range(3))
    _native.launch("gmm2_segments_cpu", values.device, values.contiguous(),
                   _native.Buffer(groups.contiguous(), torch.int64, n), n, _native.DTYPE_CODES[values.dtype], n_groups,
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
    """One pass over every group's segment, (G, columns) float64: the C++ kernel ``native_pass`` on "cpu", else
    ``reference_pass(x, groups, valid, n_groups, *tensors)`` on the reference's view. ``extra``: (tensor or None,
    the element count the kernel reads from it) pairs."""
    n_groups = lo.size(0)
    if backend != "cpu":
        return reference_pass(*normalised_segments(sorted_values, offsets, lo, scale), n_groups,
                              *(tensor for tensor, _ in extra))
    out = _float64(n_groups, sorted_values.device, columns)
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
    "triton" (one program per group): from ``seeds`` (G, 2), or without them from the means of the halves of the
    median split over the 2^MEDIAN_BISECTIONS-step grid of [low, high] (G,), at most ``steps`` Lloyd steps
    (stopping once the centres stop moving), then the final split's statistics. Returns (centres (G, 2),
    statistics (G, 7)); fastmix/methods/gmm.py composes the same from ``gmm2_split_statistics`` passes on the other
    backends."""
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"gmm2_kmeans has no {backend!r} backend")
    n_groups = count.size(0)
    centres = _float64(n_groups, sorted_values.device, 2)
    stats = _float64(n_groups, sorted_values.device, 7)
    if n_groups == 0:
        return centres, stats
    if backend == "triton":
        from fastmix.kernels.triton import gmm as triton_gmm

        inputs = [t.contiguous() for t in (sorted_values, offsets, count, lo, scale, low, high)]
        seeds = None if seeds is None else seeds.to(torch.float64).contiguous()
        triton_gmm.gmm2_kmeans(*inputs, seeds, steps, MEDIAN_BISECTIONS, centres, stats)
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
    log_likelihood = torch.full((n_groups, max_iter), float("nan"), dtype=torch.float64, device=device)
    n_iter = torch.zeros(n_groups, dtype=torch.int64, device=device)
    converged = torch.zeros(n_groups, dtype=torch.uint8, device=device)
    sorted_values, offsets, count, lo, scale = (t.contiguous() for t in (sorted_values, offsets, count, lo, scale))
    if sorted_values.numel() == 0:  # every group is empty: nothing to launch
        return out_weights, out_means, out_variances, log_likelihood, n_iter, converged.bool()
    if backend == "triton":
        from fastmix.kernels.triton import gmm as triton_gmm

        triton_gmm.gmm2_em(sorted_values, offsets, count, lo, scale, out_weights, out_means, out_variances,
                           log_likelihood, n_iter, converged, max_iter, tol, reg_covar, eps)
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
