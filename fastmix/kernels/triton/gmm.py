"""Two-component GMM Triton kernels (BalanceMix paper, eq. 6-8): the grouping of the values, the passes of the inits
and of the distributed fit, the k-means init, the EM, and the whole default fit in one persistent launch.

Grouping (``gmm2_segments``): ``_gmm2_keys_kernel`` turns each value into its sort key (its group, or ``n_groups``
for an omitted value) and flags bad input per program; ``torch.sort(stable=True)`` orders the keys; the gather
kernel writes the values in that order; ``_gmm2_range_kernel`` (one program per group) finds its segment by binary
search in the sorted keys and its count, min and max, and reduces the flags. No size depends on the data and
nothing is read on the host.

A fit: one program per group, each iteration one pass over its contiguous segment, the statistics summed in
BLOCK-wide float64 registers and reduced in a fixed order (deterministic, no atomics), the M-step and the
convergence test on the device. Same semantics as csrc/gmm.h (scikit-learn's EM, statistics taken around the current
means). Float constants reach the kernels as their float64 bit pattern (``scalars.float64_bits``): a Python float
argument would arrive as float32 on a GPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastmix.kernels.triton.scalars import float64_bits, float64_from_bits

LOG_2PI = math.log(2.0 * math.pi)
BLOCK = 256
"""Values per step of a segment pass (the width of the float64 accumulators), over SEGMENT_WARPS warps."""
SEGMENT_WARPS = 8
GROUPING_BLOCK = 1024
"""Values per program of the keys and gather kernels."""


@triton.jit
def _is_finite(v):
    return tl.abs(v) < float("inf")  # false for NaN and +-inf


# ------------------------------------------------------------------------------------------------------- grouping
@triton.jit
def _gmm2_keys_kernel(values_ptr, groups_ptr, keys_ptr, flags_ptr, n, n_groups, OMIT_NONFINITE: tl.constexpr,
                      BLOCK: tl.constexpr):
    """keys = group where the value is kept, else ``n_groups`` (omitted, or a group out of range); flags[program]
    = 1 if a group is out of range + 2 if a value is not finite and not omitted."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    held = offs < n
    v = tl.load(values_ptr + offs, mask=held, other=0.0)
    group = tl.load(groups_ptr + offs, mask=held, other=0)
    in_range = (group >= 0) & (group < n_groups)
    finite = _is_finite(v)
    tl.store(keys_ptr + offs, tl.where(in_range & finite, group, n_groups).to(keys_ptr.dtype.element_ty), mask=held)
    bad_group = tl.max((held & ~in_range).to(tl.int32), axis=0)
    bad_value = tl.max((held & ~finite).to(tl.int32), axis=0) * (0 if OMIT_NONFINITE else 1)
    tl.store(flags_ptr + pid, (bad_group + 2 * bad_value).to(tl.uint8))


