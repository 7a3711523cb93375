"""Batched two-component GMM EM (BalanceMix paper, eq. 6-8): scikit-learn parity, backends, invariants, bad input."""

import math
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
import torch

import fastmix
from fastmix import _backend, _native
from fastmix.api.gmm import INITS
from fastmix.methods import gmm as fit_steps
from fastmix.ops import gmm as gmm_ops
from fastmix.reference import gmm as reference_gmm
from helpers import assert_close, backend_params, compile_fullgraph
from tolerances import SKLEARN_GMM_PARITY, tolerance

try:
    import threadpoolctl
    from sklearn import mixture as sklearn_mixture
except ImportError:  # a test dependency (threadpoolctl comes with it): only the parity tests need it
    sklearn_mixture = None
needs_sklearn = pytest.mark.skipif(sklearn_mixture is None, reason="scikit-learn is not installed")


def cpu_backends(names=("reference", "cpu")):
    params = []
    for name in names:
        reason = _backend.unavailable_reason(name, "cpu")
        params.append(pytest.param(name, id=name, marks=[pytest.mark.skip(reason=reason)] if reason else []))
    return params


def segments_of(values, groups, n_groups: int, backend: str, normalize: str = "minmax"):
    """(Segments, lo, hi) of a fit's passes over values sorted by group (NaN/inf omitted), without the ranks."""
    sorted_values, offsets, count, lo, hi = gmm_ops.gmm2_segments(values.reshape(-1), groups.reshape(-1).long(),
                                                                  n_groups, True, backend)
    shift, scale, _ = fit_steps.normalisation(lo, hi, normalize, values.dtype)
    return fit_steps.Segments(sorted_values, offsets, count, shift, scale, backend, fit_steps.no_reduce), lo, hi


def random_groups(n_groups: int, seed: int, dtype=torch.float64):
    """Groups of very different sizes, each a random two-Gaussian mixture of losses."""
    g = torch.Generator().manual_seed(seed)
    values, groups = [], []
    for group in range(n_groups):
        size = int(torch.randint(5, 1500, (1,), generator=g))
        clean = int(size * (0.5 + 0.45 * float(torch.rand(1, generator=g))))
        low = torch.randn(clean, generator=g, dtype=torch.float64) * 0.3 + 0.5
        high = torch.randn(size - clean, generator=g, dtype=torch.float64) * float(0.2 + torch.rand(1, generator=g)) + 2.5
        values.append(torch.cat([low, high]).abs())
        groups.append(torch.full((size,), group))
    order = torch.randperm(sum(len(v) for v in values), generator=g)  # groups interleaved
    return torch.cat(values)[order].to(dtype), torch.cat(groups)[order]


def sklearn_fits(values, groups, n_groups, seed=0):
    """Per group: scikit-learn's k-means init (max_iter=0 recipe) and the fit from it, on min-max values."""
    inits, fits = [], []
    for group in range(n_groups):
        v = values[groups == group]
        x = ((v - v.min()) / (v.max() - v.min())).numpy()[:, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            init = sklearn_mixture.GaussianMixture(2, max_iter=0, reg_covar=5e-4, random_state=seed + group).fit(x)
            fit = sklearn_mixture.GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4, weights_init=init.weights_,
                                                  means_init=init.means_, precisions_init=init.precisions_).fit(x)
        inits.append((init.weights_, init.means_[:, 0], init.covariances_[:, 0, 0]))
        clean = int(fit.means_[:, 0].argmin())
        fits.append((fit, fit.predict_proba(x)[:, clean]))
    init = tuple(torch.tensor(np.array([i[k] for i in inits])) for k in range(3))
    return init, fits


@needs_sklearn
@pytest.mark.parametrize("backend", cpu_backends())
def test_sklearn_parity(backend):
    n_groups = 24
    values, groups = random_groups(n_groups, seed=1)
    init, fits = sklearn_fits(values, groups, n_groups)
    fit = fastmix.fit_gmm2(values, groups, n_groups=n_groups, init=init, backend=backend)
    posterior = fastmix.gmm_posterior(values, groups, fit)
    compared = 0
    for group, (expected, expected_posterior) in enumerate(fits):
        changes = fit.log_likelihood[group].diff().abs()
        if bool(((changes - 1e-2).abs() < 1e-6).any()):  # the discrete tol decision is a coin toss there
            continue
        compared += 1
        assert int(fit.n_iter[group]) == expected.n_iter_
        assert bool(fit.converged[group]) == expected.converged_
        torch.testing.assert_close(fit.weights[group], torch.tensor(expected.weights_), **SKLEARN_GMM_PARITY)
        torch.testing.assert_close(fit.means[group], torch.tensor(expected.means_[:, 0]), **SKLEARN_GMM_PARITY)
        torch.testing.assert_close(fit.variances[group], torch.tensor(expected.covariances_[:, 0, 0]),
                                   **SKLEARN_GMM_PARITY)
        torch.testing.assert_close(fit.log_likelihood[group, int(fit.n_iter[group]) - 1],
                                   torch.tensor(expected.lower_bound_, dtype=torch.float64), **SKLEARN_GMM_PARITY)
        torch.testing.assert_close(posterior[groups == group], torch.tensor(expected_posterior), **SKLEARN_GMM_PARITY)
    assert compared >= n_groups - 2


@needs_sklearn
def test_sklearn_parity_without_normalisation_and_short_runs():
    """normalize="none" with values already in [0, 1]; max_iter=1 (never converges), 3, and 10 with tol=0."""
    values, groups = random_groups(6, seed=2)
    for group in range(6):
        v = values[groups == group]
        values[groups == group] = (v - v.min()) / (v.max() - v.min())
    init, _ = sklearn_fits(values, groups, 6)
    for max_iter, tol in ((1, 1e-2), (3, 1e-2), (10, 0.0)):
        fit = fastmix.fit_gmm2(values, groups, n_groups=6, init=init, normalize="none", max_iter=max_iter, tol=tol)
        for group in range(6):
            x = values[groups == group].numpy()[:, None]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = sklearn_mixture.GaussianMixture(
                    2, max_iter=max_iter, tol=tol, reg_covar=5e-4, weights_init=init[0][group].numpy(),
                    means_init=init[1][group].numpy()[:, None],
                    precisions_init=1 / init[2][group].numpy()[:, None, None]).fit(x)
            assert int(fit.n_iter[group]) == expected.n_iter_ and bool(fit.converged[group]) == expected.converged_
            torch.testing.assert_close(fit.means[group], torch.tensor(expected.means_[:, 0]), **SKLEARN_GMM_PARITY)
            torch.testing.assert_close(fit.variances[group], torch.tensor(expected.covariances_[:, 0, 0]),
                                       **SKLEARN_GMM_PARITY)


def backend_case(dtype, rows=300, seed=3):
    """(N, 9) losses with label groups, a NaN and an inf (nan_policy="omit"), and an empty group."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(rows, 9, generator=g) < 0.2
    losses = torch.where(labels, torch.rand(rows, 9, generator=g) * 3, torch.rand(rows, 9, generator=g) ** 4).to(dtype)
    losses[5, 2] = float("nan")
    losses[7, 4] = float("inf")
    groups = fastmix.label_groups(labels)
    groups[:, 8] = 17  # class 8's negative group (16) is empty
    return losses, groups


def fit_dtype(backend: str, dtype: torch.dtype) -> torch.dtype:
    """The tolerance of a backend's fit of ``dtype`` values against the reference's: the Triton and C++ CPU E-steps
    compute each value's terms in the values' dtype (float32 exp and log for float32 values), the native CUDA
    kernel and the reference in float64."""
    return dtype if backend in ("triton", "cpu") else torch.float64


def assert_same_fit(actual, expected, dtype: torch.dtype = torch.float64):
    for name in ("weights", "means", "variances", "log_likelihood", "min", "max"):
        a, e = getattr(actual, name), getattr(expected, name)
        assert torch.equal(a.isnan(), e.isnan()), name
        assert_close(a.nan_to_num(), e.nan_to_num(), dtype, name)
    for name in ("n_iter", "converged", "degenerate"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name


@pytest.mark.parametrize("backend,device", backend_params(("cpu", "triton", "cuda")))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("init", INITS)
def test_backends_match_reference(backend, device, dtype, init):
    losses, groups = backend_case(dtype)
    losses, groups = losses.to(device), groups.to(device)
    fits = [fastmix.fit_gmm2(losses, groups, n_groups=18, init=init, nan_policy="omit", backend=b,
                             generator=torch.Generator(device).manual_seed(0)) for b in ("reference", backend)]
    assert_same_fit(fits[1], fits[0], fit_dtype(backend, dtype))
    assert fits[0].degenerate.tolist() == [False] * 16 + [True, False]


@pytest.mark.parametrize("backend", cpu_backends(("cpu", "triton")))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_segments_match_a_stable_sort_by_group(backend, dtype):
    """Grouping (omitted values last as zeros, empty groups, groups of any size) against a stable sort written
    here: each group's finite values in their input order, its count, min and max."""
    losses, groups = backend_case(dtype, rows=700, seed=5)
    values, groups = losses.reshape(-1), groups.reshape(-1)
    sorted_values, offsets, count, lo, hi = gmm_ops.gmm2_segments(values, groups, 18, True, backend)
    finite = torch.isfinite(values)
    held = 0
    for group in range(18):
        mine = values[(groups == group) & finite]
        assert int(offsets[group]) == held and int(offsets[group + 1]) == held + mine.numel(), group
        assert torch.equal(sorted_values[held:held + mine.numel()], mine), group
        assert float(count[group]) == mine.numel()
        assert (float(lo[group]), float(hi[group])) == ((float(mine.min()), float(mine.max())) if mine.numel()
                                                        else (0.0, 0.0)), group
        held += mine.numel()
    assert held == int(finite.sum()) and bool((sorted_values[held:] == 0).all())