@triton.jit
def _gmm2_gather_kernel(values_ptr, order_ptr, sorted_keys_ptr, sorted_values_ptr, n, n_groups, BLOCK: tl.constexpr):
    """sorted_values[i] = values[order[i]] where that value is kept, else 0."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    held = offs < n
    kept = held & (tl.load(sorted_keys_ptr + offs, mask=held, other=0).to(tl.int32) < n_groups)
    v = tl.load(values_ptr + tl.load(order_ptr + offs, mask=kept, other=0), mask=kept, other=0.0)
    tl.store(sorted_values_ptr + offs, v, mask=held)


@triton.jit
def _lower_bound(sorted_keys_ptr, n, key, search_steps):
    """The first position whose sorted key is >= ``key`` (n if none), by ``search_steps`` >= log2(n + 1) halvings."""
    first = tl.zeros([], tl.int64)
    last = first + n
    for _ in range(search_steps):
        middle = (first + last) // 2
        below = (first < last) & (tl.load(sorted_keys_ptr + middle, mask=middle < n, other=0).to(tl.int32) < key)
        open_range = first < last
        first = tl.where(below, middle + 1, first)
        last = tl.where(open_range & ~below, middle, last)
    return first


@triton.jit
def _gmm2_range_kernel(sorted_keys_ptr, sorted_values_ptr, flags_ptr, offsets_ptr, count_ptr, lo_ptr, hi_ptr, ok_ptr,
                       n, n_flags, n_groups, search_steps, BLOCK: tl.constexpr):
    """Program g: offsets[g] (and offsets[G] from the last program), count, min and max of group g's segment (an
    empty group has min = max = 0); program 0 also reduces the flags: ok[0] no group out of range, ok[1] no value
    rejected."""
    g = tl.program_id(0)
    start = _lower_bound(sorted_keys_ptr, n, g, search_steps)
    end = _lower_bound(sorted_keys_ptr, n, g + 1, search_steps)
    tl.store(offsets_ptr + g, start)
    tl.store(offsets_ptr + n_groups, end, mask=g == n_groups - 1)
    lo_acc = tl.full([BLOCK], float("inf"), tl.float64)
    hi_acc = tl.full([BLOCK], -float("inf"), tl.float64)
    for block_start in range(start, end, BLOCK):
        offs = block_start + tl.arange(0, BLOCK)
        in_segment = offs < end
        v = tl.load(sorted_values_ptr + offs, mask=in_segment, other=0.0).to(tl.float64)
        lo_acc = tl.minimum(lo_acc, tl.where(in_segment, v, float("inf")))
        hi_acc = tl.maximum(hi_acc, tl.where(in_segment, v, -float("inf")))
    empty = end == start
    tl.store(count_ptr + g, (end - start).to(tl.float64))
    tl.store(lo_ptr + g, tl.where(empty, 0.0, tl.min(lo_acc, axis=0)))
    tl.store(hi_ptr + g, tl.where(empty, 0.0, tl.max(hi_acc, axis=0)))
    if g == 0:
        flags = tl.zeros([BLOCK], tl.int32)
        for flag_start in range(0, n_flags, BLOCK):
            offs = flag_start + tl.arange(0, BLOCK)
            flags |= tl.load(flags_ptr + offs, mask=offs < n_flags, other=0).to(tl.int32)
        tl.store(ok_ptr, tl.max(flags & 1, axis=0) == 0)
        tl.store(ok_ptr + 1, tl.max(flags & 2, axis=0) == 0)


# ------------------------------------------------------------------------------------------- per-group arithmetic
@triton.jit
def _normalisation(lo, hi, max_magnitude, MINMAX: tl.constexpr):
    """(shift, scale, unusable) of one group, as fastmix/methods/gmm.py's ``normalisation``."""
    magnitude = tl.maximum(tl.abs(lo), tl.abs(hi))
    if MINMAX:
        span = hi - lo
        unusable = ~_is_finite(span) | ((span > 0) & ~_is_finite(1.0 / span))
        shift = lo
        scale = tl.where(hi > lo, span, 1.0)
    else:
        unusable = magnitude > max_magnitude
        shift = tl.zeros_like(lo)
        scale = tl.zeros_like(lo) + 1.0
    return tl.where(unusable, 0.0, shift), tl.where(unusable, tl.maximum(magnitude, 1.0), scale), unusable


@triton.jit
def _component_update(resp_sum, shifted_sum, squared_sum, shift, reg_covar, eps):
    """(nk, mean, variance) of one component from its statistics around ``shift``."""
    nk = resp_sum + 10.0 * eps
    mean = (shifted_sum + shift * resp_sum) / nk
    d = mean - shift
    spread = squared_sum - 2.0 * d * shifted_sum + d * d * resp_sum
    return nk, mean, tl.maximum(spread, 0.0) / nk + reg_covar


# -------------------------------------------------------------------------------------------------- segment passes
@triton.jit
def _normalised_block(values_ptr, block_start, end, lo, inv_scale, BLOCK: tl.constexpr):
    """(x, in_segment) of one BLOCK of a segment: the normalised float64 values, 0 outside it."""
    offs = block_start + tl.arange(0, BLOCK)
    in_segment = offs < end
    v = tl.load(values_ptr + offs, mask=in_segment, other=0.0).to(tl.float64)
    return tl.where(in_segment, (v - lo) * inv_scale, 0.0), in_segment


@triton.jit
def _split_sums(values_ptr, start, end, lo, inv_scale, split, c0, c1, BLOCK: tl.constexpr):
    """One pass over a group's segment: the hard split ``x >= split`` (component 1) with its statistics around
    (c0, c1): the counts, the sums of ``x - c_k`` and of their squares per side."""
    n0_acc = tl.zeros([BLOCK], dtype=tl.float64)
    n1_acc = tl.zeros([BLOCK], dtype=tl.float64)
    s0_acc = tl.zeros([BLOCK], dtype=tl.float64)
    s1_acc = tl.zeros([BLOCK], dtype=tl.float64)
    q0_acc = tl.zeros([BLOCK], dtype=tl.float64)
    q1_acc = tl.zeros([BLOCK], dtype=tl.float64)
    for block_start in range(start, end, BLOCK):
        x, in_segment = _normalised_block(values_ptr, block_start, end, lo, inv_scale, BLOCK)
        upper = x >= split
        r0 = tl.where(in_segment & ~upper, 1.0, 0.0).to(tl.float64)
        r1 = tl.where(in_segment & upper, 1.0, 0.0).to(tl.float64)
        d0 = x - c0
        d1 = x - c1
        n0_acc += r0
        n1_acc += r1
        s0_acc += r0 * d0
        s1_acc += r1 * d1
        q0_acc += r0 * d0 * d0
        q1_acc += r1 * d1 * d1
    return (tl.sum(n0_acc), tl.sum(n1_acc), tl.sum(s0_acc), tl.sum(s1_acc), tl.sum(q0_acc), tl.sum(q1_acc))


@triton.jit
def _estep_sums(values_ptr, start, end, lo, inv_scale, w0, w1, m0, m1, v0, v1, log_2pi, BLOCK: tl.constexpr):
    """One E-step over a group's segment (csrc/gmm.h ``accumulate``): sum log p(x), and per component sum r_k,
    sum r_k (x - mu_k), sum r_k (x - mu_k)^2. The per-value arithmetic and the BLOCK lanes' running sums are in the
    values' dtype (float32 values: float32 exp and log instead of float64 ones, the bulk of the cost), the sum over
    the lanes and everything per group in float64."""
    dtype = values_ptr.dtype.element_ty
    p0 = 1.0 / tl.sqrt(v0)
    p1 = 1.0 / tl.sqrt(v1)
    offset0 = (-0.5 * log_2pi + tl.log(p0) + tl.log(w0)).to(dtype)
    offset1 = (-0.5 * log_2pi + tl.log(p1) + tl.log(w1)).to(dtype)
    scaled_mean0 = (m0 * p0).to(dtype)
    scaled_mean1 = (m1 * p1).to(dtype)
    mean0 = m0.to(dtype)
    mean1 = m1.to(dtype)
    shift = lo.to(dtype)
    inverse = inv_scale.to(dtype)
    p0 = p0.to(dtype)
    p1 = p1.to(dtype)
    log_prob_acc = tl.zeros([BLOCK], dtype=dtype)
    r0_acc = tl.zeros([BLOCK], dtype=dtype)
    r1_acc = tl.zeros([BLOCK], dtype=dtype)
    d0_acc = tl.zeros([BLOCK], dtype=dtype)
    d1_acc = tl.zeros([BLOCK], dtype=dtype)
    q0_acc = tl.zeros([BLOCK], dtype=dtype)
    q1_acc = tl.zeros([BLOCK], dtype=dtype)
    for block_start in range(start, end, BLOCK):
        offs = block_start + tl.arange(0, BLOCK)
        ok = offs < end
        v = tl.load(values_ptr + offs, mask=ok, other=0.0)
        x = tl.where(ok, (v - shift) * inverse, 0.0)
        z0 = x * p0 - scaled_mean0
        z1 = x * p1 - scaled_mean1
        a0 = offset0 - 0.5 * z0 * z0
        a1 = offset1 - 0.5 * z1 * z1
        top = tl.maximum(a0, a1)
        other = tl.exp(tl.minimum(a0, a1) - top)
        total = 1.0 + other
        r_top = 1.0 / total
        r_other = other * r_top
        first_on_top = a0 >= a1
        r0 = tl.where(ok, tl.where(first_on_top, r_top, r_other), 0.0)
        r1 = tl.where(ok, tl.where(first_on_top, r_other, r_top), 0.0)
        log_prob_acc += tl.where(ok, top + tl.log(total), 0.0)
        dx0 = x - mean0
        dx1 = x - mean1
        r0_acc += r0
        r1_acc += r1
        d0_acc += r0 * dx0
        d1_acc += r1 * dx1
        q0_acc += r0 * dx0 * dx0
        q1_acc += r1 * dx1 * dx1
    return (_lane_sum(log_prob_acc), _lane_sum(r0_acc), _lane_sum(r1_acc), _lane_sum(d0_acc), _lane_sum(d1_acc),
            _lane_sum(q0_acc), _lane_sum(q1_acc))


@triton.jit
def _lane_sum(lanes):
    return tl.sum(lanes.to(tl.float64), axis=0)


@triton.jit
def _store_statistics(row, s0, s1, s2, s3, s4, s5, s6):
    tl.store(row, s0)
    tl.store(row + 1, s1)
    tl.store(row + 2, s2)
    tl.store(row + 3, s3)
    tl.store(row + 4, s4)
    tl.store(row + 5, s5)
    tl.store(row + 6, s6)


@triton.jit
def _segment(offsets_ptr, lo_ptr, scale_ptr, g):
    """(start, end, shift, 1 / scale) of group g."""
    return (tl.load(offsets_ptr + g), tl.load(offsets_ptr + g + 1), tl.load(lo_ptr + g),
            1.0 / tl.load(scale_ptr + g))


@triton.jit
def _gmm2_split_kernel(values_ptr, offsets_ptr, lo_ptr, scale_ptr, split_ptr, shifts_ptr, stats_ptr,
                       BLOCK: tl.constexpr):
    """Program g: the (7,) statistics of group g's hard split at split[g] around shifts[g] (no log-likelihood)."""
    g = tl.program_id(0)
    start, end, lo, inv_scale = _segment(offsets_ptr, lo_ptr, scale_ptr, g)
    n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, start, end, lo, inv_scale, tl.load(split_ptr + g),
                                         tl.load(shifts_ptr + 2 * g), tl.load(shifts_ptr + 2 * g + 1), BLOCK)
    _store_statistics(stats_ptr + 7 * g, tl.zeros([], tl.float64), n0, n1, s0, s1, q0, q1)