@pytest.mark.parametrize("backend", cpu_backends(("cpu",)))
@pytest.mark.parametrize("n_groups", [255, 256, 65535, 65536])
@pytest.mark.parametrize("group_dtype", [torch.int32, torch.int64])
def test_segments_of_many_groups_match_a_stable_sort(backend, n_groups, group_dtype):
    """The C++ grouping keeps each value's group in 1, 2 or 8 bytes by n_groups (one key more than the groups: the
    omitted values'): at each width's edge, from int32 and int64 ids, against torch's stable sort; the omitted values
    (NaN, inf) are dropped."""
    g = torch.Generator().manual_seed(n_groups)
    groups = torch.randint(0, n_groups, (3000,), generator=g, dtype=group_dtype)
    groups[:2] = n_groups - 1  # the largest group index is used
    values = torch.rand(3000, generator=g)
    values[5], values[9] = float("nan"), float("inf")
    sorted_values, offsets, count, _, _ = gmm_ops.gmm2_segments(values, groups, n_groups, True, backend)
    finite = torch.isfinite(values)
    order = torch.sort(groups[finite], stable=True).indices
    held = int(finite.sum())
    assert torch.equal(sorted_values[:held], values[finite][order])
    assert torch.equal(offsets, torch.cat([torch.zeros(1, dtype=torch.int64),
                                           torch.bincount(groups[finite], minlength=n_groups).cumsum(0)]))
    assert bool((sorted_values[held:] == 0).all()) and float(count.sum()) == held


@pytest.mark.parametrize("backend", cpu_backends(("triton",)))
@pytest.mark.parametrize("n,n_groups,ids,dtype,omit", [
    (1, 1, torch.int64, torch.float32, False), (2, 1, torch.int32, torch.float64, False),
    (3, 2, torch.int64, torch.float32, True), (3, 2, torch.int32, torch.float64, False),
    (97, 1, torch.int32, torch.float32, True), (97, 5, torch.int64, torch.float64, False),
    (97, 5, torch.int32, torch.float32, True), (300, 255, torch.int64, torch.float64, True),
    (300, 256, torch.int32, torch.float32, False), (300, 1000, torch.int32, torch.float64, True),
    (300, 1023, torch.int64, torch.float32, True), (300, 1024, torch.int32, torch.float64, False)])
def test_triton_counting_sort_gives_the_reference_segments(backend, n, n_groups, ids, dtype, omit, monkeypatch):
    """The Triton grouping, a counting sort over tiles of 64 values here (up to 5 tiles; the prefix scans 2 tiles
    per step; the values end inside a step for n = 97; the scatter with a GPU's 32 lanes) against
    reference.segments (torch's stable sort): the same sorted values, offsets, counts, min and max for sizes of no
    block's multiple, empty groups, one group, G = 255/256/1000/1023 (counted by a histogram of 64-1,024 bins) and
    1,024 (by atomics), int32 and int64 ids, NaN and inf omitted; the
    values rise with their index from negative through zero to positive, so a segment that keeps the input order
    is increasing (stability)."""
    from fastmix.kernels.triton import gmm as triton_gmm

    for name, value in (("SORT_TILE", 64), ("COUNT_BLOCK", 32), ("SORT_LANES", 32), ("PREFIX_TILES", 2)):
        monkeypatch.setattr(triton_gmm, name, value)
    g = torch.Generator().manual_seed(n + n_groups)
    groups = torch.randint(0, n_groups, (n,), generator=g)
    groups[0] = n_groups - 1
    values = torch.arange(1, n + 1, dtype=dtype) - n // 2
    if omit and n > 2:
        values[1], values[-1] = float("nan"), float("-inf")
    sorted_values, offsets, count, lo, hi = gmm_ops.gmm2_segments(values, groups.to(ids), n_groups, omit, backend)
    expected = reference_gmm.segments(values, groups, n_groups)
    for name, actual, wanted in zip(("sorted_values", "offsets", "count", "lo", "hi"),
                                    (sorted_values, offsets, count, lo, hi), expected):
        assert torch.equal(actual, wanted), name
    for group in range(n_groups):
        segment = sorted_values[offsets[group]:offsets[group + 1]]
        assert bool((segment[1:] > segment[:-1]).all()), group


@pytest.mark.parametrize("backend", cpu_backends(("triton",)))
@pytest.mark.parametrize("ids", [torch.int32, torch.int64])
def test_triton_counting_sort_rejects_bad_ids_and_values(backend, ids):
    """int32 and int64 ids out of range, and NaN unless omitted, reach the existing messages."""
    values, groups = torch.rand(50, dtype=torch.float64), torch.arange(50) % 3
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=r"groups holds indices outside \[0, n_groups=3\)"):
            gmm_ops.gmm2_segments(values, torch.where(groups == 1, bad, groups).to(ids), 3, True, backend)
    values[7] = math.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        gmm_ops.gmm2_segments(values, groups.to(ids), 3, False, backend)
    assert float(gmm_ops.gmm2_segments(values, groups.to(ids), 3, True, backend)[2].sum()) == 49


@pytest.mark.parametrize("backend", cpu_backends(("cpu", "triton", "reference")))
@pytest.mark.parametrize("group_dtype", [torch.int32, torch.int64])
def test_grouping_rejects_bad_data(backend, group_dtype):
    values, groups = random_groups(3, seed=4)
    groups = groups.to(group_dtype)
    with pytest.raises(ValueError, match="groups holds indices outside"):
        fastmix.fit_gmm2(values, torch.where(groups == 2, 3, groups), n_groups=3, backend=backend)
    with pytest.raises(ValueError, match="groups holds indices outside"):
        fastmix.fit_gmm2(values, torch.where(groups == 2, -1, groups), n_groups=3, backend=backend)
    values[17] = math.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        fastmix.fit_gmm2(values, groups, n_groups=3, backend=backend)
    assert not fastmix.fit_gmm2(values, groups, n_groups=3, nan_policy="omit", backend=backend).degenerate.any()


@pytest.mark.parametrize("backend,device", backend_params(("reference", "cpu", "triton", "cuda")))
def test_group_ids_of_any_integer_dtype_give_the_int64_results(backend, device):
    """int32 ids (label_groups' dtype) are read as they are, narrower ones converted once by the API: the same
    segments, fit and posterior, bit for bit, as from int64 ids; bad ids are refused with the same message whatever
    their dtype. The interpreted Triton fit is slow: on "triton" the segments (the fit's only read of the ids) are
    compared instead of a refit."""
    losses, groups = backend_case(torch.float32, rows=100)
    losses, groups = losses.to(device), groups.to(device, torch.int64)
    fit = fastmix.fit_gmm2(losses, groups, n_groups=18, nan_policy="omit",
                           backend="reference" if backend == "triton" else backend)
    posterior_backend = backend if backend in gmm_ops.POSTERIOR_BACKENDS else "reference"
    posterior = fastmix.gmm_posterior(losses, groups, fit, backend=posterior_backend)
    segments = gmm_ops.gmm2_segments(losses.reshape(-1), groups.reshape(-1), 18, True, backend)
    for dtype in (torch.int32,) if backend == "triton" else (torch.int32, torch.int16, torch.uint8):
        ids = groups.to(dtype)
        if dtype == torch.int32:
            int32_segments = gmm_ops.gmm2_segments(losses.reshape(-1), ids.reshape(-1), 18, True, backend)
            assert all(torch.equal(a, e) for a, e in zip(int32_segments, segments))
        if backend != "triton":
            refit = fastmix.fit_gmm2(losses, ids, n_groups=18, nan_policy="omit", backend=backend)
            assert all(torch.equal(a.nan_to_num(), e.nan_to_num()) for a, e in zip(refit, fit))
        assert torch.equal(fastmix.gmm_posterior(losses, ids, fit, backend=posterior_backend).nan_to_num(),
                           posterior.nan_to_num())
        for bad in (-1, 18):
            if bad < 0 and not dtype.is_signed:
                continue
            with pytest.raises(ValueError, match=r"groups holds indices outside \[0, n_groups=18\)"):
                fastmix.fit_gmm2(losses, torch.where(ids == 3, bad, ids), n_groups=18, nan_policy="omit",
                                 backend=backend)
            with pytest.raises(ValueError, match=r"groups holds indices outside \[0, n_groups=18\)"):
                fastmix.gmm_posterior(losses, torch.where(ids == 3, bad, ids), fit, backend=posterior_backend)


@pytest.mark.parametrize("backend", cpu_backends(("triton",)))
@pytest.mark.parametrize("init", INITS)
def test_triton_fit_is_deterministic_and_independent_of_its_block(backend, init, monkeypatch):
    """Two fits are bit-identical (fixed-order reductions); splitting each group's values over 64 instead of 256
    accumulator lanes (1024 in the fused fit's float32 passes: a different summation order) moves the fit only by
    rounding."""
    from fastmix.kernels.triton import gmm as triton_gmm

    losses, groups = backend_case(torch.float32, rows=400, seed=8)

    def fit():
        return fastmix.fit_gmm2(losses, groups, n_groups=18, init=init, nan_policy="omit", backend=backend,
                                generator=torch.Generator().manual_seed(1))

    first = fit()
    assert_identical_fits(fit(), first)
    monkeypatch.setattr(triton_gmm, "BLOCK", 64)
    monkeypatch.setattr(triton_gmm, "FLOAT32_FIT_BLOCK", 64)
    assert_same_fit(fit(), first, torch.float32)  # float32 lanes summed in another order


def assert_identical_fits(actual, expected):
    for name, a, e in zip(expected._fields, actual, expected):
        assert torch.equal(a.isnan(), e.isnan()) and torch.equal(a.nan_to_num(), e.nan_to_num()), name


@pytest.mark.parametrize("backend", cpu_backends(("triton",)))
def test_triton_fused_fit_is_independent_of_claim_order_programs_and_chunks(backend, monkeypatch):
    """The fused fit's work queue ("kmeans": every kind of pass), 4 groups of 194-673 values split into chunks of 128
    (2-6 per group; a chunk ends inside a BLOCK) and an empty group: claiming each pass's chunks last first (so
    another chunk of a group arrives last and reduces) and running 1 instead of 2 programs give a bit-identical fit
    (the partial rows are summed in chunk order, whoever reduces); chunks of 8192 values (one per group: other
    partial sums) move the fit only by rounding."""
    from fastmix.kernels.triton import gmm as triton_gmm

    values, groups = random_groups(4, seed=2, dtype=torch.float32)

    def fit():
        return fastmix.fit_gmm2(values, groups, n_groups=5, max_iter=4, tol=0.0, backend=backend)

    monkeypatch.setattr(triton_gmm, "CHUNK", 128)
    first = fit()
    assert first.degenerate.tolist() == [False] * 4 + [True]
    for name, value in (("REVERSED_CLAIMS", True), ("INTERPRETED_PROGRAMS", 1)):
        monkeypatch.setattr(triton_gmm, name, value)
        assert_identical_fits(fit(), first)
    monkeypatch.setattr(triton_gmm, "CHUNK", 8192)
    assert_same_fit(fit(), first, torch.float32)