@triton.jit
def _gmm2_estep_kernel(values_ptr, offsets_ptr, lo_ptr, scale_ptr, weights_ptr, means_ptr, variances_ptr, stats_ptr,
                       log_2pi_bits, BLOCK: tl.constexpr):
    """Program g: one E-step's (7,) statistics of group g around its means."""
    g = tl.program_id(0)
    start, end, lo, inv_scale = _segment(offsets_ptr, lo_ptr, scale_ptr, g)
    sums = _estep_sums(values_ptr, start, end, lo, inv_scale, tl.load(weights_ptr + 2 * g),
                       tl.load(weights_ptr + 2 * g + 1), tl.load(means_ptr + 2 * g), tl.load(means_ptr + 2 * g + 1),
                       tl.load(variances_ptr + 2 * g), tl.load(variances_ptr + 2 * g + 1), float64_from_bits(log_2pi_bits),
                       BLOCK)
    _store_statistics(stats_ptr + 7 * g, *sums)


@triton.jit
def _gmm2_race_kernel(values_ptr, offsets_ptr, lo_ptr, scale_ptr, keys_ptr, centre_ptr, stats_ptr,
                      HAS_CENTRE: tl.constexpr, BLOCK: tl.constexpr):
    """Program g: group g's race (reference.race_statistics): the smallest finite key (divided by (x - centre)^2
    with a centre), the sum of the values holding it and their count."""
    g = tl.program_id(0)
    start, end, lo, inv_scale = _segment(offsets_ptr, lo_ptr, scale_ptr, g)
    centre = tl.load(centre_ptr + g) if HAS_CENTRE else 0.0
    best_acc = tl.full([BLOCK], float("inf"), tl.float64)
    for block_start in range(start, end, BLOCK):
        x, in_segment = _normalised_block(values_ptr, block_start, end, lo, inv_scale, BLOCK)
        key = tl.load(keys_ptr + block_start + tl.arange(0, BLOCK), mask=in_segment, other=float("inf"))
        if HAS_CENTRE:
            key = key / ((x - centre) * (x - centre))
        best_acc = tl.minimum(best_acc, tl.where(in_segment, key, float("inf")))
    best = tl.min(best_acc, axis=0)
    sums_acc = tl.zeros([BLOCK], tl.float64)
    hits_acc = tl.zeros([BLOCK], tl.float64)
    for block_start in range(start, end, BLOCK):
        x, in_segment = _normalised_block(values_ptr, block_start, end, lo, inv_scale, BLOCK)
        key = tl.load(keys_ptr + block_start + tl.arange(0, BLOCK), mask=in_segment, other=float("inf"))
        if HAS_CENTRE:
            key = key / ((x - centre) * (x - centre))
        won = in_segment & (key == best) & _is_finite(key)
        sums_acc += tl.where(won, x, 0.0)
        hits_acc += tl.where(won, 1.0, 0.0)
    row = stats_ptr + 3 * g
    tl.store(row, best)
    tl.store(row + 1, tl.sum(sums_acc, axis=0))
    tl.store(row + 2, tl.sum(hits_acc, axis=0))


# --------------------------------------------------------------------------------------------- k-means init and EM
@triton.jit
def _grid_split(low, high, step, grid_step_size):
    """The split at grid step ``step`` of [low, high], as fastmix/methods/gmm.py's ``median_split`` computes it
    (``low + step / 2^B * (high - low)``): ``grid_step_size`` = 2^-B, an exact power of two, so multiplying by it
    rounds exactly as dividing by 2^B does."""
    return low + step.to(tl.float64) * grid_step_size * (high - low)


@triton.jit
def _median_centres(values_ptr, start, end, count, lo, inv_scale, low, high, BISECTIONS: tl.constexpr,
                    BLOCK: tl.constexpr):
    """The median split over the 2^BISECTIONS-step grid of [low, high] (the smallest grid step j with at least
    half the values below split_j) and its halves' statistics around their midpoints: (c0, c1, n0, n1, s0, s1, q0,
    q1). Two passes: a histogram of each value's grid step (the largest j < 2^BISECTIONS with split_j <= x, found by
    comparing with the very splits a bisection would compare with), whose prefix sums count the values below every
    split at once, then the halves' statistics."""
    STEPS: tl.constexpr = 1 << BISECTIONS
    grid_step_size = 1.0 / tl.full([], STEPS, tl.float64)
    histogram = tl.zeros([STEPS], tl.int32)
    for block_start in range(start, end, BLOCK):
        x, in_segment = _normalised_block(values_ptr, block_start, end, lo, inv_scale, BLOCK)
        step = tl.zeros([BLOCK], tl.int32)
        for bit in tl.static_range(BISECTIONS):
            candidate = step + (1 << (BISECTIONS - 1 - bit))
            step = tl.where(x >= _grid_split(low, high, candidate, grid_step_size), candidate, step)
        histogram += tl.histogram(step, STEPS, mask=in_segment)
    below = tl.cumsum(histogram, axis=0).to(tl.float64)  # below[j - 1]: the values below split_j
    steps = tl.arange(0, STEPS) + 1
    enough = (below >= count / 2.0) & (steps < STEPS)  # j = 2^BISECTIONS always qualifies
    split = _grid_split(low, high, tl.min(tl.where(enough, steps, STEPS), axis=0), grid_step_size)
    c0 = 0.5 * (low + split)
    c1 = 0.5 * (split + high)
    n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, start, end, lo, inv_scale, split, c0, c1, BLOCK)
    return c0, c1, n0, n1, s0, s1, q0, q1


@triton.jit
def _lloyd(values_ptr, start, end, lo, inv_scale, c0, c1, steps, BLOCK: tl.constexpr):
    """At most ``steps`` Lloyd steps from (c0, c1), stopping once the centres stop moving, then the final split's
    statistics: (c0, c1, n0, n1, s0, s1, q0, q1)."""
    moving = tl.full([], 1, tl.int32)
    for _ in range(steps):
        if moving != 0:
            n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, start, end, lo, inv_scale, (c0 + c1) / 2.0, c0, c1,
                                                 BLOCK)
            new0 = tl.where(n0 > 0, c0 + s0 / tl.maximum(n0, 1.0), c0)
            new1 = tl.where(n1 > 0, c1 + s1 / tl.maximum(n1, 1.0), c1)
            moving = ((new0 != c0) | (new1 != c1)).to(tl.int32)
            c0 = new0
            c1 = new1
    n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, start, end, lo, inv_scale, (c0 + c1) / 2.0, c0, c1, BLOCK)
    return c0, c1, n0, n1, s0, s1, q0, q1


@triton.jit
def _lloyd_step(c0, c1, n0, n1, s0, s1):
    return tl.where(n0 > 0, c0 + s0 / tl.maximum(n0, 1.0), c0), tl.where(n1 > 0, c1 + s1 / tl.maximum(n1, 1.0), c1)


@triton.jit
def _gmm2_kmeans_kernel(values_ptr, offsets_ptr, count_ptr, lo_ptr, scale_ptr, low_ptr, high_ptr, seeds_ptr,
                        centres_ptr, stats_ptr, steps, HAS_SEEDS: tl.constexpr, BISECTIONS: tl.constexpr,
                        BLOCK: tl.constexpr):
    """One program per group, as csrc/gmm_cpu.cpp's kmeans: the median split's halves' means (without seeds), Lloyd
    steps until the centres stop moving (at most ``steps``), the final split's statistics."""
    g = tl.program_id(0)
    start, end, lo, inv_scale = _segment(offsets_ptr, lo_ptr, scale_ptr, g)
    if HAS_SEEDS:
        c0 = tl.load(seeds_ptr + 2 * g)
        c1 = tl.load(seeds_ptr + 2 * g + 1)
    else:
        c0, c1, n0, n1, s0, s1, q0, q1 = _median_centres(values_ptr, start, end, tl.load(count_ptr + g), lo,
                                                         inv_scale, tl.load(low_ptr + g), tl.load(high_ptr + g),
                                                         BISECTIONS, BLOCK)
        c0, c1 = _lloyd_step(c0, c1, n0, n1, s0, s1)
    c0, c1, n0, n1, s0, s1, q0, q1 = _lloyd(values_ptr, start, end, lo, inv_scale, c0, c1, steps, BLOCK)
    tl.store(centres_ptr + 2 * g, c0)
    tl.store(centres_ptr + 2 * g + 1, c1)
    _store_statistics(stats_ptr + 7 * g, tl.zeros([], tl.float64), n0, n1, s0, s1, q0, q1)


@triton.jit
def _em(values_ptr, start, end, count, lo, inv_scale, w0, w1, m0, m1, v0, v1, log_likelihood_row, max_iter,
        skip, tol, reg_covar, eps, log_2pi, BLOCK: tl.constexpr):
    """scikit-learn's EM of one group from (w, m, v), writing each iteration's lower bound to its row; a group
    with ``skip`` set runs no iteration. Returns (w0, w1, m0, m1, v0, v1, iterations, converged)."""
    previous = tl.full([], -float("inf"), tl.float64)
    done = skip.to(tl.int32)
    converged = tl.full([], 0, tl.int32)
    iterations = tl.full([], 0, tl.int64)
    for iteration in range(max_iter):
        if done == 0:
            log_prob, r0, r1, d0, d1, q0, q1 = _estep_sums(values_ptr, start, end, lo, inv_scale, w0, w1, m0, m1, v0,
                                                           v1, log_2pi, BLOCK)
            nk0, m0, v0 = _component_update(r0, d0, q0, m0, reg_covar, eps)
            nk1, m1, v1 = _component_update(r1, d1, q1, m1, reg_covar, eps)
            w0 = nk0 / (nk0 + nk1)
            w1 = nk1 / (nk0 + nk1)
            lower_bound = log_prob / tl.maximum(count, 1.0)
            tl.store(log_likelihood_row + iteration, lower_bound)
            iterations += 1
            if tl.abs(lower_bound - previous) < tol:
                done = 1
                converged = 1
            previous = lower_bound
    for iteration in range(max_iter):
        tl.store(log_likelihood_row + iteration, float("nan"), mask=iteration >= iterations)
    return w0, w1, m0, m1, v0, v1, iterations, converged