@pytest.mark.parametrize("backend", cpu_backends(("triton",)))
def test_triton_fused_fit_stops_lloyd_steps_once_the_partition_repeats(backend, monkeypatch):
    """Groups whose Lloyd steps flip a centre's last bit on an unchanged partition without end (rows 14, 21, 53 and
    55 here: every fixed-point-only fit ran all 30 steps, 34 passes): the fused fit stops a group's steps once a
    step's split leaves as many values below it as the previous step's, as the C++ k-means does. Its passes (the
    work queue's claim counter: items are claimed pass by pass) are at most the histogram, the halves, the steps
    until the reference's partition repeats, the final split and the EM; the fit is the reference's (30 steps) to
    float32 rounding."""
    from fastmix.kernels.triton import gmm as triton_gmm

    g = torch.Generator().manual_seed(0)
    values = (torch.rand(64, 300, generator=g) ** 4)[[14, 21, 53, 55]].reshape(-1)
    groups = torch.arange(4).repeat_interleave(300)
    reference, lo, hi = segments_of(values, groups, 4, "reference")
    centres, below, repeats_at = fit_steps.median_seeds(reference, lo, hi), None, torch.zeros(4, dtype=torch.int64)
    for step in range(1, fit_steps.LLOYD_STEPS + 1):
        stats = reference.split_statistics(centres.mean(1), centres)
        centres = fit_steps.lloyd_step(stats, centres)
        if below is not None:
            repeats_at = torch.where((repeats_at == 0) & (stats[:, 1] == below), step, repeats_at)
        below = stats[:, 1]
    assert bool((repeats_at > 0).all()), "every group's partition repeats within the steps"
    launches = []
    fit_kernel = triton_gmm._gmm2_fit_kernel

    class RecordedLaunch:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(args)
                return fit_kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(triton_gmm, "_gmm2_fit_kernel", RecordedLaunch())
    monkeypatch.setattr(triton_gmm, "INTERPRETED_PROGRAMS", 1)  # the claims: the items run, then one past the last
    max_iter = 1
    fit = fastmix.fit_gmm2(values, groups, n_groups=4, max_iter=max_iter, tol=0.0, backend=backend)
    (args,) = launches
    counters, slots_per_pass = args[17], args[19]
    passes = -(-int(counters[0]) // slots_per_pass)
    assert passes <= 2 + int(repeats_at.max()) + 1 + max_iter, f"{passes} passes, repeats at steps {repeats_at}"
    expected = fastmix.fit_gmm2(values.double(), groups, n_groups=4, max_iter=max_iter, tol=0.0, backend="reference")
    assert_same_fit(fit, expected, torch.float32)


@pytest.mark.parametrize("backend", cpu_backends(("triton",)))
@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_fused_fit_lloyd_steps_pass_over_their_band(backend, direction, dtype, monkeypatch):
    """The Lloyd steps' splits move one way (up for losses piled near 0, down for their mirror image); after the
    first step, which reads the whole group, each step reads only the band the step before kept (the values between
    its split and twice its move ahead). Counted by wrapping the band pass (the interpreter runs it as Python): the
    steps together read under 2.5 times the group, against one whole group per step without the band, over 3
    chunks whose bands are kept apart; the fit is the reference's to the values' dtype's rounding."""
    from fastmix.kernels.triton import gmm as triton_gmm

    u = torch.rand(3000, generator=torch.Generator().manual_seed(3), dtype=dtype)
    values = u ** 4 if direction == "up" else 1 - u ** 4
    groups = torch.zeros(3000, dtype=torch.int64)
    band_pass, reads = triton_gmm._lloyd_band_sums, []

    def counted_band_pass(source, band, count, *args):
        reads.append(int(count))
        return band_pass(source, band, count, *args)

    monkeypatch.setattr(triton_gmm, "_lloyd_band_sums", counted_band_pass)
    monkeypatch.setattr(triton_gmm, "CHUNK", 1024)
    fit = fastmix.fit_gmm2(values, groups, n_groups=1, max_iter=2, tol=0.0, backend=backend)
    steps = len(reads) // 3
    assert steps >= 6 and len(reads) == 3 * steps, reads
    assert sum(reads[:3]) == 3000 and sum(reads) < 2.5 * 3000, reads
    expected = fastmix.fit_gmm2(values.double(), groups, n_groups=1, max_iter=2, tol=0.0, backend="reference")
    assert_same_fit(fit, expected, dtype)


FIT_IN_SUBPROCESS = """
import sys, torch, fastmix
g = torch.Generator().manual_seed(0)
values = torch.rand(100_000, generator=g, dtype=torch.float64) ** 3
groups = torch.randint(0, 7, (100_000,), generator=g)
fit = fastmix.fit_gmm2(values, groups, n_groups=7, max_iter=5, tol=0.0, backend="cpu")
torch.save(tuple(fit), sys.argv[1])
"""


@pytest.mark.skipif(_backend.unavailable_reason("cpu", "cpu") != "", reason="fastmix._C is not built")
def test_cpu_kernel_is_deterministic_across_thread_counts(tmp_path):
    """Fixed chunks reduced in chunk order: 1 and 2 OpenMP threads give bitwise-identical fits."""
    fits = []
    for threads in (1, 2):
        path = tmp_path / f"fit{threads}.pt"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-c", FIT_IN_SUBPROCESS, str(path)], env=env, check=True)
        fits.append(torch.load(path))
    for first, second in zip(*fits):
        assert torch.equal(first.nan_to_num(), second.nan_to_num()) if first.is_floating_point() else \
            torch.equal(first, second)


CPU_ISAS = ("avx512", "avx2", "baseline")


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_cpu_isa_matches_reference_to_rounding(isa, dtype, monkeypatch):
    """Each compiled instruction set of the vectorised passes (odd group sizes: masked tails; NaN/inf omitted; an
    empty group), against the reference: float64 values one EM step to float64 rounding (the exp, log and sums are
    exact to ulps), ten steps within the float64 tolerance; float32 values (float32 E-step) within the float32
    tolerance."""
    if _native._C is None or isa not in _native._C.gmm2_cpu_isas():
        pytest.skip(f"this CPU or build has no {isa} kernels")
    monkeypatch.setenv("FASTMIX_CPU_ISA", isa)
    assert _native._C.gmm2_cpu_isa() == isa
    losses, groups = backend_case(dtype, rows=1001, seed=14)
    for max_iter, rtol in ((1, 1e-13), (10, None)):
        fits = [fastmix.fit_gmm2(losses, groups, n_groups=18, max_iter=max_iter, tol=0.0, nan_policy="omit",
                                 backend=backend) for backend in ("reference", "cpu")]
        if rtol is None or dtype == torch.float32:
            assert_same_fit(fits[1], fits[0], fit_dtype("cpu", dtype))
            continue
        for name in ("weights", "means", "variances", "log_likelihood"):
            a, e = getattr(fits[1], name), getattr(fits[0], name)
            torch.testing.assert_close(a, e, rtol=rtol, atol=1e-15, equal_nan=True, msg=name)


@pytest.mark.parametrize("backend", cpu_backends(("cpu", "triton")))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_estep_statistics_match_reference(backend, dtype):
    """The single E-step the distributed fit all-reduces: the kernel's pass against the reference's statistics."""
    losses, groups = backend_case(dtype, rows=777, seed=16)
    segments, lo, hi = segments_of(losses, groups, 18, backend)
    params = fit_steps.quantile_init(segments, lo, hi, 5e-4, 1e-7)
    stats = [gmm_ops.gmm2_estep(segments.sorted_values, segments.offsets, segments.shift, segments.scale, *params,
                                name) for name in ("reference", backend)]
    if fit_dtype(backend, dtype) == torch.float64:
        torch.testing.assert_close(stats[1], stats[0], rtol=1e-13, atol=1e-12)
    else:
        assert_close(stats[1], stats[0], torch.float32)
    torch.testing.assert_close(stats[1][:, 1:3].sum(1), segments.count)  # each value's responsibilities sum to 1


CHUNK = 1 << 17  # the C++ grouping's chunk of values at these sizes


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ids", [torch.int32, torch.int64])
def test_cpu_grouping_of_every_isa_gives_the_reference_segments(isa, dtype, ids, monkeypatch):
    """The C++ grouping (validation and keys 16 values at a time with AVX-512, one by one otherwise; each chunk's
    runs copied out with their min and max) against reference.segments (torch's stable sort), bit for bit: n = 1,
    n = 17 (a vector and one more), three chunks (the last partial) in 200 groups of random or equal counts, 300
    groups (2-byte keys); NaN and +-inf at a vector's first, middle and last lanes, in the tail and at a chunk's
    edge, omitted; the largest finite magnitudes and the smallest subnormal kept; a group's min or max in the
    second or the last chunk."""
    if _native._C is None or isa not in _native._C.gmm2_cpu_isas():
        pytest.skip(f"this CPU or build has no {isa} kernels")
    monkeypatch.setenv("FASTMIX_CPU_ISA", isa)
    g = torch.Generator().manual_seed(21)
    finfo = torch.finfo(dtype)
    cases = [(1, 1, "random"), (17, 3, "random"), (2 * CHUNK + 37, 200, "random"), (2 * CHUNK + 37, 200, "ordered"),
             (40_000, 300, "random")]
    for n, n_groups, layout in cases:
        groups = (torch.randint(0, n_groups, (n,), generator=g) if layout == "random"
                  else torch.arange(n) * n_groups // n)  # group order: equal counts, each run in one place
        values = torch.randn(n, generator=g, dtype=dtype)
        for position, value in ((0, math.nan), (21, math.inf), (26, -math.inf), (31, math.nan), (n - 1, math.nan),
                                (CHUNK - 1, math.inf), (CHUNK, math.nan), (5, finfo.max), (6, -finfo.max),
                                (7, finfo.smallest_normal / 2 ** (finfo.bits // 8 * 3)), (8, finfo.tiny),
                                (n - 2, 1e30), (CHUNK + 1, -1e30)):  # extremes of groups in later chunks
            if n > 17 and position < n:
                values[position] = value
        actual = gmm_ops.gmm2_segments(values, groups.to(ids), n_groups, True, "cpu")
        expected = reference_gmm.segments(values, groups, n_groups)
        for name, a, e in zip(("sorted_values", "offsets", "count", "lo", "hi"), actual, expected):
            assert torch.equal(a, e), (n, n_groups, layout, name)


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("ids", [torch.int32, torch.int64])
def test_cpu_grouping_of_every_isa_rejects_bad_data(isa, ids, monkeypatch):
    """A group id of -1 or n_groups, or a NaN unless omitted, in a vector's middle lane or in the tail, reaches the
    existing message; a bad group is reported before a NaN of an earlier chunk (the reference checks the groups
    first)."""
    if _native._C is None or isa not in _native._C.gmm2_cpu_isas():
        pytest.skip(f"this CPU or build has no {isa} kernels")
    monkeypatch.setenv("FASTMIX_CPU_ISA", isa)
    n = CHUNK + 45
    values, groups = torch.rand(n, dtype=torch.float32), (torch.arange(n) % 7).to(ids)
    for position in (21, n - 2):
        for bad in (-1, 7):
            wrong = groups.clone()
            wrong[position] = bad
            with pytest.raises(ValueError, match=r"groups holds indices outside \[0, n_groups=7\)"):
                gmm_ops.gmm2_segments(values, wrong, 7, True, "cpu")
        nan = values.clone()
        nan[position] = math.nan
        with pytest.raises(ValueError, match="NaN or infinity"):
            gmm_ops.gmm2_segments(nan, groups, 7, False, "cpu")
        assert float(gmm_ops.gmm2_segments(nan, groups, 7, True, "cpu")[2].sum()) == n - 1
    nan[3], groups[CHUNK + 40] = math.nan, 7
    with pytest.raises(ValueError, match="groups holds indices outside"):
        gmm_ops.gmm2_segments(nan, groups, 7, False, "cpu")


def hard_float32_groups(offset: float = 0.0, scale: float = 1.0, small_groups: bool = True):
    """float32 groups that stress the float32 E-step's per-group sums (one group each): a tight component of weight
    0.99 next to a broad one of 0.01; a tight and a broad one of 0.5 each; equal means; 1, 2 and 3 values; a constant
    group (with small_groups). Values offset + scale * (a loss in [0, 1])."""
    g = torch.Generator().manual_seed(21)

    def normal(n, mean, std):
        return torch.randn(n, generator=g, dtype=torch.float64) * std + mean

    groups = [torch.cat([normal(990, 0.3, 0.004), normal(10, 0.7, 0.1)]),
              torch.cat([normal(500, 0.3, 0.004), normal(500, 0.6, 0.15)]),
              torch.cat([normal(600, 0.5, 0.01), normal(400, 0.5, 0.1)])]
    if small_groups:
        groups += [torch.tensor([0.4]), torch.tensor([0.2, 0.9]), torch.tensor([0.1, 0.15, 0.8]),
                   torch.full((50,), 0.25)]
    values = torch.cat([offset + scale * v for v in groups]).float()
    return values, torch.cat([torch.full((len(v),), i) for i, v in enumerate(groups)])


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("normalize,offset,scale,reg_covar", [("minmax", 0.0, 1.0, 5e-4), ("minmax", 0.0, 1.0, 1e-9),
                                                             ("none", 1e6, 16.0, 5e-4), ("minmax", 1e6, 1.0, 5e-4)])
def test_float32_estep_hard_groups_match_reference(isa, normalize, offset, scale, reg_covar, monkeypatch):
    """The C++ float32 E-step (one component's sums per value, the other's from the group's totals) on groups where
    that subtraction or float32 rounding could lose accuracy, values near 0 or at 1e6 (normalize="none": the raw
    values; float32 resolution 0.0625 there; "minmax" over a spread of 1 there: values that round to equal ones, a
    component on identical values whose variance is reg_covar alone, where an x rounded before subtracting the mean
    left 2^-26 in the other component without FMA), a tiny reg_covar (without the groups of 1-3 values: there a
    component on one value gets a variance of ~1e-9, which float32 values cannot resolve): the fit within the
    float32 tolerance of the reference's float64 fit of the same values, for each compiled instruction set."""
    if _native._C is None or isa not in _native._C.gmm2_cpu_isas():
        pytest.skip(f"this CPU or build has no {isa} kernels")
    monkeypatch.setenv("FASTMIX_CPU_ISA", isa)
    values, groups = hard_float32_groups(offset, scale, small_groups=reg_covar >= 5e-4)
    fits = [fastmix.fit_gmm2(values, groups, n_groups=int(groups.max()) + 1, normalize=normalize, reg_covar=reg_covar,
                             max_iter=10, tol=0.0, backend=backend) for backend in ("reference", "cpu")]
    assert_same_fit(fits[1], fits[0], torch.float32)


def test_unknown_cpu_isa_is_refused(monkeypatch):
    if _native._C is None:
        pytest.skip("fastmix._C is not built")
    monkeypatch.setenv("FASTMIX_CPU_ISA", "sse9")
    values, groups = random_groups(2, seed=15)
    with pytest.raises(ValueError, match="FASTMIX_CPU_ISA=sse9"):
        fastmix.fit_gmm2(values, groups, n_groups=2, backend="cpu")


@pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_kernel_blocks_match_reference(dtype, monkeypatch):
    """The CUDA kernel's phases (csrc/gmm.h) emulated block by block on the CPU, over values sorted by group, called
    through gmm2_em's "cuda" branch (its arguments as the GPU gets them, less the stream)."""
    losses, groups = backend_case(dtype, rows=700, seed=13)
    segments, lo, hi = segments_of(losses, groups, 18, "reference")
    eps = torch.finfo(dtype).eps
    init = fit_steps.quantile_init(segments, lo, hi, 5e-4, eps)
    args = (segments.sorted_values, segments.offsets, segments.count, segments.shift, segments.scale, *init, 10, 1e-2,
            5e-4, eps)
    expected = gmm_ops.gmm2_em(*args, "reference")
    monkeypatch.setattr(_native, "native", lambda: types.SimpleNamespace(gmm2_em_cuda=_native._C.gmm2_em_emulate))
    weights, means, variances, log_likelihood, n_iter, converged = gmm_ops.gmm2_em(*args, "cuda")
    for actual, wanted, name in zip((weights, means, variances, log_likelihood), expected, ("w", "mu", "var", "lb")):
        assert torch.equal(actual.isnan(), wanted.isnan()), name
        assert_close(actual.nan_to_num(), wanted.nan_to_num(), torch.float64, name)
    assert torch.equal(n_iter, expected[4]) and torch.equal(converged, expected[5])
    assert int(n_iter.max()) > 1


@pytest.mark.parametrize("backend", cpu_backends())
def test_posterior_is_a_probability_of_the_small_mean_component(backend):
    values, groups = random_groups(8, seed=4)
    fit = fastmix.fit_gmm2(values, groups, n_groups=8, backend=backend)
    posterior = fastmix.gmm_posterior(values, groups, fit)
    assert posterior.shape == values.shape and posterior.dtype == torch.float64
    assert bool(((posterior >= 0) & (posterior <= 1)).all())
    swapped = (fit.weights.flip(1), fit.means.flip(1), fit.variances.flip(1))
    fit_swapped = fastmix.fit_gmm2(values, groups, n_groups=8, init=swapped, max_iter=1, backend=backend)
    fit_again = fastmix.fit_gmm2(values, groups, n_groups=8, init=(fit.weights, fit.means, fit.variances),
                                 max_iter=1, backend=backend)
    assert_close(fastmix.gmm_posterior(values, groups, fit_swapped), fastmix.gmm_posterior(values, groups, fit_again),
                 torch.float64, "the clean component is chosen by its mean, not its index")
    for group in range(8):
        v = values[groups == group]
        p = posterior[groups == group]
        assert p[v.argmin()] > 0.5 > p[v.argmax()], "the smallest loss is clean, the largest noisy"



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", cpu_backends(("reference", "triton")))
def test_posterior_matches_the_reference(dtype, backend):
    """The production posterior (eq. 8) against the reference oracle's normalise + posterior, on new values: a
    one-value group (degenerate: 1.0), an empty group, a single-value batch, no values and NaN/inf values (NaN
    there only); a group out of range is rejected."""
    values, groups = random_groups(4, seed=21, dtype=dtype)
    values = torch.cat([values, values.new_tensor([0.3])])
    groups = torch.cat([groups, groups.new_tensor([5])])  # group 4 stays empty, group 5 holds one value
    fit = fastmix.fit_gmm2(values, groups, n_groups=6)
    assert bool(fit.degenerate[4]) and bool(fit.degenerate[5])
    probe = values * 1.3 - 0.05
    probe[:3] = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
    oracle = reference_gmm.posterior(
        reference_gmm.normalise(probe, groups, fit.min, fit_steps.range_scale(fit.min, fit.max)), groups,
        fit.weights, fit.means, fit.variances)
    oracle = torch.where(fit.degenerate[groups] & torch.isfinite(probe), 1.0, oracle)
    got = fastmix.gmm_posterior(probe, groups, fit, backend=backend)
    assert got.dtype == dtype and bool(got[:3].isnan().all())
    assert_close(got[3:], oracle[3:].to(dtype), dtype)
    assert_close(fastmix.gmm_posterior(probe[-2:-1], groups[-2:-1], fit, backend=backend), oracle[-2:-1].to(dtype),
                 dtype, "B = 1")
    assert fastmix.gmm_posterior(probe[:0], groups[:0], fit, backend=backend).shape == (0,)
    with pytest.raises(ValueError, match="groups holds indices outside"):
        fastmix.gmm_posterior(probe, torch.where(groups == 3, 6, groups), fit, backend=backend)


def test_posterior_falls_with_the_loss_for_separated_components():
    """Eq. 8 for two well-separated components of equal spread: p_G is in [0, 1], near 1 at the smallest loss and
    near 0 at the largest, and falls monotonically as the loss grows in between."""
    g = torch.Generator().manual_seed(8)
    values = torch.cat([0.2 + 0.05 * torch.randn(3000, generator=g, dtype=torch.float64),
                        0.8 + 0.05 * torch.randn(3000, generator=g, dtype=torch.float64)])
    groups = torch.zeros_like(values, dtype=torch.int64)
    fit = fastmix.fit_gmm2(values, groups, n_groups=1)
    grid = torch.linspace(float(values.min()), float(values.max()), 2001, dtype=torch.float64)
    posterior = fastmix.gmm_posterior(grid, torch.zeros_like(grid, dtype=torch.int64), fit)
    assert bool(((posterior >= 0) & (posterior <= 1)).all())
    assert bool((posterior.diff() <= 0).all()), "p_G never rises with the loss"
    assert posterior[0] > 0.999 and posterior[-1] < 0.001

@pytest.mark.parametrize("backend", cpu_backends())
def test_recovers_synthetic_two_gaussian_parameters(backend):
    g = torch.Generator().manual_seed(5)
    truth = {"weights": (0.7, 0.3), "means": (0.25, 0.7), "stds": (0.05, 0.1)}
    values = []
    for group in range(3):
        n = 4000
        first = int(n * truth["weights"][0])
        values.append(torch.cat([torch.randn(first, generator=g) * truth["stds"][0] + truth["means"][0],
                                 torch.randn(n - first, generator=g) * truth["stds"][1] + truth["means"][1]]))
    values = torch.cat(values).double()
    groups = torch.arange(3).repeat_interleave(4000)
    fit = fastmix.fit_gmm2(values, groups, n_groups=3, normalize="none", max_iter=100, tol=1e-7, reg_covar=1e-8,
                           backend=backend)
    assert bool(fit.converged.all())
    expected = lambda key: torch.tensor(truth[key], dtype=torch.float64).expand(3, 2)  # noqa: E731
    torch.testing.assert_close(fit.weights, expected("weights"), atol=0.02, rtol=0)
    torch.testing.assert_close(fit.means, expected("means"), atol=0.01, rtol=0)
    torch.testing.assert_close(fit.variances.sqrt(), expected("stds"), atol=0, rtol=0.08)


@pytest.mark.parametrize("backend", cpu_backends())
def test_edge_groups_are_defined(backend):
    values = torch.tensor([0.3, 2.0, 2.0, 2.0, 1.0, 5.0, 0.1, 0.9, 0.4, 0.6], dtype=torch.float64)
    groups = torch.tensor([1, 2, 2, 2, 3, 3, 4, 4, 4, 4])  # 0 empty, 1 one value, 2 all equal, 3 two values
    fit = fastmix.fit_gmm2(values, groups, n_groups=5, backend=backend)
    for name in ("weights", "means", "variances"):
        assert not bool(getattr(fit, name).isnan().any()), name
    assert fit.degenerate.tolist() == [True, True, True, False, False]
    assert fit.n_iter[:3].tolist() == [0, 0, 0] and not bool(fit.converged[:3].any())
    assert sorted(fit.means[3].tolist()) == pytest.approx([0.0, 1.0], abs=1e-9), "two values: one per component"
    torch.testing.assert_close(fit.variances[3], torch.full((2,), 5e-4, dtype=torch.float64))
    posterior = fastmix.gmm_posterior(values, groups, fit)
    assert not bool(posterior.isnan().any())
    assert posterior[:4].tolist() == [1.0] * 4, "degenerate groups are deemed clean"
    assert posterior[4] > 0.99 and posterior[5] < 0.01


@pytest.mark.parametrize("backend", cpu_backends())
def test_nan_policy(backend):
    values, groups = random_groups(4, seed=6)
    with_nan = values.clone()
    with_nan[::50] = float("nan")
    with_nan[1::97] = -float("inf")
    with pytest.raises(ValueError, match="NaN"):
        fastmix.fit_gmm2(with_nan, groups, n_groups=4, backend=backend)
    fit = fastmix.fit_gmm2(with_nan, groups, n_groups=4, nan_policy="omit", backend=backend)
    keep = torch.isfinite(with_nan)
    expected = fastmix.fit_gmm2(values[keep], groups[keep], n_groups=4, backend=backend)
    for name in ("weights", "means", "variances", "min", "max"):
        assert_close(getattr(fit, name), getattr(expected, name), torch.float64, name)
    assert torch.equal(fit.n_iter, expected.n_iter)


@pytest.mark.parametrize("backend", cpu_backends())
def test_inputs_untouched_and_dtypes(backend):
    values, groups = random_groups(5, seed=7, dtype=torch.float32)
    values_before, groups_before = values.clone(), groups.clone()
    fit32 = fastmix.fit_gmm2(values, groups, n_groups=5, backend=backend)
    assert torch.equal(values, values_before) and torch.equal(groups, groups_before)
    fit64 = fastmix.fit_gmm2(values.double(), groups, n_groups=5, backend=backend)
    assert fit32.means.dtype == torch.float64 and fit32.n_iter.dtype == torch.int64
    assert torch.equal(fit32.n_iter, fit64.n_iter)
    torch.testing.assert_close(fit32.means, fit64.means, **SKLEARN_GMM_PARITY)  # float64 accumulation either way
    assert fastmix.gmm_posterior(values, groups, fit32).dtype == torch.float32


def test_inits_are_deterministic_and_kmeans_follows_the_generator():
    values, groups = random_groups(6, seed=8)
    first = fastmix.fit_gmm2(values, groups, n_groups=6)
    assert torch.equal(first.means, fastmix.fit_gmm2(values, groups, n_groups=6).means)
    seeded = [fastmix.fit_gmm2(values, groups, n_groups=6, init="kmeans++",
                               generator=torch.Generator().manual_seed(s)) for s in (0, 0)]
    assert torch.equal(seeded[0].means, seeded[1].means)
    # On well-separated data every init reaches the same optimum.
    long_runs = [fastmix.fit_gmm2(values, groups, n_groups=6, init=i, max_iter=300, tol=1e-10,
                                  generator=torch.Generator().manual_seed(0)) for i in INITS]
    for run in long_runs[1:]:
        torch.testing.assert_close(run.means.sort(1).values, long_runs[0].means.sort(1).values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", cpu_backends(("reference", "cpu", "triton")))
def test_kmeans_seeding_races_draw_uniformly_then_by_squared_distance(backend):
    """k-means++ on 4000 groups of the values {0, 0.5, 1}: the first race picks each with probability 1/3; the second,
    from a first centre at 0, picks 1 with probability 1 / 1.25, 0.5 with 0.25 / 1.25 and 0 never."""
    n_groups = 500 if backend == "triton" else 4000  # the interpreter's races are slow
    values = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64).repeat(n_groups)
    segments, _, _ = segments_of(values, torch.arange(n_groups).repeat_interleave(3), n_groups, backend)
    g = torch.Generator().manual_seed(0)
    keys = torch.empty(values.numel(), dtype=torch.float64)
    winners = segments.race
    first = winners(keys.uniform_(generator=g), None)
    second = winners(keys.uniform_(generator=g).log_().neg_(), torch.zeros(n_groups, dtype=torch.float64))
    for value, first_share, second_share in ((0.0, 1 / 3, 0.0), (0.5, 1 / 3, 0.2), (1.0, 1 / 3, 0.8)):
        for winners_of_race, share in ((first, first_share), (second, second_share)):
            # within 4 standard errors (0.030 at 4000 groups, 0.084 at 500): a race by distance instead of its
            # square (second shares 1/3, 2/3) or uniform over the other values (1/2, 1/2) is off by 0.13 or more
            four_standard_errors = 4 * math.sqrt(share * (1 - share) / n_groups)
            assert float((winners_of_race == value).double().mean()) == pytest.approx(share, abs=four_standard_errors)


def test_label_groups():
    labels = torch.tensor([[1, 0, 1], [0, 0, 1]])
    assert fastmix.label_groups(labels).tolist() == [[1, 2, 5], [0, 2, 5]]
    assert fastmix.label_groups(labels).dtype == torch.int32
    assert fastmix.label_groups(labels.bool()).tolist() == [[1, 2, 5], [0, 2, 5]]
    with pytest.raises(ValueError, match="labels"):
        fastmix.label_groups(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="labels"):
        fastmix.label_groups(torch.tensor([1, 0]))


def relaid(layout: str, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The tensors' values unchanged, laid out "contiguous", "strided" (every other element of a wider buffer) or
    "offset" (contiguous from storage offset 1)."""
    if layout == "strided":
        return [None if t is None else torch.stack([t, torch.zeros_like(t)], -1)[..., 0] for t in tensors]
    if layout == "offset":
        return [None if t is None else torch.cat([t.new_zeros(1), t.flatten()])[1:].view(t.shape) for t in tensors]
    return list(tensors)


@pytest.mark.parametrize("backend", cpu_backends(("reference", "cpu", "triton")))
@pytest.mark.parametrize("layout", ["contiguous", "strided", "offset"])
def test_opcheck(backend, layout):
    values, groups = random_groups(3, seed=9)
    values[::40] = math.nan
    segments = gmm_ops.gmm2_segments(values, groups, 3, True, "reference")
    sorted_values, offsets, count, lo, hi = segments
    scale = hi - lo
    params = (torch.full((3, 2), 0.5, dtype=torch.float64),
              torch.tensor([[0.1, 0.6]], dtype=torch.float64).expand(3, 2).contiguous(),
              torch.full((3, 2), 0.05, dtype=torch.float64))
    values, groups, sorted_values, offsets, count, lo, scale = relaid(layout, values, groups, sorted_values, offsets,
                                                                      count, lo, scale)
    params = relaid(layout, *params)
    torch.library.opcheck(gmm_ops.gmm2_em, (sorted_values, offsets, count, lo, scale, *params, 5, 1e-2, 5e-4, 2.2e-16,
                                            backend))
    torch.library.opcheck(gmm_ops.gmm2_estep, (sorted_values, offsets, lo, scale, *params, backend))
    torch.library.opcheck(gmm_ops.gmm2_segments, (values, groups, 3, True, backend))
    split = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    keys, centre, shifts = relaid(layout, torch.rand(values.numel(), dtype=torch.float64),
                                  torch.full((3,), 0.3, dtype=torch.float64),
                                  torch.stack([split / 2, (1 + split) / 2], 1))
    for centre in (None, centre):
        torch.library.opcheck(gmm_ops.gmm2_race, (sorted_values, offsets, lo, scale, keys, centre, backend))
    torch.library.opcheck(gmm_ops.gmm2_split_statistics, (sorted_values, offsets, lo, scale,
                                                          *relaid(layout, split), shifts, backend))
    if backend == "triton":
        fit = fastmix.fit_gmm2(values, groups, n_groups=3, nan_policy="omit")
        finite = values.nan_to_num(0.5)  # opcheck compares outputs without NaN equality
        torch.library.opcheck(gmm_ops.gmm2_posterior, (*relaid(layout, finite, groups), fit.weights, fit.means,
                                                       fit.variances, fit.min, fit.max, fit.degenerate, backend))
        for minmax, kmeans in ((True, True), (False, False)):  # tol 0: no NaN after a stop (opcheck compares)
            torch.library.opcheck(gmm_ops.gmm2_fit, (sorted_values, offsets, count, lo, lo + scale, minmax, kmeans, 5,
                                                     4, 0.0, 5e-4, 2.2e-16, 2.0 ** 500, backend))
    if backend in gmm_ops.KMEANS_BACKENDS:
        low, high = relaid(layout, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
        for seeds in (None, params[1]):
            torch.library.opcheck(gmm_ops.gmm2_kmeans, (sorted_values, offsets, count, lo, scale, low, high, seeds,
                                                        4, backend))


@pytest.mark.parametrize("backend", cpu_backends(("cpu", "triton")))
@pytest.mark.parametrize("layout", ["strided", "offset"])
def test_kernels_read_strided_and_offset_inputs_like_contiguous_ones(backend, layout):
    values, groups = random_groups(3, seed=12)
    segments, lo, hi = segments_of(values, groups, 3, "cpu")
    eps = torch.finfo(torch.float64).eps
    init = fit_steps.quantile_init(segments, lo, hi, 5e-4, eps)
    inputs = (segments.sorted_values, segments.offsets, segments.count, segments.shift, segments.scale)
    low, high = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)

    def outputs(sorted_values, offsets, count, shift, scale, weights, means, variances, low, high):
        fitted = gmm_ops.gmm2_em(sorted_values, offsets, count, shift, scale, weights, means, variances, 6, 1e-3, 5e-4,
                                 eps, backend)
        kmeans = gmm_ops.gmm2_kmeans(sorted_values, offsets, count, shift, scale, low, high, means, 3, backend)
        estep = gmm_ops.gmm2_estep(sorted_values, offsets, shift, scale, weights, means, variances, backend)
        race = gmm_ops.gmm2_race(sorted_values, offsets, shift, scale, low.new_ones(sorted_values.numel()), low,
                                 backend)
        split = gmm_ops.gmm2_split_statistics(sorted_values, offsets, shift, scale, high / 2, means, backend)
        return (*fitted, *kmeans, estep, race, split)

    expected = outputs(*inputs, *init, low, high)
    actual = outputs(*relaid(layout, *inputs, *init, low, high))
    for index, (got, wanted) in enumerate(zip(actual, expected)):
        assert torch.equal(got.isnan(), wanted.isnan()) and torch.equal(got.nan_to_num(), wanted.nan_to_num()), index
    sorted_values = gmm_ops.gmm2_segments(*relaid(layout, values, groups), 3, True, backend)[0]
    assert torch.equal(sorted_values, segments.sorted_values)


def test_compiles_fullgraph():
    values, groups = random_groups(3, seed=10)

    def step(v, g):
        fit = fastmix.fit_gmm2(v, g, n_groups=3)
        return fastmix.gmm_posterior(v, g, fit)

    compiled = compile_fullgraph(step, values.device.type)
    assert_close(compiled(values, groups), step(values, groups), torch.float64)


def test_bad_input():
    values, groups = random_groups(2, seed=11)
    with pytest.raises(ValueError, match="groups"):
        fastmix.fit_gmm2(values, groups, n_groups=1)
    with pytest.raises(ValueError, match="groups"):
        fastmix.fit_gmm2(values, -groups, n_groups=2)
    with pytest.raises(ValueError, match="max_iter"):
        fastmix.fit_gmm2(values, groups, n_groups=2, max_iter=0)
    with pytest.raises(ValueError, match="n_groups"):
        fastmix.fit_gmm2(values, groups, n_groups=0)
    with pytest.raises(TypeError, match="n_groups"):
        fastmix.fit_gmm2(values, groups, n_groups=2.0)
    with pytest.raises(TypeError, match="values"):
        fastmix.fit_gmm2(groups, groups, n_groups=2)
    with pytest.raises(TypeError, match="groups"):
        fastmix.fit_gmm2(values, values, n_groups=2)
    with pytest.raises(ValueError, match="groups"):
        fastmix.fit_gmm2(values, groups[1:], n_groups=2)
    with pytest.raises(ValueError, match="reg_covar"):
        fastmix.fit_gmm2(values, groups, n_groups=2, reg_covar=0.0)
    with pytest.raises(ValueError, match="tol"):
        fastmix.fit_gmm2(values, groups, n_groups=2, tol=-1.0)
    with pytest.raises(ValueError, match="normalize"):
        fastmix.fit_gmm2(values, groups, n_groups=2, normalize="zscore")
    with pytest.raises(ValueError, match="init"):
        fastmix.fit_gmm2(values, groups, n_groups=2, init="random")
    with pytest.raises(ValueError, match="init means"):
        fastmix.fit_gmm2(values, groups, n_groups=2, init=(torch.ones(2, 2), torch.ones(3, 2), torch.ones(2, 2)))
    with pytest.raises(ValueError, match="nan_policy"):
        fastmix.fit_gmm2(values, groups, n_groups=2, nan_policy="ignore")
    with pytest.raises(ValueError, match="backend"):
        fastmix.fit_gmm2(values, groups, n_groups=2, backend="numpy")
    with pytest.raises(TypeError, match="fit"):
        fastmix.gmm_posterior(values, groups, (1, 2, 3))


def test_not_finite_posterior_inputs_give_nan_only_there():
    values, groups = random_groups(2, seed=12)
    fit = fastmix.fit_gmm2(values, groups, n_groups=2)
    probe = values.clone()
    probe[0] = math.nan
    posterior = fastmix.gmm_posterior(probe, groups, fit)
    assert bool(posterior[0].isnan()) and not bool(posterior[1:].isnan().any())


def trained_losses(kind: str, seed: int = 0):
    """Per-sample training losses of a small MLP after 40 full-batch Adam steps on scikit-learn's digits with 35% of
    the labels corrupted, and their groups: cross-entropy (one group) for "single", per-label BCE with
    ``label_groups`` for "multi" (2x2 digit mosaics, multi-hot labels)."""
    from fastmix.examples.harness import load_task

    task = load_task(kind, 0.35, seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    if kind == "single":
        loss_fn = torch.nn.functional.cross_entropy
    else:
        loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(40):
        loss = loss_fn(model(task.train_x), task.train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        losses = loss_fn(model(task.train_x), task.train_y, reduction="none")
    groups = torch.zeros_like(losses, dtype=torch.int64) if kind == "single" else fastmix.label_groups(task.train_y)
    return losses, groups


def sklearn_default_clean_sets(losses, groups, n_groups: int, seeds) -> list[np.ndarray]:
    """DivideMix's call per group on min-max-normalised float32 losses, ``GaussianMixture(2, max_iter=10, tol=1e-2,
    reg_covar=5e-4, random_state=seed)``: the clean set (posterior of the small-mean component > 0.5) per seed."""
    flat_losses, flat_groups = losses.reshape(-1).numpy(), groups.reshape(-1).numpy()
    clean_sets = []
    for seed in seeds:
        clean = np.zeros(flat_losses.size, dtype=bool)
        for group in range(n_groups):
            held = flat_groups == group
            v = flat_losses[held]
            x = ((v - v.min()) / (v.max() - v.min()))[:, None]
            with warnings.catch_warnings(), threadpoolctl.threadpool_limits(1):  # small fits: threads only wait
                warnings.simplefilter("ignore")
                fit = sklearn_mixture.GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4,
                                                      random_state=seed).fit(x)
            clean[held] = fit.predict_proba(x)[:, fit.means_[:, 0].argmin()] > 0.5
        clean_sets.append(clean)
    return clean_sets


@needs_sklearn
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_default_fit_gives_sklearn_default_clean_set_on_trained_losses(kind):
    """On real training losses with noisy labels, the default fit's clean set differs from that of scikit-learn's
    default fit (random k-means init) by no more than scikit-learn's fits with different seeds differ from each
    other; the 50/50 quantile init, from which EM stops after a few iterations, does not (so the check can fail)."""
    losses, groups = trained_losses(kind)
    n_groups = 1 if kind == "single" else 20
    sklearn_sets = sklearn_default_clean_sets(losses, groups, n_groups, seeds=range(8))
    seed_spread = max(int((a != b).sum()) for a in sklearn_sets for b in sklearn_sets)

    def disagreement(init):
        fit = fastmix.fit_gmm2(losses, groups, n_groups=n_groups, init=init)
        clean = (fastmix.gmm_posterior(losses, groups, fit) > 0.5).reshape(-1).numpy()
        return max(int((clean != expected).sum()) for expected in sklearn_sets)

    assert disagreement("kmeans") <= seed_spread
    assert disagreement("quantile") > seed_spread + 0.01 * losses.numel()


@needs_sklearn
@pytest.mark.parametrize("backend", cpu_backends(("cpu",)))
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_float32_fit_agrees_with_the_float64_fit_of_the_same_values(backend, kind):
    """The float32 E-step (float32 exp, log and lane sums) against the float64 fit of the same values cast to
    float64, on real training losses: the fit within the float32 tolerance, the same clean set (both posteriors of
    the float64 values)."""
    losses, groups = trained_losses(kind)
    n_groups = 1 if kind == "single" else 20
    fits = [fastmix.fit_gmm2(losses.to(dtype), groups, n_groups=n_groups, backend=backend)
            for dtype in (torch.float32, torch.float64)]
    assert_same_fit(fits[0], fits[1], torch.float32)
    values = losses.to(torch.float64)
    clean = [fastmix.gmm_posterior(values, groups, fit) > 0.5 for fit in fits]
    assert torch.equal(clean[0], clean[1])


# --- explicit inits and warm starts --------------------------------------------------------------------------------

def explicit_init(n_groups: int):
    """Valid (G, 2) params with distinct values per group, in the normalised space."""
    offsets = torch.linspace(0.0, 0.1, n_groups, dtype=torch.float64)[:, None]
    means = torch.tensor([[0.1, 0.7]], dtype=torch.float64) + offsets
    weights = torch.tensor([[0.6, 0.4]], dtype=torch.float64) + torch.cat([offsets, -offsets], 1)
    return weights, means, torch.full((n_groups, 2), 0.03, dtype=torch.float64) + offsets


@pytest.mark.parametrize("backend,device", backend_params(("reference", "cpu", "triton", "cuda")))
def test_explicit_init_of_any_strides_gives_the_contiguous_fit(backend, device):
    """A transposed (column-major) or sliced init is read by its strides on every backend, e.g. ``means.t()`` of a
    (2, G) tensor, and the fit does not modify it."""
    losses, groups = backend_case(torch.float32)
    losses, groups = losses.to(device), groups.to(device)
    weights, means, variances = (p.to(device) for p in explicit_init(18))
    column_major = tuple(p.t().contiguous().t() for p in (weights, means, variances))
    sliced = tuple(torch.cat([p, p], 1)[:, 2:] for p in (weights, means, variances))  # strides (4, 1)
    before = [p.clone() for p in column_major]
    expected = fastmix.fit_gmm2(losses, groups, n_groups=18, init=(weights, means, variances), nan_policy="omit",
                                backend="reference")
    for init in (column_major, sliced):
        assert not init[1].is_contiguous()
        fit = fastmix.fit_gmm2(losses, groups, n_groups=18, init=init, nan_policy="omit", backend=backend)
        assert_same_fit(fit, expected, fit_dtype(backend, losses.dtype))
    assert all(torch.equal(a, b) for a, b in zip(column_major, before))


@pytest.mark.parametrize("change,match", [
    (lambda w, m, v: (w, m.int(), v), "init means must be a floating-point tensor"),
    (lambda w, m, v: (w, m[:, :1], v), r"init means must have shape \(4, 2\)"),
    (lambda w, m, v: (w, torch.where(m > 0.7, math.nan, m), v), "init weights, means and variances must be finite"),
    (lambda w, m, v: (w, m, torch.where(v > 0.05, math.inf, v)), "must be finite"),
    (lambda w, m, v: (w, m, torch.where(v > 0.05, 0.0, v)), "init variances must be > 0"),
    (lambda w, m, v: (w, m, -v), "init variances must be > 0"),
    (lambda w, m, v: (w * 1.1, m, v), "init weights must be >= 0 and sum to 1"),
    (lambda w, m, v: (torch.tensor([[1.2, -0.2]], dtype=w.dtype).expand(4, 2), m, v), "init weights must be >= 0"),
    (lambda w, m, v: (w, m), "a sequence of 2"),
])
def test_bad_explicit_init(change, match):
    values, groups = random_groups(4, seed=17)
    with pytest.raises((ValueError, TypeError), match=match):
        fastmix.fit_gmm2(values, groups, n_groups=4, init=change(*explicit_init(4)))


def test_explicit_init_weights_may_miss_one_by_rounding():
    """Weights summing to 1 within 1e-8 (float64) or 1e-6 (float32), as scikit-learn accepts them."""
    values, groups = random_groups(4, seed=17)
    weights, means, variances = explicit_init(4)
    fastmix.fit_gmm2(values, groups, n_groups=4, init=(weights * (1 + 5e-9), means, variances))
    fastmix.fit_gmm2(values, groups, n_groups=4, init=((weights * (1 + 5e-7)).float(), means, variances))
    with pytest.raises(ValueError, match="sum to 1"):
        fastmix.fit_gmm2(values, groups, n_groups=4, init=(weights * (1 + 5e-7), means, variances))


@pytest.mark.parametrize("backend,device", backend_params(("reference", "cpu", "triton", "cuda")))
def test_warm_start_reseeds_degenerate_groups(backend, device):
    """A fit whose group 2 was empty (placeholder weights (1, 0)) as the init of a fit where group 2 holds values:
    group 2 starts from the default init (its fit is the default fit's), the others from the previous fit."""
    values, groups = random_groups(4, seed=18)
    values, groups = values.to(device), groups.to(device)
    previous = fastmix.fit_gmm2(values[groups != 2], groups[groups != 2], n_groups=4, backend=backend)
    assert previous.degenerate.tolist() == [False, False, True, False]
    warm = fastmix.fit_gmm2(values, groups, n_groups=4, init=previous, backend=backend)
    default = fastmix.fit_gmm2(values, groups, n_groups=4, backend=backend)
    from_previous = fastmix.fit_gmm2(values, groups, n_groups=4, backend=backend,
                                     init=(previous.weights, previous.means, previous.variances))
    assert not bool(warm.degenerate.any()) and bool((warm.weights[2] > 0.05).all())
    for name in ("weights", "means", "variances"):
        assert_close(getattr(warm, name)[2], getattr(default, name)[2], torch.float64, name)
        assert_close(getattr(warm, name), getattr(from_previous, name), torch.float64, name)
    assert not torch.equal(warm.means[[0, 1, 3]], default.means[[0, 1, 3]]), "warm groups start where they were"


# --- ranges, empty input -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", cpu_backends())
def test_unnormalised_values_of_any_range_fit_like_minmax(backend):
    """normalize="none" on losses in [0, 100] fits the min-max fit scaled by 100 (reg_covar scaled by 100^2): the
    inits work on each group's range, whatever it is."""
    values, groups = random_groups(5, seed=19)
    for group in range(5):
        v = values[groups == group]
        values[groups == group] = (v - v.min()) / (v.max() - v.min())
    minmax = fastmix.fit_gmm2(values, groups, n_groups=5, backend=backend)
    scaled = fastmix.fit_gmm2(values * 100, groups, n_groups=5, normalize="none", reg_covar=5e-4 * 100 ** 2,
                              backend=backend)
    assert torch.equal(scaled.n_iter, minmax.n_iter)
    assert_close(scaled.weights, minmax.weights, torch.float64, "weights")
    assert_close(scaled.means, 100 * minmax.means, torch.float64, "means")
    assert_close(scaled.variances, 100 ** 2 * minmax.variances, torch.float64, "variances")
    posterior = fastmix.gmm_posterior(values * 100, groups, scaled)
    assert_close(posterior, fastmix.gmm_posterior(values, groups, minmax), torch.float64, "posterior")
    assert 0.2 < float((posterior > 0.5).double().mean()) < 0.95


@pytest.mark.parametrize("backend,device", backend_params(("reference", "cpu", "triton", "cuda")))
@pytest.mark.parametrize("normalize", ["minmax", "none"])
def test_float64_ranges_that_cannot_be_normalised_are_flagged_on_every_backend(backend, device, normalize):
    """Group 1 spans [-1e308, 1e308] (max - min overflows), group 2 a subnormal range (1 / (max - min) overflows),
    group 3 holds magnitudes of 1e300: flagged degenerate where the normalisation cannot represent them, the same on
    every backend; group 0 is fitted as usual, and no NaN appears."""
    values, groups = random_groups(1, seed=20)
    extremes = torch.tensor([-1e308, 1e308, 0.5, 1e308, 0.0, 1e-320, 5e-321, 1e-320, 1e300, 2e300, 1.5e300, 1e300],
                            dtype=torch.float64)
    values = torch.cat([values, extremes]).to(device)
    groups = torch.cat([groups, torch.tensor([1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])]).to(device)
    fits = [fastmix.fit_gmm2(values, groups, n_groups=4, normalize=normalize, backend=b)
            for b in ("reference", backend)]
    flagged = [False, True, True, True] if normalize == "none" else [False, True, True, False]
    if normalize == "none":
        flagged[2] = False  # a subnormal spread needs no reciprocal unnormalised; reg_covar keeps its variance
    assert fits[0].degenerate.tolist() == flagged
    assert_same_fit(fits[1], fits[0])
    for name in ("weights", "means", "variances"):
        assert not bool(getattr(fits[1], name).isnan().any()), name
    posterior = fastmix.gmm_posterior(values, groups, fits[1])
    assert not bool(posterior.isnan().any())
    assert bool((posterior[groups == 1] == 1.0).all())


@pytest.mark.parametrize("backend,device", backend_params(("reference", "cpu", "triton", "cuda")))
@pytest.mark.parametrize("normalize", ["minmax", "none"])
def test_float32_ranges_below_its_reciprocal_limit_are_flagged_on_every_backend(backend, device, normalize):
    """Float32 values whose group range is below 2^-128 (subnormal: 1 / (max - min) overflows float32, which the
    float32 passes scale by) are flagged degenerate under "minmax", the same on every backend and without a NaN (the
    C++ and Triton fits gave NaN means before); under "none" they are fitted raw like any group. A range just above
    the limit (2^-120) is normalised and fitted as usual."""
    values, groups = random_groups(1, seed=22, dtype=torch.float32)
    tiny = torch.tensor([1e-40, 3e-40, 4e-40, 9e-40, 1e-39], dtype=torch.float32)
    small = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float32) * 2.0 ** -120
    values = torch.cat([values, tiny, small]).to(device)
    groups = torch.cat([groups, torch.full((5,), 1), torch.full((5,), 2)]).to(device)
    fits = [fastmix.fit_gmm2(values, groups, n_groups=3, normalize=normalize, backend=b)
            for b in ("reference", backend)]
    assert fits[0].degenerate.tolist() == [False, normalize == "minmax", False]
    assert_same_fit(fits[1], fits[0], torch.float32)
    for name in ("weights", "means", "variances"):
        assert not bool(getattr(fits[1], name).isnan().any()), name
    assert not bool(fastmix.gmm_posterior(values, groups, fits[1]).isnan().any())


@pytest.mark.parametrize("backend,device", backend_params(("reference", "cpu", "triton", "cuda")))
@pytest.mark.parametrize("init", INITS)
def test_no_values_give_degenerate_groups(backend, device, init):
    """(0,) values (nothing to launch for) and one-group calls, through the public API."""
    empty = torch.zeros(0, device=device)
    fit = fastmix.fit_gmm2(empty, empty.long(), n_groups=3, init=init, backend=backend)
    assert fit.degenerate.tolist() == [True] * 3 and fit.n_iter.tolist() == [0] * 3
    assert fit.weights.tolist() == [[1.0, 0.0]] * 3
    assert fastmix.gmm_posterior(empty, empty.long(), fit).shape == (0,)
    values, groups = random_groups(1, seed=21)
    one = fastmix.fit_gmm2(values.to(device), groups.to(device), n_groups=1, init=init, backend=backend)
    assert one.degenerate.tolist() == [False] and int(one.n_iter[0]) >= 2


def test_label_groups_rejects_labels_outside_0_and_1():
    for labels in ([[2, 0]], [[-1, 1]], [[0.0, 0.999]], [[math.nan, 1.0]]):
        with pytest.raises(ValueError, match="labels must hold only 0 and 1"):
            fastmix.label_groups(torch.tensor(labels))


# --- the inits against independent sources -------------------------------------------------------------------------

def fixed_1d_groups():
    """Three fixed 1-D groups: a skewed loss-like mixture (most values small), a symmetric bimodal one, and a
    uniform grid."""
    g = torch.Generator().manual_seed(22)
    skewed = torch.cat([torch.rand(700, generator=g, dtype=torch.float64) ** 3 * 0.4,
                        0.5 + 0.5 * torch.rand(300, generator=g, dtype=torch.float64)])
    bimodal = torch.cat([torch.randn(500, generator=g, dtype=torch.float64) * 0.1,
                         1 + torch.randn(501, generator=g, dtype=torch.float64) * 0.1])
    grid = torch.linspace(0, 1, 256, dtype=torch.float64)
    parts = (skewed, bimodal, grid)
    return parts, torch.cat(parts), torch.cat([torch.full((len(p),), i) for i, p in enumerate(parts)])


@needs_sklearn
@pytest.mark.parametrize("backend", cpu_backends())
def test_kmeans_centres_match_sklearn_kmeans(backend):
    """The default init's k-means (median seeds, Lloyd steps) finds scikit-learn's KMeans(n_clusters=2) centres
    (run to strict convergence from 10 k-means++ seeds) on fixed 1-D data; without its Lloyd steps it does not."""
    from sklearn.cluster import KMeans

    parts, values, groups = fixed_1d_groups()
    segments, lo, hi = segments_of(values, groups, 3, backend)
    seeds = fit_steps.median_seeds(segments, lo, hi)
    centres = fit_steps.kmeans_centres(segments, seeds, fit_steps.LLOYD_STEPS)
    expected = []
    for part in parts:
        x = ((part - part.min()) / (part.max() - part.min())).numpy()[:, None]
        kmeans = KMeans(n_clusters=2, n_init=10, tol=0.0, random_state=0).fit(x)
        expected.append(np.sort(kmeans.cluster_centers_[:, 0]))
    expected = torch.tensor(np.array(expected))
    torch.testing.assert_close(centres, expected, **tolerance(torch.float64))
    assert (seeds - expected).abs().max() > 0.01, "the seeds alone are not k-means' centres: the Lloyd steps move them"
    unmoved = fit_steps.kmeans_centres(segments, seeds, 0)
    assert torch.equal(unmoved, seeds)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("normalize", ["minmax", "none"])
def test_median_split_brackets_torch_quantile(backend, normalize):
    """The median split is the upper edge of the 1/256 step of the group's range that holds the lower median
    (``torch.quantile(x, 0.5, interpolation="lower")``): at least half the values lie below it."""
    parts, values, groups = fixed_1d_groups()
    values = values * 7 - 2  # a range other than [0, 1]
    segments, lo, hi = segments_of(values, groups, 3, backend, normalize)
    low, high = fit_steps.data_range(segments, lo, hi)
    split = fit_steps.median_split(segments, low, high)
    for group, part in enumerate(parts):
        x = (part * 7 - 2 - segments.shift[group]) / segments.scale[group]
        median = torch.quantile(x, 0.5, interpolation="lower")
        step = (high[group] - low[group]) / 256
        on_grid = low[group] + ((split[group] - low[group]) / step).round() * step
        assert_close(split[group], on_grid, torch.float64, "the split lies on the grid")
        atol = tolerance(torch.float64)["atol"]  # x here is divided, in the passes multiplied by 1 / scale
        assert split[group] - step <= median + atol and median < split[group]


@pytest.mark.parametrize("backend,device", backend_params(gmm_ops.KMEANS_BACKENDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kmeans_matches_the_passes_of_the_reference(backend, device, dtype):
    """gmm2_kmeans (all of a group's k-means passes in one call: C++ with the segment in cache, or one Triton
    program per group; stopping at the fixed point) against the same steps composed of reference passes: median
    seeds or given seeds (transposed), then Lloyd steps."""
    losses, groups = backend_case(dtype, rows=600, seed=23)
    parts, values, fixed_groups = fixed_1d_groups()
    cases = [(losses, groups, 18), (values.to(dtype), fixed_groups, 3)]
    for case_values, case_groups, n_groups in cases:
        fused, lo, hi = segments_of(case_values.to(device), case_groups.to(device), n_groups, backend)
        reference, _, _ = segments_of(case_values, case_groups, n_groups, "reference")
        low, high = fit_steps.data_range(fused, lo, hi)
        seeds = fit_steps.median_seeds(reference, lo.cpu(), hi.cpu())
        for given, steps in ((None, fit_steps.LLOYD_STEPS), (None, 0), (seeds.flip(1).t().contiguous().t(), 5)):
            centres, stats = gmm_ops.gmm2_kmeans(fused.sorted_values, fused.offsets, fused.count, fused.shift,
                                                 fused.scale, low, high, None if given is None else given.to(device),
                                                 steps, backend)
            centres, stats = centres.cpu(), stats.cpu()
            expected = fit_steps.kmeans_centres(reference, seeds if given is None else given, steps)
            assert_close(centres, expected, torch.float64, f"centres, {steps} steps")
            expected_stats = reference.split_statistics(expected.mean(1), expected)
            assert_close(stats, expected_stats, torch.float64, f"statistics, {steps} steps")


@pytest.mark.parametrize("backend", cpu_backends(("cpu",)))
def test_kmeans_stops_once_the_partition_repeats(backend):
    """A Lloyd step moves a centre by sum (x - c) / n from the moved c, which can flip the centre's last bit back
    and forth on an unchanged partition without end (group 6 here: checked with the reference). The C++ k-means
    stops once a step's partition repeats: its centres and statistics are the reference's 30 steps' to rounding."""
    g = torch.Generator().manual_seed(0)
    values = (torch.rand(8, 3000, generator=g, dtype=torch.float64) ** 4).reshape(-1)
    groups = torch.arange(8).repeat_interleave(3000)
    fused, lo, hi = segments_of(values, groups, 8, backend)
    reference, _, _ = segments_of(values, groups, 8, "reference")
    seeds = fit_steps.median_seeds(reference, lo, hi)
    expected = fit_steps.kmeans_centres(reference, seeds, fit_steps.LLOYD_STEPS)
    one_more = fit_steps.kmeans_centres(reference, expected, 1)
    assert bool((one_more != expected).any(1)[6]), "the reference's centres of group 6 still flip after 30 steps"
    assert torch.equal(reference.split_statistics(one_more.mean(1), one_more)[:, 1:3],
                       reference.split_statistics(expected.mean(1), expected)[:, 1:3]), "on the same partition"
    low, high = fit_steps.data_range(fused, lo, hi)
    centres, stats = gmm_ops.gmm2_kmeans(fused.sorted_values, fused.offsets, fused.count, fused.shift, fused.scale,
                                         low, high, None, fit_steps.LLOYD_STEPS, backend)
    assert_close(centres, expected, torch.float64, "centres")
    assert_close(stats, reference.split_statistics(expected.mean(1), expected), torch.float64, "statistics")


def grid_neighbours(points: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """points in ``dtype``, each with its neighbours one ulp below and above, and 0 and 1 (so that min-max
    normalisation leaves the values as they are)."""
    points = points.to(dtype)
    ends = torch.tensor([0.0, 1.0], dtype=dtype)
    return torch.cat([ends, points, torch.nextafter(points, ends[:1]), torch.nextafter(points, ends[1:])])


@pytest.mark.parametrize("isa", ("avx512", "avx2", "baseline"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kmeans_band_steps_split_as_full_passes(isa, dtype, monkeypatch):
    """The C++ Lloyd steps pass over a band of each group's values around the moving split, each pass copying out
    the next, narrower band (AVX-512 or portable code); every value outside the band keeps its side. The C++ median
    bisection decides several of its bits per pass. Groups whose split moves many times up (x^4) or down
    (1 - x^4), values on the median grid's points, one ulp below and above them, and tied at splits, exactly half
    the values below a range of splits, 1-3 values, a constant group: the median seeds (0 steps) are the
    reference's to rounding, the final partition is the reference's full passes' exactly, the centres and
    statistics to rounding."""
    if _native._C is None or isa not in _native._C.gmm2_cpu_isas():
        pytest.skip(f"this CPU or build has no {isa} kernels")
    monkeypatch.setenv("FASTMIX_CPU_ISA", isa)
    g = torch.Generator().manual_seed(5)
    parts = [torch.rand(3001, generator=g, dtype=torch.float64) ** 4,
             1 - torch.rand(2000, generator=g, dtype=torch.float64) ** 4,
             torch.randint(0, 257, (1500,), generator=g).double() / 256,
             grid_neighbours(torch.randint(1, 256, (700,), generator=g).double() / 256, dtype),
             torch.tensor([0.0] * 40 + [0.5] * 7 + [1.0] * 40, dtype=torch.float64),
             torch.tensor([0.0] * 10 + [0.3] * 10 + [0.7] * 10 + [1.0] * 10, dtype=torch.float64),
             torch.tensor([0.25]), torch.tensor([0.25, 0.75]), torch.tensor([0.1, 0.2, 0.9]),
             torch.full((9,), 0.3, dtype=torch.float64)]
    values = torch.cat([p.to(dtype) for p in parts])
    groups = torch.cat([torch.full((len(p),), i) for i, p in enumerate(parts)])
    fused, lo, hi = segments_of(values, groups, len(parts), "cpu")
    reference, _, _ = segments_of(values, groups, len(parts), "reference")
    seeds = fit_steps.median_seeds(reference, lo, hi)
    expected = fit_steps.kmeans_centres(reference, seeds, fit_steps.LLOYD_STEPS)
    expected_stats = reference.split_statistics(expected.mean(1), expected)
    low, high = fit_steps.data_range(fused, lo, hi)
    kmeans = lambda steps: gmm_ops.gmm2_kmeans(fused.sorted_values, fused.offsets, fused.count, fused.shift,
                                               fused.scale, low, high, None, steps, "cpu")
    assert_close(kmeans(0)[0], seeds, torch.float64, "median seeds")
    centres, stats = kmeans(fit_steps.LLOYD_STEPS)
    assert torch.equal(stats[:, 1:3], expected_stats[:, 1:3]), "the final partition"
    assert_close(centres, expected, torch.float64, "centres")
    assert_close(stats, expected_stats, torch.float64, "statistics")


def test_triton_fused_fit_takes_larger_chunks_once_every_program_gets_one():
    """On a GPU the fused fit's work items are CHUNK values, or twice that once the values give every program a chunk
    of that size (fewer items, each with its fixed cost, while every program still has work)."""
    from fastmix.kernels.triton import gmm as triton_gmm

    chunk, programs = triton_gmm.CHUNK, 396
    assert triton_gmm.fit_chunk(2 * chunk * programs - 1, programs) == chunk
    assert triton_gmm.fit_chunk(2 * chunk * programs, programs) == 2 * chunk
    assert triton_gmm.fit_chunk(9_462_960, programs) == 16384  # the benchmark's 160 groups of MS-COCO losses
    assert triton_gmm.fit_chunk(160 * 118_287, programs) == 32768