@triton.jit
def _store_pair(ptr, g, first, second):
    tl.store(ptr + 2 * g, first)
    tl.store(ptr + 2 * g + 1, second)


@triton.jit
def _gmm2_em_kernel(values_ptr, offsets_ptr, count_ptr, lo_ptr, scale_ptr, weights_ptr, means_ptr, variances_ptr,
                    log_likelihood_ptr, n_iter_ptr, converged_ptr, max_iter, tol_bits, reg_covar_bits, eps_bits,
                    log_2pi_bits, BLOCK: tl.constexpr):
    """One program per group: EM from the params in weights/means/variances, written back in place."""
    g = tl.program_id(0)
    start, end, lo, inv_scale = _segment(offsets_ptr, lo_ptr, scale_ptr, g)
    w0, w1, m0, m1, v0, v1, iterations, converged = _em(
        values_ptr, start, end, tl.load(count_ptr + g), lo, inv_scale, tl.load(weights_ptr + 2 * g),
        tl.load(weights_ptr + 2 * g + 1), tl.load(means_ptr + 2 * g), tl.load(means_ptr + 2 * g + 1),
        tl.load(variances_ptr + 2 * g), tl.load(variances_ptr + 2 * g + 1), log_likelihood_ptr + g.to(tl.int64) * max_iter,
        max_iter, tl.zeros([], tl.int1), float64_from_bits(tol_bits), float64_from_bits(reg_covar_bits), float64_from_bits(eps_bits),
        float64_from_bits(log_2pi_bits), BLOCK)
    _store_pair(weights_ptr, g, w0, w1)
    _store_pair(means_ptr, g, m0, m1)
    _store_pair(variances_ptr, g, v0, v1)
    tl.store(n_iter_ptr + g, iterations)
    tl.store(converged_ptr + g, converged.to(tl.uint8))


@triton.jit
def _gmm2_fit_kernel(values_ptr, offsets_ptr, count_ptr, min_ptr, max_ptr, weights_ptr, means_ptr, variances_ptr,
                     log_likelihood_ptr, n_iter_ptr, converged_ptr, degenerate_ptr, fit_min_ptr, fit_max_ptr,
                     max_iter, steps, tol_bits, reg_covar_bits, eps_bits, log_2pi_bits, max_magnitude_bits,
                     MINMAX: tl.constexpr, KMEANS: tl.constexpr, BISECTIONS: tl.constexpr, BLOCK: tl.constexpr):
    """One program per group, the whole fit after the grouping (fastmix/api/gmm.py's ``fit_gmm2`` with init
    "kmeans" (KMEANS) or "quantile"): the normalisation, the init and its M-step, the EM, the degenerate
    placeholders."""
    g = tl.program_id(0)
    reg_covar = float64_from_bits(reg_covar_bits)
    eps = float64_from_bits(eps_bits)
    start = tl.load(offsets_ptr + g)
    end = tl.load(offsets_ptr + g + 1)
    count = tl.load(count_ptr + g)
    group_min = tl.load(min_ptr + g)
    group_max = tl.load(max_ptr + g)
    shift, scale, unusable = _normalisation(group_min, group_max, float64_from_bits(max_magnitude_bits), MINMAX)
    degenerate = (count < 2) | (group_max == group_min) | unusable
    inv_scale = 1.0 / scale
    low = (group_min - shift) / scale
    high = (group_max - shift) / scale
    c0, c1, n0, n1, s0, s1, q0, q1 = _median_centres(values_ptr, start, end, count, shift, inv_scale, low, high,
                                                     BISECTIONS, BLOCK)
    if KMEANS:
        c0, c1 = _lloyd_step(c0, c1, n0, n1, s0, s1)
        c0, c1, n0, n1, s0, s1, q0, q1 = _lloyd(values_ptr, start, end, shift, inv_scale, c0, c1, steps, BLOCK)
    nk0, m0, v0 = _component_update(n0, s0, q0, c0, reg_covar, eps)
    nk1, m1, v1 = _component_update(n1, s1, q1, c1, reg_covar, eps)
    w0 = nk0 / tl.maximum(count, 1.0)
    w1 = nk1 / tl.maximum(count, 1.0)
    w0, w1, m0, m1, v0, v1, iterations, converged = _em(
        values_ptr, start, end, count, shift, inv_scale, w0, w1, m0, m1, v0, v1,
        log_likelihood_ptr + g.to(tl.int64) * max_iter, max_iter, degenerate, float64_from_bits(tol_bits), reg_covar, eps,
        float64_from_bits(log_2pi_bits), BLOCK)
    _store_pair(weights_ptr, g, tl.where(degenerate, 1.0, w0), tl.where(degenerate, 0.0, w1))
    _store_pair(means_ptr, g, tl.where(degenerate, 0.0, m0), tl.where(degenerate, 0.0, m1))
    _store_pair(variances_ptr, g, tl.where(degenerate, reg_covar, v0), tl.where(degenerate, reg_covar, v1))
    tl.store(n_iter_ptr + g, iterations)
    tl.store(converged_ptr + g, converged != 0)
    tl.store(degenerate_ptr + g, degenerate)
    tl.store(fit_min_ptr + g, group_min if MINMAX else 0.0)
    tl.store(fit_max_ptr + g, group_max if MINMAX else 1.0)


# ------------------------------------------------------------------------------------------------------ launchers
def key_dtype(n_groups: int) -> torch.dtype:
    """The narrowest integer dtype holding every sort key 0..n_groups: fewer radix passes in the sort."""
    if n_groups < 256:
        return torch.uint8
    return torch.int16 if n_groups < 2 ** 15 else torch.int32


def gmm2_segments(values: torch.Tensor, groups: torch.Tensor, n_groups: int, omit_nonfinite: bool,
                  sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
                  hi: torch.Tensor, ok: torch.Tensor) -> None:
    """Fills the outputs of ``fastmix::gmm2_segments`` from contiguous 1-D ``values`` and ``groups`` (any integer
    dtype), and ``ok`` (2,) bool: no group out of range, no value rejected. Three launches and a stable sort."""
    n = values.numel()
    n_flags = triton.cdiv(n, GROUPING_BLOCK)
    flags = torch.empty(n_flags, dtype=torch.uint8, device=values.device)
    sorted_keys = order = keys = torch.empty(n, dtype=key_dtype(n_groups), device=values.device)
    if n:
        _gmm2_keys_kernel[(n_flags,)](values, groups, keys, flags, n, n_groups, OMIT_NONFINITE=omit_nonfinite,
                                      BLOCK=GROUPING_BLOCK, num_warps=4)
        sorted_keys, order = torch.sort(keys, stable=True)
        _gmm2_gather_kernel[(n_flags,)](values, order, sorted_keys, sorted_values, n, n_groups, BLOCK=GROUPING_BLOCK,
                                        num_warps=4)
    _gmm2_range_kernel[(n_groups,)](sorted_keys, sorted_values, flags, offsets, count, lo, hi, ok, n, n_flags,
                                    n_groups, n.bit_length() + 1, BLOCK=BLOCK, num_warps=SEGMENT_WARPS)


def gmm2_split_statistics(sorted_values, offsets, lo, scale, split, shifts, stats) -> None:
    _gmm2_split_kernel[(lo.size(0),)](sorted_values, offsets, lo, scale, split, shifts, stats, BLOCK=BLOCK,
                                      num_warps=SEGMENT_WARPS)


def gmm2_estep(sorted_values, offsets, lo, scale, weights, means, variances, stats) -> None:
    _gmm2_estep_kernel[(lo.size(0),)](sorted_values, offsets, lo, scale, weights, means, variances, stats,
                                      float64_bits(LOG_2PI), BLOCK=BLOCK, num_warps=SEGMENT_WARPS)


def gmm2_race(sorted_values, offsets, lo, scale, keys, centre, stats) -> None:
    _gmm2_race_kernel[(lo.size(0),)](sorted_values, offsets, lo, scale, keys, lo if centre is None else centre, stats,
                                     HAS_CENTRE=centre is not None, BLOCK=BLOCK, num_warps=SEGMENT_WARPS)


def gmm2_kmeans(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
                scale: torch.Tensor, low: torch.Tensor, high: torch.Tensor, seeds: torch.Tensor | None, steps: int,
                bisections: int, centres: torch.Tensor, stats: torch.Tensor) -> None:
    """Fills ``centres`` (G, 2) and ``stats`` (G, 7), contiguous float64, for every group (one program each)."""
    _gmm2_kmeans_kernel[(count.size(0),)](sorted_values, offsets, count, lo, scale, low, high,
                                          centres if seeds is None else seeds, centres, stats, steps,
                                          HAS_SEEDS=seeds is not None, BISECTIONS=bisections, BLOCK=BLOCK,
                                          num_warps=SEGMENT_WARPS)


def gmm2_em(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
            scale: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
            log_likelihood: torch.Tensor, n_iter: torch.Tensor, converged: torch.Tensor, max_iter: int, tol: float,
            reg_covar: float, eps: float) -> None:
    """Fits every group in place: ``weights``/``means``/``variances`` (G, 2) float64 hold the initial params;
    ``log_likelihood`` (G, max_iter) gets NaN after a group stopped; ``converged`` is uint8."""
    _gmm2_em_kernel[(count.size(0),)](sorted_values, offsets, count, lo, scale, weights, means, variances,
                                      log_likelihood, n_iter, converged, max_iter, float64_bits(tol),
                                      float64_bits(reg_covar), float64_bits(eps), float64_bits(LOG_2PI),
                                      BLOCK=BLOCK, num_warps=SEGMENT_WARPS)


def gmm2_fit(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
             hi: torch.Tensor, outputs: tuple[torch.Tensor, ...], minmax: bool, kmeans: bool, max_iter: int,
             steps: int, bisections: int, tol: float, reg_covar: float, eps: float, max_magnitude: float) -> None:
    """Fills ``outputs`` = (weights, means, variances, log_likelihood, n_iter, converged, degenerate, min, max), the
    fields of a GMM2Fit, in one launch."""
    _gmm2_fit_kernel[(count.size(0),)](sorted_values, offsets, count, lo, hi, *outputs, max_iter, steps,
                                       float64_bits(tol), float64_bits(reg_covar), float64_bits(eps),
                                       float64_bits(LOG_2PI), float64_bits(max_magnitude), MINMAX=minmax,
                                       KMEANS=kmeans, BISECTIONS=bisections, BLOCK=BLOCK, num_warps=SEGMENT_WARPS)


@triton.jit
def _gmm2_posterior_kernel(values_ptr, groups_ptr, weights_ptr, means_ptr, variances_ptr, min_ptr, max_ptr,
                           degenerate_ptr, out_ptr, ok_ptr, n, n_groups, BLOCK: tl.constexpr):
    """Eq. 8 per value, in float64, as fastmix/api/gmm.py's ``_clean_posterior``: the sigmoid of the clean
    (smaller-mean) component's log-density minus the other's, with the value normalised by its group's min and
    range; 1.0 for a finite value of a degenerate group. ok[program]: every group in range (a value of a group out of
    range reads group 0's fit)."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    held = offs < n
    v = tl.load(values_ptr + offs, mask=held, other=0.0).to(tl.float64)
    group = tl.load(groups_ptr + offs, mask=held, other=0)
    in_range = (group >= 0) & (group < n_groups)
    group = tl.where(in_range, group, 0)
    m0 = tl.load(means_ptr + 2 * group)
    m1 = tl.load(means_ptr + 2 * group + 1)
    second_clean = m1 < m0
    clean_mean = tl.where(second_clean, m1, m0)
    other_mean = tl.where(second_clean, m0, m1)
    v0 = tl.load(variances_ptr + 2 * group)
    v1 = tl.load(variances_ptr + 2 * group + 1)
    clean_precision = 1.0 / tl.sqrt(tl.where(second_clean, v1, v0))
    other_precision = 1.0 / tl.sqrt(tl.where(second_clean, v0, v1))
    w0 = tl.load(weights_ptr + 2 * group)
    w1 = tl.load(weights_ptr + 2 * group + 1)
    log_odds = ((tl.log(tl.where(second_clean, w1, w0)) + tl.log(clean_precision))
                - (tl.log(tl.where(second_clean, w0, w1)) + tl.log(other_precision)))
    group_min = tl.load(min_ptr + group)
    group_max = tl.load(max_ptr + group)
    x = (v - group_min) * (1.0 / tl.where(group_max > group_min, group_max - group_min, 1.0))
    clean_distance = (x - clean_mean) * clean_precision
    other_distance = (x - other_mean) * other_precision
    z = log_odds + 0.5 * (other_distance * other_distance - clean_distance * clean_distance)
    probability = 1.0 / (1.0 + tl.exp(-z))
    degenerate = tl.load(degenerate_ptr + group).to(tl.int1)
    probability = tl.where(degenerate & _is_finite(v), 1.0, probability)
    tl.store(out_ptr + offs, probability.to(out_ptr.dtype.element_ty), mask=held)
    tl.store(ok_ptr + pid, tl.min((~held | in_range).to(tl.int32), axis=0) != 0)


def gmm2_posterior(values: torch.Tensor, groups: torch.Tensor, fit: tuple[torch.Tensor, ...],
                   out: torch.Tensor) -> torch.Tensor:
    """Fills ``out`` (n,) from contiguous 1-D values and int64 groups; ``fit`` = (weights, means, variances (G, 2),
    min, max (G,)) contiguous float64 and degenerate (G,) bool. Returns per program whether its groups were in range
    (bool)."""
    n = values.numel()
    ok = torch.empty(triton.cdiv(n, BLOCK), dtype=torch.bool, device=values.device)
    if n:
        _gmm2_posterior_kernel[(ok.numel(),)](values, groups, *fit, out, ok, n, fit[3].numel(), BLOCK=BLOCK,
                                              num_warps=4)
    return ok
