"""Two-component GMM Triton kernels (BalanceMix paper, eq. 6-8): the grouping of the values, the passes of the inits
and of the distributed fit, the k-means init, the EM, and the whole default fit in one persistent launch.

Grouping (``gmm2_segments``): a stable counting sort. ``_gmm2_count_kernel`` counts each tile's values per sort
key (the value's group, or ``n_groups`` for an omitted value), takes each group's min and max in the tile and flags
bad input per tile; ``_gmm2_prefix_kernel`` turns the counts into each tile's first position per key, the segments'
offsets and each group's count, min and max, and reduces the flags; ``_gmm2_scatter_kernel`` writes each value at
its position (a value's position depends only on its index). No size depends on the data and nothing is read on
the host.

The passes of the other inits and of the distributed fit: one program per group, each pass over its contiguous
segment, the statistics summed in BLOCK-wide registers and reduced in a fixed order (deterministic, no atomics).
The default fit (``_gmm2_fit_kernel``): one persistent launch whose programs share every group's passes chunk by
chunk through a work queue (atomics order the work; the sums stay in a fixed order, so the fit is deterministic).
The M-step and the convergence test run on the device. Same semantics as csrc/gmm.h (scikit-learn's EM, statistics taken around the current
means). Float constants reach the kernels as their float64 bit pattern (``scalars.float64_bits``): a Python float
argument would arrive as float32 on a GPU.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from fastmix.kernels.triton import target
from fastmix.kernels.triton.scalars import float64_bits, float64_from_bits

LOG_2PI = math.log(2.0 * math.pi)
BLOCK = 256
"""Values per step of a segment pass (the width of the float64 accumulators), over SEGMENT_WARPS warps."""
SEGMENT_WARPS = 8
SEGMENT_STAGES = tl.constexpr(2)
"""Software-pipelining depth of the histogram, split and E-step passes (``tl.range``): the next BLOCK's values are
copied (cp.async) while the current one is computed. 3 would raise the fused fit's float32 registers from 124 to
158 (1 program per SM instead of 2)."""
SORT_TILE = 8192
"""Values per program of the counting sort (at least; see ``sort_tile``); a multiple of COUNT_BLOCK."""
SORT_LANES = 256 if os.environ.get("TRITON_INTERPRET") == "1" else 32
"""Values per step of the counting sort's scatter, each ranked among them by a LANES x LANES comparison (the
tally of a value's equal keys before and after it holds each count in 16 bits): on a GPU 32, one warp with one
value per thread; under the interpreter (read at import, as Triton does) 256, a step being a few numpy operations
(the tests run 32 too). Divides COUNT_BLOCK."""
COUNT_BLOCK = 1024
"""Values per step of the counting sort's count kernel (and keys per step of its offsets)."""
MIN_COUNT_BINS, MAX_COUNT_BINS = 64, 1024
"""The count kernel counts a tile's keys by a histogram per program (no atomics) for up to MAX_COUNT_BINS keys, in at
least MIN_COUNT_BINS bins (one compiled kernel for every G < 64), and by atomics beyond."""
PREFIX_KEYS = 16
PREFIX_TILES = 256
PREFIX_WARPS = 16
"""The prefix kernel scans the (tiles, G + 1) counts in (PREFIX_TILES, PREFIX_KEYS) blocks, one program of
PREFIX_WARPS warps per PREFIX_KEYS keys: 8 cells per thread (4 warps held 32, whose 64-bit addresses took all 255
registers and spilled on sm_80 once the tiles are more than one)."""


@triton.jit
def _is_finite(v):
    return tl.abs(v) < float("inf")  # false for NaN and +-inf


# ------------------------------------------------------------------------------------------------------- grouping
@triton.jit
def _sort_keys(values_ptr, groups_ptr, offs, held, n_groups):
    """(key, value, bad flags) of the values at ``offs``: the key is the value's group where it is kept, else
    ``n_groups`` (omitted: not finite, or a group out of range); flags 1 where the group is out of range, 2 where the
    value is not finite. Group ids of any integer dtype are loaded as they are."""
    v = tl.load(values_ptr + offs, mask=held, other=0.0)
    group = tl.load(groups_ptr + offs, mask=held, other=0)
    in_range = (group >= 0) & (group < n_groups)
    finite = _is_finite(v)
    key = tl.where(in_range & finite, group, n_groups).to(tl.int32)
    flags = tl.where(held & ~in_range, 1, 0) | tl.where(held & ~finite, 2, 0)
    return key, v, flags


@triton.jit
def _gmm2_count_kernel(values_ptr, groups_ptr, counts_ptr, lows_ptr, highs_ptr, flags_ptr, arrivals_ptr, n,
                       n_groups, tile, OMIT_NONFINITE: tl.constexpr, BLOCK: tl.constexpr, KEY_BINS: tl.constexpr):
    """Program p, the values in [p tile, (p + 1) tile): counts[p, k] = how many have key k (0 <= k <= G, G the omitted
    values), lows[p, g] and highs[p, g] the min and max of group g's (+inf and -inf without any); flags[p] = 1 if a
    group is out of range + 2 if a value is not finite and not omitted. Program 0 zeroes the prefix kernel's arrival
    counter. The counts: with KEY_BINS >= G + 1 (a power of two) a histogram per program (``tl.histogram``), stored
    once; with KEY_BINS = 0 atomics on the program's own row. The min and max by atomics on its own rows, only where
    a value goes beyond the row's current one. Integer sums, min and max do not depend on their order."""
    p = tl.program_id(0)
    row = p.to(tl.int64) * (n_groups + 1)
    extremes_row = p.to(tl.int64) * n_groups
    for key_start in range(0, n_groups + 1, BLOCK):
        keys = key_start + tl.arange(0, BLOCK)
        if KEY_BINS == 0:
            tl.store(counts_ptr + row + keys, tl.zeros([BLOCK], tl.int64), mask=keys <= n_groups)
        tl.store(lows_ptr + extremes_row + keys, tl.full([BLOCK], float("inf"), lows_ptr.dtype.element_ty),
                 mask=keys < n_groups)
        tl.store(highs_ptr + extremes_row + keys, tl.full([BLOCK], -float("inf"), highs_ptr.dtype.element_ty),
                 mask=keys < n_groups)
    if p == 0:
        tl.store(arrivals_ptr, 0)
    tl.debug_barrier()  # the initialised rows before any thread's atomics
    flags = tl.zeros([BLOCK], tl.int32)
    if KEY_BINS > 0:
        histogram = tl.zeros([KEY_BINS], tl.int32)
    tile_start = p.to(tl.int64) * tile
    for block_start in range(0, tl.minimum(tile, n - tile_start), BLOCK):
        offs = tile_start + block_start + tl.arange(0, BLOCK)
        held = offs < n
        key, v, bad = _sort_keys(values_ptr, groups_ptr, offs, held, n_groups)
        kept = held & (key < n_groups)
        if KEY_BINS > 0:
            histogram += tl.histogram(key, KEY_BINS, mask=held)
        else:
            tl.atomic_add(counts_ptr + row + key, tl.full([BLOCK], 1, tl.int64), mask=held, sem="relaxed",
                          scope="gpu")
        # Only a value beyond the row's current min (max) needs the atomic. The row is read from L2 (``.cg``: the
        # atomics do not update L1); a read that misses a red still in flight sees a min above the true one (a max
        # below), so a needed update is never skipped. After a few values per group and tile almost none remain.
        lows, highs = lows_ptr + extremes_row + key, highs_ptr + extremes_row + key
        below = kept & (v < tl.load(lows, mask=kept, other=float("inf"), cache_modifier=".cg"))
        above = kept & (v > tl.load(highs, mask=kept, other=-float("inf"), cache_modifier=".cg"))
        tl.atomic_min(lows, v, mask=below, sem="relaxed", scope="gpu")
        tl.atomic_max(highs, v, mask=above, sem="relaxed", scope="gpu")
        flags |= bad
    if KEY_BINS > 0:
        keys = tl.arange(0, KEY_BINS)
        tl.store(counts_ptr + row + keys, histogram.to(tl.int64), mask=keys <= n_groups)
    bad_group = tl.max(flags & 1, axis=0)
    bad_value = (tl.max(flags & 2, axis=0) // 2) * (0 if OMIT_NONFINITE else 1)
    tl.store(flags_ptr + p, (bad_group + 2 * bad_value).to(tl.uint8))


@triton.jit
def _gmm2_prefix_kernel(counts_ptr, lows_ptr, highs_ptr, flags_ptr, totals_ptr, offsets_ptr, count_ptr, lo_ptr,
                        hi_ptr, ok_ptr, arrivals_ptr, n_tiles, n_groups, KEYS: tl.constexpr, TILES: tl.constexpr,
                        BLOCK: tl.constexpr):
    """Program b, keys [b KEYS, (b + 1) KEYS): counts[p, k] becomes the number of values with key k in the tiles
    before p (an exclusive scan down each column, TILES rows at a time), totals[k] their sum; for each group its
    count, min and max (min = max = 0 for an empty group). The last program to arrive (the others' totals are then
    visible) writes offsets[k] = the sum of totals[j < k], k = 0..G (the first position of key k; offsets[G]: the
    first omitted value's), and reduces the flags: ok[0] no group out of range, ok[1] no value rejected.
    Fixed-order integer sums: deterministic."""
    keys = tl.program_id(0) * KEYS + tl.arange(0, KEYS)
    real = keys <= n_groups
    group = keys < n_groups
    carry = tl.zeros([KEYS], tl.int64)
    low = tl.full([KEYS], float("inf"), lows_ptr.dtype.element_ty)
    high = tl.full([KEYS], -float("inf"), highs_ptr.dtype.element_ty)
    for tile_start in range(0, n_tiles, TILES):
        tiles = (tile_start + tl.arange(0, TILES)).to(tl.int64)
        in_tiles = (tiles < n_tiles)[:, None]
        cells = counts_ptr + tiles[:, None] * (n_groups + 1) + keys[None, :]
        counts = tl.load(cells, mask=in_tiles & real[None, :], other=0)
        tl.store(cells, carry[None, :] + tl.cumsum(counts, axis=0) - counts, mask=in_tiles & real[None, :])
        carry += tl.sum(counts, axis=0)
        extremes = tiles[:, None] * n_groups + keys[None, :]
        low = tl.minimum(low, tl.min(tl.load(lows_ptr + extremes, mask=in_tiles & group[None, :],
                                             other=float("inf")), axis=0))
        high = tl.maximum(high, tl.max(tl.load(highs_ptr + extremes, mask=in_tiles & group[None, :],
                                               other=-float("inf")), axis=0))
    tl.store(totals_ptr + keys, carry, mask=real)
    empty = carry == 0
    tl.store(count_ptr + keys, carry.to(tl.float64), mask=group)
    tl.store(lo_ptr + keys, tl.where(empty, 0.0, low.to(tl.float64)), mask=group)
    tl.store(hi_ptr + keys, tl.where(empty, 0.0, high.to(tl.float64)), mask=group)
    tl.debug_barrier()  # every thread's totals before the arrival below
    if tl.atomic_add(arrivals_ptr, 1, sem="acq_rel", scope="gpu") == tl.num_programs(0) - 1:
        first = tl.zeros([], tl.int64)
        for key_start in range(0, n_groups + 1, BLOCK):
            all_keys = key_start + tl.arange(0, BLOCK)
            totals = tl.load(totals_ptr + all_keys, mask=all_keys <= n_groups, other=0, cache_modifier=".cg")
            tl.store(offsets_ptr + all_keys, first + tl.cumsum(totals, axis=0) - totals, mask=all_keys <= n_groups)
            first += tl.sum(totals, axis=0)
        flags = tl.zeros([BLOCK], tl.int32)
        for flag_start in range(0, n_tiles, BLOCK):
            offs = flag_start + tl.arange(0, BLOCK)
            flags |= tl.load(flags_ptr + offs, mask=offs < n_tiles, other=0).to(tl.int32)
        tl.store(ok_ptr, tl.max(flags & 1, axis=0) == 0)
        tl.store(ok_ptr + 1, tl.max(flags & 2, axis=0) == 0)


@triton.jit
def _gmm2_scatter_kernel(values_ptr, groups_ptr, starts_ptr, offsets_ptr, sorted_values_ptr, n, n_groups, tile,
                         LANES: tl.constexpr):
    """Program p: each value of its tile to offsets[key] + starts[p, key] + (values of its key before it in the
    tile), 0 for an omitted value: a stable counting sort. LANES values per step (one per thread of a warp), each
    compares its key with the step's others (a [j, i] comparison reduced over j within the thread) for its rank
    among them and whether it is its key's last; that one advances starts[p, key]."""
    p = tl.program_id(0)
    row = starts_ptr + p.to(tl.int64) * (n_groups + 1)
    lanes = tl.arange(0, LANES)
    # Value j's part in value i's tally where their keys are equal: 1 if j comes before i (the rank, low 16 bits),
    # 2^16 if it comes after (the values of its key after it).
    tally_weight = tl.where(lanes[:, None] < lanes[None, :], 1, tl.where(lanes[:, None] > lanes[None, :], 1 << 16, 0))
    tile_start = p.to(tl.int64) * tile
    tile_values = tl.minimum(tile, n - tile_start)
    held = lanes < tile_values
    key, v, _ = _sort_keys(values_ptr, groups_ptr, tile_start + lanes, held, n_groups)
    for step_start in range(0, tile_values, LANES):
        # The next step's values, loaded while this one is placed (their latency off the step's critical path).
        next_held = step_start + LANES + lanes < tile_values
        next_key, next_v, _ = _sort_keys(values_ptr, groups_ptr, tile_start + step_start + LANES + lanes, next_held,
                                         n_groups)
        key = tl.where(held, key, -1)  # no value: its own key
        tally = tl.sum(tl.where(key[:, None] == key[None, :], tally_weight, 0), axis=0)
        rank = tally & 0xFFFF
        start = tl.load(row + key, mask=held, other=0)
        tl.debug_barrier()  # every thread read its key's start before the last of that key advances it
        position = tl.load(offsets_ptr + key, mask=held, other=0) + start + rank
        tl.store(sorted_values_ptr + position, tl.where(key < n_groups, v, 0.0), mask=held)
        tl.store(row + key, start + rank + 1, mask=held & (tally < 1 << 16))
        tl.debug_barrier()  # the advanced starts before the next step reads them
        key, v, held = next_key, next_v, next_held


# ------------------------------------------------------------------------------------------- per-group arithmetic
@triton.jit
def _normalisation(lo, hi, max_magnitude, max_reciprocal, MINMAX: tl.constexpr):
    """(shift, scale, unusable) of one group, as fastmix/methods/gmm.py's ``normalisation`` (``max_reciprocal``: the
    values' dtype's largest finite value)."""
    magnitude = tl.maximum(tl.abs(lo), tl.abs(hi))
    if MINMAX:
        span = hi - lo
        unusable = ~_is_finite(span) | ((span > 0) & ~(1.0 / span <= max_reciprocal))
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
    for block_start in tl.range(start, end, BLOCK, num_stages=SEGMENT_STAGES):
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
def _lloyd_band_sums(source_ptr, band_ptr, count, lo, inv_scale, band_from, band_to, BLOCK: tl.constexpr):
    """One pass over ``count`` values from ``source_ptr`` in three zones of their x: below ``band_from``, in
    [band_from, band_to) (the band) and at or above ``band_to``. Returns the counts below and in the band, and the
    sum of x (float64) below, in and above it; copies the band's values, in order, to ``band_ptr`` (which may be
    ``source_ptr``: each store lands at or before values already read). Loads bypass L1 (``.cg``): the band was
    written by other programs."""
    n_below = tl.zeros([BLOCK], tl.int32)
    sum_below = tl.zeros([BLOCK], tl.float64)
    sum_band = tl.zeros([BLOCK], tl.float64)
    sum_above = tl.zeros([BLOCK], tl.float64)
    kept = tl.zeros([], tl.int32)
    for block_start in range(0, count, BLOCK):
        offs = block_start + tl.arange(0, BLOCK)
        ok = offs < count
        v = tl.load(source_ptr + offs, mask=ok, other=0.0, cache_modifier=".cg")
        x = tl.where(ok, (v.to(tl.float64) - lo) * inv_scale, 0.0)
        below = ok & (x < band_from)
        above = ok & (x >= band_to)
        in_band = ok & ~below & ~above
        n_below += below.to(tl.int32)
        sum_below += tl.where(below, x, 0.0)
        sum_band += tl.where(in_band, x, 0.0)
        sum_above += tl.where(above, x, 0.0)
        kept_here = in_band.to(tl.int32)
        tl.store(band_ptr + kept + tl.cumsum(kept_here, axis=0) - kept_here, v, mask=in_band)
        kept += tl.sum(kept_here, axis=0)
    return tl.sum(n_below), kept, tl.sum(sum_below), tl.sum(sum_band), tl.sum(sum_above)


@triton.jit
def _log1p_unit(u):
    """log(1 + u) for u in [0, 1]: float32 as u q(u), q the degree-7 Chebyshev interpolant of log(1 + u) / u (8
    multiply-adds, within 2.1e-7 absolute and 3.7e-7 relative, exact at u = 0, where libdevice's logf takes about
    30 instructions); float64 by ``tl.log``."""
    if u.dtype == tl.float32:
        q = -0.00837115292
        q = q * u + 0.0434939004
        q = q * u - 0.106850028
        q = q * u + 0.176874772
        q = q * u - 0.244747743
        q = q * u + 0.332719296
        q = q * u - 0.499971747
        q = q * u + 0.999999762
        result = q * u
    else:
        result = tl.log(1.0 + u)
    return result


@triton.jit
def _estep_block(v, ok, shift, inverse, p0, p1, scaled_mean0, scaled_mean1, offset0, offset1, mean0, mean1,
                 log_prob_acc, r0_acc, r1_acc, d0_acc, d1_acc, q0_acc, q1_acc, MASKED: tl.constexpr):
    """One BLOCK of ``_estep_sums``: the running sums after the values ``v`` (only those where ``ok`` if MASKED).
    ``p_k`` is sqrt(1/2) / sigma_k, so that log(w_k N(x)) = offset_k - z_k^2 with z_k = x p_k - scaled_mean_k."""
    x = (v - shift) * inverse
    if MASKED:
        x = tl.where(ok, x, 0.0)
    z0 = x * p0 - scaled_mean0
    z1 = x * p1 - scaled_mean1
    a0 = offset0 - z0 * z0
    a1 = offset1 - z1 * z1
    top = tl.maximum(a0, a1)
    other = tl.exp(tl.minimum(a0, a1) - top)
    total = 1.0 + other
    r_top = 1.0 / total
    r_other = other * r_top
    first_on_top = a0 >= a1
    r0 = tl.where(first_on_top, r_top, r_other)
    r1 = tl.where(first_on_top, r_other, r_top)
    log_prob = top + _log1p_unit(other)
    if MASKED:
        r0 = tl.where(ok, r0, 0.0)
        r1 = tl.where(ok, r1, 0.0)
        log_prob = tl.where(ok, log_prob, 0.0)
    dx0 = x - mean0
    dx1 = x - mean1
    return (log_prob_acc + log_prob, r0_acc + r0, r1_acc + r1, d0_acc + r0 * dx0, d1_acc + r1 * dx1,
            q0_acc + r0 * dx0 * dx0, q1_acc + r1 * dx1 * dx1)


@triton.jit
def _estep_sums(values_ptr, start, end, lo, inv_scale, w0, w1, m0, m1, v0, v1, log_2pi, BLOCK: tl.constexpr):
    """One E-step over a group's segment (csrc/gmm.h ``accumulate``): sum log p(x), and per component sum r_k,
    sum r_k (x - mu_k), sum r_k (x - mu_k)^2. The per-value arithmetic and the BLOCK lanes' running sums are in the
    values' dtype (float32 values: float32 exp and log instead of float64 ones, the bulk of the cost), the sum over
    the lanes and everything per group in float64. Whole BLOCKs without masks, then the last partial one."""
    dtype = values_ptr.dtype.element_ty
    offset0 = (-0.5 * log_2pi - 0.5 * tl.log(v0) + tl.log(w0)).to(dtype)
    offset1 = (-0.5 * log_2pi - 0.5 * tl.log(v1) + tl.log(w1)).to(dtype)
    p0 = 1.0 / tl.sqrt(v0 + v0)  # sqrt(1/2) / sigma
    p1 = 1.0 / tl.sqrt(v1 + v1)
    scaled_mean0 = (m0 * p0).to(dtype)
    scaled_mean1 = (m1 * p1).to(dtype)
    mean0 = m0.to(dtype)
    mean1 = m1.to(dtype)
    shift = lo.to(dtype)
    inverse = inv_scale.to(dtype)
    p0 = p0.to(dtype)
    p1 = p1.to(dtype)
    log_prob_acc = tl.zeros([BLOCK], dtype=dtype)
    r0_acc, r1_acc, d0_acc, d1_acc, q0_acc, q1_acc = (log_prob_acc, log_prob_acc, log_prob_acc, log_prob_acc,
                                                      log_prob_acc, log_prob_acc)
    whole_end = start + (end - start) // BLOCK * BLOCK
    for block_start in tl.range(start, whole_end, BLOCK, num_stages=SEGMENT_STAGES):
        v = tl.load(values_ptr + block_start + tl.arange(0, BLOCK))
        log_prob_acc, r0_acc, r1_acc, d0_acc, d1_acc, q0_acc, q1_acc = _estep_block(
            v, None, shift, inverse, p0, p1, scaled_mean0, scaled_mean1, offset0, offset1, mean0, mean1,
            log_prob_acc, r0_acc, r1_acc, d0_acc, d1_acc, q0_acc, q1_acc, MASKED=False)
    if whole_end < end:
        offs = whole_end + tl.arange(0, BLOCK)
        ok = offs < end
        v = tl.load(values_ptr + offs, mask=ok, other=0.0)
        log_prob_acc, r0_acc, r1_acc, d0_acc, d1_acc, q0_acc, q1_acc = _estep_block(
            v, ok, shift, inverse, p0, p1, scaled_mean0, scaled_mean1, offset0, offset1, mean0, mean1,
            log_prob_acc, r0_acc, r1_acc, d0_acc, d1_acc, q0_acc, q1_acc, MASKED=True)
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
def _grid_step_histogram(values_ptr, start, end, lo, inv_scale, low, high, BISECTIONS: tl.constexpr,
                         BLOCK: tl.constexpr):
    """The histogram (2^BISECTIONS int32 bins) of the grid step of each value of [start, end): the largest
    j < 2^BISECTIONS with split_j <= x, found by comparing with the very splits a bisection would compare with."""
    STEPS: tl.constexpr = 1 << BISECTIONS
    grid_step_size = 1.0 / tl.full([], STEPS, tl.float64)
    histogram = tl.zeros([STEPS], tl.int32)
    for block_start in tl.range(start, end, BLOCK, num_stages=SEGMENT_STAGES):
        x, in_segment = _normalised_block(values_ptr, block_start, end, lo, inv_scale, BLOCK)
        step = tl.zeros([BLOCK], tl.int32)
        for bit in tl.static_range(BISECTIONS):
            candidate = step + (1 << (BISECTIONS - 1 - bit))
            step = tl.where(x >= _grid_split(low, high, candidate, grid_step_size), candidate, step)
        histogram += tl.histogram(step, STEPS, mask=in_segment)
    return histogram


@triton.jit
def _median_split(histogram, count, low, high, BISECTIONS: tl.constexpr):
    """The median split over the 2^BISECTIONS-step grid of [low, high] from a group's grid-step histogram: the
    smallest grid step j with at least half the values below split_j (the histogram's prefix sums count the values
    below every split at once)."""
    STEPS: tl.constexpr = 1 << BISECTIONS
    below = tl.cumsum(histogram, axis=0).to(tl.float64)  # below[j - 1]: the values below split_j
    steps = tl.arange(0, STEPS) + 1
    enough = (below >= count / 2.0) & (steps < STEPS)  # j = 2^BISECTIONS always qualifies
    return _grid_split(low, high, tl.min(tl.where(enough, steps, STEPS), axis=0), 1.0 / tl.full([], STEPS, tl.float64))


@triton.jit
def _median_centres(values_ptr, start, end, count, lo, inv_scale, low, high, BISECTIONS: tl.constexpr,
                    BLOCK: tl.constexpr):
    """The median split (``_median_split``) and its halves' statistics around their midpoints: (c0, c1, n0, n1,
    s0, s1, q0, q1). Two passes: the grid-step histogram, then the halves' statistics."""
    split = _median_split(_grid_step_histogram(values_ptr, start, end, lo, inv_scale, low, high, BISECTIONS, BLOCK),
                          count, low, high, BISECTIONS)
    c0 = 0.5 * (low + split)
    c1 = 0.5 * (split + high)
    n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, start, end, lo, inv_scale, split, c0, c1, BLOCK)
    return c0, c1, n0, n1, s0, s1, q0, q1


@triton.jit
def _lloyd(values_ptr, start, end, lo, inv_scale, c0, c1, steps, BLOCK: tl.constexpr):
    """At most ``steps`` Lloyd steps from (c0, c1), stopping once the centres stop moving or a step's split leaves
    as many values below it as the previous step's (the same partition; further steps would only move the centres by
    their rounding), then the final split's statistics: (c0, c1, n0, n1, s0, s1, q0, q1)."""
    moving = tl.full([], 1, tl.int32)
    previous_below = tl.full([], -1.0, tl.float64)
    for _ in range(steps):
        if moving != 0:
            n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, start, end, lo, inv_scale, (c0 + c1) / 2.0, c0, c1,
                                                 BLOCK)
            new0, new1 = _lloyd_step(c0, c1, n0, n1, s0, s1)
            moving = (((new0 != c0) | (new1 != c1)) & (n0 != previous_below)).to(tl.int32)
            previous_below = n0
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
    steps until the centres stop moving or the partition repeats (``_lloyd``, at most ``steps``), the final split's
    statistics."""
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
def _m_step(log_prob, r0, r1, d0, d1, q0, q1, m0, m1, count, reg_covar, eps):
    """scikit-learn's M-step from one E-step's statistics around the means (m0, m1), and the lower bound (the mean
    log-likelihood): (w0, w1, m0, m1, v0, v1, lower_bound)."""
    nk0, m0, v0 = _component_update(r0, d0, q0, m0, reg_covar, eps)
    nk1, m1, v1 = _component_update(r1, d1, q1, m1, reg_covar, eps)
    return nk0 / (nk0 + nk1), nk1 / (nk0 + nk1), m0, m1, v0, v1, log_prob / tl.maximum(count, 1.0)


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
            w0, w1, m0, m1, v0, v1, lower_bound = _m_step(log_prob, r0, r1, d0, d1, q0, q1, m0, m1, count,
                                                          reg_covar, eps)
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


# ---------------------------------------------------------------------------------- the default fit: a work queue
HISTOGRAM_PASS, SPLIT_PASS, EM_PASS, LLOYD_PASS = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
"""The kinds of pass over a group's values in the fused fit (state column 0 holds the next one): the grid-step
histogram, a hard split with its statistics around the centres (the halves, the final split), an E-step, a Lloyd
step (counts and sums of x per side, over the group's band when it holds the split: ``_lloyd_band_sums``)."""
FINISHED = tl.constexpr(1 << 30)
"""A group's ready counter once its fit is written: every later work item of the group is skipped."""
STATE_WIDTH = tl.constexpr(17)
"""float64 per group of the fused fit's state: kind, split, c0, c1, Lloyd steps run (-1 before the halves pass;
``steps`` once the next split pass is the final one), w0, w1, m0, m1, v0, v1, the previous lower bound, the EM
iterations run, the values below the previous Lloyd step's split (-1 before the first), and for the next Lloyd
step the band it keeps ([from, to) of x) and whether it reads the band kept by the step before (1) or the group."""
BAND_COLUMN = tl.constexpr(8)
"""A chunk slot's partial row keeps its band from one Lloyd step to the next from this column on: the band's size
(its values are at the chunk's own positions of the fit's band buffer), then the count and the sum of x of the
chunk's values below the band and of those above it. Columns 0-6 hold the pass's statistics; the histogram pass,
which uses the whole row, comes before any Lloyd step."""
FLOAT32_FIT_BLOCK = 1024
"""Values per step of the fused fit's passes over float32 values: 4 per thread, 4 KB in flight per program against
the memory latency, at the same programs per SM as 256 (its registers); float64 values keep BLOCK (1024 would
leave 1 program per SM)."""
CHUNK = 16384
"""Values per work item of the fused fit (one chunk of one group's segment in one pass), twice as many on a GPU once
the values give every program such a chunk (``fit_chunk``). With the Lloyd steps' bands most passes read little, so
each item's fixed cost (claim, lookups, arrival) counts; larger chunks lengthen each group's chain of passes. The
queue model (benchmarks/gmm_gpu_model.py, docs/gmm_gpu.md) gives 16,384 the shortest fit on the benchmark's 9.46 M
values and 32,768 at 18.9 M, on paper."""
FIT_REGISTERS = 128
"""Registers per thread of the fused fit over float64 values (sm_80 and sm_90, uncapped), and the cap of float32
values before sm_90 (uncapped 164 on sm_80, 1 program per SM; capped 122 without spills): 2 programs of 8 warps per
SM."""
FIT_REGISTER_CAP = 80
"""The fused fit's register cap (launch option ``maxnreg``) for float32 values on sm_90 and newer: 3 programs of 8
warps per SM instead of 2 (124 registers uncapped), for 12 B spilled outside the loops over values
(tests/test_gpu_compile.py bounds the bytes and reads the SASS). Not before sm_90, where the same cap spills 44 B
inside those loops, nor for float64 values (80 B)."""
INTERPRETED_PROGRAMS = 2
"""Programs of the fused fit under the interpreter, which runs them one after another (program 0 does it all)."""
REVERSED_CLAIMS = False
"""Claim each pass's chunks last first (the tests' way to change the order in which chunks arrive)."""


@triton.jit
def _slot_sums(rows, n_chunks, WIDTH: tl.constexpr):
    """The 7 statistics of a pass over a group: its chunks' partial rows summed in chunk order (``.cg``: read from
    L2, where the other programs' stores are)."""
    s0 = tl.zeros([], tl.float64)
    s1, s2, s3, s4, s5, s6 = s0, s0, s0, s0, s0, s0
    for chunk in range(n_chunks):
        row = rows + chunk * WIDTH
        s0 += tl.load(row, cache_modifier=".cg")
        s1 += tl.load(row + 1, cache_modifier=".cg")
        s2 += tl.load(row + 2, cache_modifier=".cg")
        s3 += tl.load(row + 3, cache_modifier=".cg")
        s4 += tl.load(row + 4, cache_modifier=".cg")
        s5 += tl.load(row + 5, cache_modifier=".cg")
        s6 += tl.load(row + 6, cache_modifier=".cg")
    return s0, s1, s2, s3, s4, s5, s6


@triton.jit
def _finish_group(g, w0, w1, m0, m1, v0, v1, iterations, converged, degenerate, group_min, group_max, reg_covar,
                  weights_ptr, means_ptr, variances_ptr, log_likelihood_ptr, n_iter_ptr, converged_ptr,
                  degenerate_ptr, fit_min_ptr, fit_max_ptr, max_iter, MINMAX: tl.constexpr):
    """Writes group g's fields of the GMM2Fit (a degenerate group's placeholders) and NaN in the lower bounds of
    the iterations it did not run."""
    _store_pair(weights_ptr, g, tl.where(degenerate, 1.0, w0), tl.where(degenerate, 0.0, w1))
    _store_pair(means_ptr, g, tl.where(degenerate, 0.0, m0), tl.where(degenerate, 0.0, m1))
    _store_pair(variances_ptr, g, tl.where(degenerate, reg_covar, v0), tl.where(degenerate, reg_covar, v1))
    tl.store(n_iter_ptr + g, iterations)
    tl.store(converged_ptr + g, converged)
    tl.store(degenerate_ptr + g, degenerate)
    tl.store(fit_min_ptr + g, group_min if MINMAX else 0.0)
    tl.store(fit_max_ptr + g, group_max if MINMAX else 1.0)
    for iteration in range(max_iter):
        tl.store(log_likelihood_ptr + g.to(tl.int64) * max_iter + iteration, float("nan"),
                 mask=iteration >= iterations)


@triton.jit
def _step(g, kind, row, partial_rows, n_chunks, count, group_min, group_max, low, high, pass_index, reg_covar, eps,
          tol, weights_ptr, means_ptr, variances_ptr, log_likelihood_ptr, n_iter_ptr, converged_ptr, degenerate_ptr,
          fit_min_ptr, fit_max_ptr, max_iter, steps, MINMAX: tl.constexpr, KMEANS: tl.constexpr,
          BISECTIONS: tl.constexpr):
    """The step after group g's pass of ``kind`` (-1: degenerate, no pass), from its chunks' partial rows: writes
    the next pass's state or the fit's fields, and returns the group's next ready value (pass_index + 1 or
    FINISHED)."""
    WIDTH: tl.constexpr = 1 << BISECTIONS
    released = pass_index + 1
    finished = tl.full([], FINISHED, tl.int32)
    no = tl.zeros([], tl.int1)
    w0 = tl.zeros([], tl.float64)
    w1 = w0
    m0 = w0
    m1 = w0
    v0 = w0
    v1 = w0
    initialise = no
    if kind == HISTOGRAM_PASS:
        histogram = tl.zeros([WIDTH], tl.float64)
        for chunk in range(n_chunks):
            histogram += tl.load(partial_rows + chunk * WIDTH + tl.arange(0, WIDTH), cache_modifier=".cg")
        split = _median_split(histogram, count, low, high, BISECTIONS)
        _store_split_pass(row, tl.full([], SPLIT_PASS, tl.int32), split, 0.5 * (low + split), 0.5 * (split + high),
                          -1.0, -1.0)
    elif (kind == SPLIT_PASS) | (kind == LLOYD_PASS):
        _, n0, n1, s0, s1, q0, q1 = _slot_sums(partial_rows, n_chunks, WIDTH)
        c0 = tl.load(row + 2, cache_modifier=".cg")
        c1 = tl.load(row + 3, cache_modifier=".cg")
        lloyd_steps = tl.load(row + 4, cache_modifier=".cg")
        if kind == LLOYD_PASS:  # sums of x: around the centres
            s0 -= n0 * c0
            s1 -= n1 * c1
        new0, new1 = _lloyd_step(c0, c1, n0, n1, s0, s1)
        lloyd = kind == LLOYD_PASS
        if (lloyd | (lloyd_steps < 0)) & tl.full([], KMEANS, tl.int1):  # a Lloyd step or the halves
            # A Lloyd step is next, or after the last step the final split. The last: its centres did not move (a
            # fixed point), its split left as many values below it as the previous step's (the same partition), or
            # the steps ran out.
            last = tl.where(lloyd, ((new0 == c0) & (new1 == c1)) | (lloyd_steps + 1 >= steps)
                            | (n0 == tl.load(row + 13, cache_modifier=".cg")), steps == 0)
            no_band = tl.full([], float("inf"), tl.float64)
            band_from = tl.where(lloyd, tl.load(row + 14, cache_modifier=".cg"), no_band)
            band_to = tl.where(lloyd, tl.load(row + 15, cache_modifier=".cg"), -no_band)
            _store_next_split(row, tl.load(row + 1, cache_modifier=".cg"), new0, new1,
                              tl.where(last, steps.to(tl.float64), lloyd_steps + 1.0),
                              tl.where(lloyd, n0, -1.0), band_from, band_to, ~last)
        else:  # the final split (the halves for "quantile"): the init's M-step
            nk0, m0, v0 = _component_update(n0, s0, q0, c0, reg_covar, eps)
            nk1, m1, v1 = _component_update(n1, s1, q1, c1, reg_covar, eps)
            w0 = nk0 / tl.maximum(count, 1.0)
            w1 = nk1 / tl.maximum(count, 1.0)
            initialise = ~no
    if initialise:
        if max_iter > 0:
            tl.store(row, tl.full([], EM_PASS, tl.float64))
            _store_params(row, w0, w1, m0, m1, v0, v1, -float("inf"), 0.0)
        else:
            _finish_group(g, w0, w1, m0, m1, v0, v1, tl.zeros([], tl.int64), no, no, group_min, group_max,
                          reg_covar, weights_ptr, means_ptr, variances_ptr, log_likelihood_ptr, n_iter_ptr,
                          converged_ptr, degenerate_ptr, fit_min_ptr, fit_max_ptr, max_iter, MINMAX)
            released = finished
    if kind == EM_PASS:
        log_prob, r0, r1, d0, d1, q0, q1 = _slot_sums(partial_rows, n_chunks, WIDTH)
        w0, w1, m0, m1, v0, v1, lower_bound = _m_step(log_prob, r0, r1, d0, d1, q0, q1,
                                                      tl.load(row + 7, cache_modifier=".cg"),
                                                      tl.load(row + 8, cache_modifier=".cg"), count, reg_covar, eps)
        iteration = tl.load(row + 12, cache_modifier=".cg").to(tl.int64)
        tl.store(log_likelihood_ptr + g.to(tl.int64) * max_iter + iteration, lower_bound)
        converged = tl.abs(lower_bound - tl.load(row + 11, cache_modifier=".cg")) < tol
        if converged | (iteration + 1 == max_iter):
            _finish_group(g, w0, w1, m0, m1, v0, v1, iteration + 1, converged, no, group_min, group_max,
                          reg_covar, weights_ptr, means_ptr, variances_ptr, log_likelihood_ptr, n_iter_ptr,
                          converged_ptr, degenerate_ptr, fit_min_ptr, fit_max_ptr, max_iter, MINMAX)
            released = finished
        else:
            _store_params(row, w0, w1, m0, m1, v0, v1, lower_bound, (iteration + 1).to(tl.float64))
    if kind < 0:
        _finish_group(g, w0, w1, m0, m1, v0, v1, tl.zeros([], tl.int64), no, ~no, group_min, group_max,
                      reg_covar, weights_ptr, means_ptr, variances_ptr, log_likelihood_ptr, n_iter_ptr,
                      converged_ptr, degenerate_ptr, fit_min_ptr, fit_max_ptr, max_iter, MINMAX)
        released = finished
    return released


@triton.jit
def _store_split_pass(row, kind, split, c0, c1, lloyd_steps, previous_below):
    tl.store(row, kind.to(tl.float64))
    tl.store(row + 1, split)
    tl.store(row + 2, c0)
    tl.store(row + 3, c1)
    tl.store(row + 4, lloyd_steps)
    tl.store(row + 13, previous_below)


@triton.jit
def _store_next_split(row, split, c0, c1, lloyd_steps, below, band_from, band_to, lloyd):
    """The pass after a split at ``split`` that moved the centres to (c0, c1): the next Lloyd step (``lloyd``) or
    the final split, at (c0 + c1) / 2. A Lloyd step keeps as the group's band the values between its split and
    twice the last move ahead, within the band [band_from, band_to] the step before kept if that holds its split
    (then it passes over that band alone); as ``LloydBand::step`` in csrc/gmm_cpu.cpp."""
    next_split = (c0 + c1) / 2.0
    reach = 2.0 * (next_split - split)
    holds = (band_from <= next_split) & (next_split <= band_to)
    ahead = next_split + reach
    moving_up = _is_finite(ahead) & (reach > 0)
    moving_down = _is_finite(ahead) & (reach < 0)
    next_to = tl.where(moving_up, tl.where(holds, tl.minimum(ahead, band_to), ahead), next_split)
    next_from = tl.where(moving_down, tl.where(holds, tl.maximum(ahead, band_from), ahead), next_split)
    _store_split_pass(row, tl.where(lloyd, LLOYD_PASS, SPLIT_PASS), next_split, c0, c1, lloyd_steps, below)
    tl.store(row + 14, next_from)
    tl.store(row + 15, next_to)
    tl.store(row + 16, holds.to(tl.float64))


@triton.jit
def _store_params(row, w0, w1, m0, m1, v0, v1, lower_bound, iterations):
    tl.store(row + 5, w0)
    tl.store(row + 6, w1)
    tl.store(row + 7, m0)
    tl.store(row + 8, m1)
    tl.store(row + 9, v0)
    tl.store(row + 10, v1)
    tl.store(row + 11, lower_bound)
    tl.store(row + 12, iterations)


@triton.jit
def _gmm2_fit_kernel(values_ptr, offsets_ptr, count_ptr, min_ptr, max_ptr, weights_ptr, means_ptr, variances_ptr,
                     log_likelihood_ptr, n_iter_ptr, converged_ptr, degenerate_ptr, fit_min_ptr, fit_max_ptr,
                     partials_ptr, bands_ptr, state_ptr, counters_ptr, n_groups, slots_per_pass, n_items,
                     search_steps, max_iter, steps, tol_bits, reg_covar_bits, eps_bits, log_2pi_bits,
                     max_magnitude_bits, max_reciprocal_bits,
                     MINMAX: tl.constexpr, KMEANS: tl.constexpr, BISECTIONS: tl.constexpr, CHUNK: tl.constexpr,
                     BLOCK: tl.constexpr, REVERSED_CLAIMS: tl.constexpr):
    """The whole fit after the grouping (fastmix/api/gmm.py's ``fit_gmm2`` with init "kmeans" (KMEANS) or
    "quantile"), each group split over many programs: a persistent work queue.

    Work item i is chunk ``i % slots_per_pass`` (of CHUNK values) of pass ``i // slots_per_pass``, claimed in
    order from counters[0]. A group's p-th pass is whatever its state says (the grid-step histogram, a hard split:
    the halves or the final split, a Lloyd step over the band the step before kept in ``bands``, or an E-step); its
    item waits (acquire) until counters[2 + g] (the group's ready counter) reaches p, writes its chunk's partial
    statistics to its own row of ``partials``, and arrives
    (acq_rel) at counters[2 + G + g]; the last of the group's chunks to arrive sums the rows in chunk order (so the
    fit does not depend on the order of arrival nor on the number of programs), takes the step (median split, Lloyd
    step, init M-step, M-step with the lower bound and scikit-learn's convergence test, the fit's fields once done)
    and releases pass p + 1 or FINISHED. An item waits only for items claimed before it, by programs that are
    running, so no number of resident programs deadlocks; under the interpreter program 0 runs every item in
    order and never waits. counters[1] counts the finished groups: then the programs stop claiming."""
    WIDTH: tl.constexpr = 1 << BISECTIONS
    reg_covar = float64_from_bits(reg_covar_bits)
    eps = float64_from_bits(eps_bits)
    tol = float64_from_bits(tol_bits)
    log_2pi = float64_from_bits(log_2pi_bits)
    max_magnitude = float64_from_bits(max_magnitude_bits)
    max_reciprocal = float64_from_bits(max_reciprocal_bits)
    ready_ptr = counters_ptr + 2
    arrivals_ptr = ready_ptr + n_groups
    slot_groups_ptr = arrivals_ptr + n_groups
    item = tl.atomic_add(counters_ptr, 1, sem="relaxed", scope="gpu")
    while item < n_items:
        pass_index = item // slots_per_pass
        slot = item % slots_per_pass
        if REVERSED_CLAIMS:
            slot = slots_per_pass - 1 - slot
        g = tl.atomic_add(slot_groups_ptr + slot, 0, sem="relaxed", scope="gpu").to(tl.int64) - 1
        if g < 0:  # not found yet: by binary search, remembered for the later passes
            # Group g's chunks are slots offsets[g] // CHUNK + g onwards (strictly increasing in g, and at least
            # max(cdiv(count_g, CHUNK), 1) apart): the slot's group is the last g whose first slot is <= slot.
            first = tl.zeros([], tl.int64)
            last = first + n_groups
            for _ in range(search_steps):
                middle = (first + last) // 2
                open_range = first < last
                above = open_range & (tl.load(offsets_ptr + middle, mask=open_range, other=0) // CHUNK + middle > slot)
                first = tl.where(open_range & ~above, middle + 1, first)
                last = tl.where(above, middle, last)
            g = first - 1
            tl.atomic_xchg(slot_groups_ptr + slot, first.to(tl.int32), sem="relaxed", scope="gpu")
        start = tl.load(offsets_ptr + g)
        end = tl.load(offsets_ptr + g + 1)
        first_slot = start // CHUNK + g
        n_chunks = tl.maximum(tl.cdiv(end - start, CHUNK), 1)
        released = tl.atomic_add(ready_ptr + g, 0, sem="acquire", scope="gpu")
        skipped = (released == FINISHED) | (slot - first_slot >= n_chunks)  # a finished group, or no chunk's slot
        if not skipped:
            while released < pass_index:
                released = tl.atomic_add(ready_ptr + g, 0, sem="acquire", scope="gpu")
            if released == pass_index:
                count = tl.load(count_ptr + g)
                group_min = tl.load(min_ptr + g)
                group_max = tl.load(max_ptr + g)
                shift, scale, unusable = _normalisation(group_min, group_max, max_magnitude, max_reciprocal, MINMAX)
                degenerate = (count < 2) | (group_max == group_min) | unusable
                row = state_ptr + g.to(tl.int64) * STATE_WIDTH
                chunk_start = start + (slot - first_slot) * CHUNK
                chunk_end = tl.minimum(chunk_start + CHUNK, end)
                inv_scale = 1.0 / scale
                low = (group_min - shift) / scale
                high = (group_max - shift) / scale
                partial = partials_ptr + slot.to(tl.int64) * WIDTH
                kind = tl.full([], HISTOGRAM_PASS, tl.int32)
                if pass_index > 0:
                    kind = tl.load(row, cache_modifier=".cg").to(tl.int32)
                if degenerate:  # no pass: its chunks arrive, the last writes the placeholders
                    kind = -1
                elif kind == HISTOGRAM_PASS:
                    histogram = _grid_step_histogram(values_ptr, chunk_start, chunk_end, shift, inv_scale, low, high,
                                                     BISECTIONS, BLOCK)
                    tl.store(partial + tl.arange(0, WIDTH), histogram.to(tl.float64))
                elif kind == SPLIT_PASS:
                    split = tl.load(row + 1, cache_modifier=".cg")
                    c0 = tl.load(row + 2, cache_modifier=".cg")
                    c1 = tl.load(row + 3, cache_modifier=".cg")
                    n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, chunk_start, chunk_end, shift, inv_scale, split,
                                                         c0, c1, BLOCK)
                    _store_statistics(partial, tl.zeros([], tl.float64), n0, n1, s0, s1, q0, q1)
                elif KMEANS and kind == LLOYD_PASS:
                    band = bands_ptr + chunk_start
                    band_row = partial + BAND_COLUMN
                    reads_band = tl.load(row + 16, cache_modifier=".cg") != 0
                    source_count = chunk_end - chunk_start
                    if reads_band:
                        source_count = tl.load(band_row, cache_modifier=".cg").to(tl.int64)
                    band_to = tl.load(row + 15, cache_modifier=".cg")
                    n_below, n_band, sum_below, sum_band, sum_above = _lloyd_band_sums(
                        tl.where(reads_band, band, values_ptr + chunk_start), band, source_count, shift, inv_scale,
                        tl.load(row + 14, cache_modifier=".cg"), band_to, BLOCK)
                    n_below = n_below.to(tl.float64)
                    n_band = n_band.to(tl.float64)
                    n_above = source_count.to(tl.float64) - n_below - n_band
                    if reads_band:  # the values outside the band the step before kept
                        n_below += tl.load(band_row + 1, cache_modifier=".cg")
                        sum_below += tl.load(band_row + 2, cache_modifier=".cg")
                        n_above += tl.load(band_row + 3, cache_modifier=".cg")
                        sum_above += tl.load(band_row + 4, cache_modifier=".cg")
                    zero = tl.zeros([], tl.float64)
                    _store_statistics(band_row, n_band, n_below, sum_below, n_above, sum_above, zero, zero)
                    # The band lies below the split (moving down), or is empty.
                    band_below = band_to == tl.load(row + 1, cache_modifier=".cg")
                    _store_statistics(partial, zero, n_below + tl.where(band_below, n_band, 0.0),
                                      n_above + tl.where(band_below, 0.0, n_band),
                                      sum_below + tl.where(band_below, sum_band, 0.0),
                                      sum_above + tl.where(band_below, 0.0, sum_band), zero, zero)
                else:
                    _store_statistics(partial, *_estep_sums(
                        values_ptr, chunk_start, chunk_end, shift, inv_scale, tl.load(row + 5, cache_modifier=".cg"),
                        tl.load(row + 6, cache_modifier=".cg"), tl.load(row + 7, cache_modifier=".cg"),
                        tl.load(row + 8, cache_modifier=".cg"), tl.load(row + 9, cache_modifier=".cg"),
                        tl.load(row + 10, cache_modifier=".cg"), log_2pi, BLOCK))
                tl.debug_barrier()  # every thread's partial stores before the release below
                arrived = tl.atomic_add(arrivals_ptr + g, 1, sem="acq_rel", scope="gpu")
                if arrived == n_chunks - 1:  # the group's last chunk of this pass: reduce and step
                    released = _step(g, kind, row, partials_ptr + first_slot.to(tl.int64) * WIDTH, n_chunks, count,
                                     group_min, group_max, low, high, pass_index, reg_covar, eps, tol, weights_ptr,
                                     means_ptr, variances_ptr, log_likelihood_ptr, n_iter_ptr, converged_ptr, degenerate_ptr, fit_min_ptr,
                                     fit_max_ptr, max_iter, steps, MINMAX, KMEANS, BISECTIONS)
                    tl.atomic_xchg(arrivals_ptr + g, 0, sem="relaxed", scope="gpu")
                    tl.debug_barrier()  # every thread's state and output stores before the release below
                    tl.atomic_xchg(ready_ptr + g, released, sem="release", scope="gpu")
                    if released == FINISHED:
                        tl.atomic_add(counters_ptr + 1, 1, sem="relaxed", scope="gpu")
        # Once every group finished, every item is skipped: only then is the finished count worth its round trip.
        all_finished = tl.zeros([], tl.int1)
        if skipped:
            all_finished = tl.atomic_add(counters_ptr + 1, 0, sem="relaxed", scope="gpu") == n_groups
        if all_finished:
            item = n_items
        else:
            item = tl.atomic_add(counters_ptr, 1, sem="relaxed", scope="gpu")


# ------------------------------------------------------------------------------------------------------ launchers
def sort_tile(n_groups: int) -> int:
    """Values per program of the counting sort, a multiple of COUNT_BLOCK: SORT_TILE, or more for many groups so
    that the (tiles, G + 1) counts hold at most about n + G entries."""
    return max(SORT_TILE, triton.cdiv(n_groups + 1, COUNT_BLOCK) * COUNT_BLOCK)


def count_bins(n_groups: int) -> int:
    """The count kernel's histogram bins for G groups (G + 1 keys): a power of two from MIN_COUNT_BINS up to
    MAX_COUNT_BINS, or 0 beyond it (atomics)."""
    bins = max(triton.next_power_of_2(n_groups + 1), MIN_COUNT_BINS)
    return bins if bins <= MAX_COUNT_BINS else 0


def gmm2_segments(values: torch.Tensor, groups: torch.Tensor, n_groups: int, omit_nonfinite: bool,
                  sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
                  hi: torch.Tensor, ok: torch.Tensor) -> None:
    """Fills the outputs of ``fastmix::gmm2_segments`` from contiguous 1-D ``values`` and ``groups`` (any integer
    dtype), and ``ok`` (2,) bool: no group out of range, no value rejected. A stable counting sort in three launches:
    per tile its counts, min and max per group; their prefix (each tile's first positions, the offsets, each
    group's count, min and max); the scatter."""
    n = values.numel()
    tile = sort_tile(n_groups)
    n_tiles = max(triton.cdiv(n, tile), 1)
    device = values.device
    counts = torch.empty((n_tiles, n_groups + 1), dtype=torch.int64, device=device)
    lows, highs = (torch.empty((n_tiles, n_groups), dtype=values.dtype, device=device) for _ in range(2))
    totals = torch.empty(n_groups + 1, dtype=torch.int64, device=device)
    arrivals = torch.empty(1, dtype=torch.int32, device=device)
    flags = torch.empty(n_tiles, dtype=torch.uint8, device=device)
    _gmm2_count_kernel[(n_tiles,)](values, groups, counts, lows, highs, flags, arrivals, n, n_groups, tile,
                                   OMIT_NONFINITE=omit_nonfinite, BLOCK=COUNT_BLOCK, KEY_BINS=count_bins(n_groups),
                                   num_warps=16)
    _gmm2_prefix_kernel[(triton.cdiv(n_groups + 1, PREFIX_KEYS),)](
        counts, lows, highs, flags, totals, offsets, count, lo, hi, ok, arrivals, n_tiles, n_groups,
        KEYS=PREFIX_KEYS, TILES=PREFIX_TILES, BLOCK=COUNT_BLOCK, num_warps=PREFIX_WARPS)
    _gmm2_scatter_kernel[(n_tiles,)](values, groups, counts, offsets, sorted_values, n, n_groups, tile,
                                     LANES=SORT_LANES, num_warps=1)


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


def fit_register_cap(capability: int | None, dtype: torch.dtype) -> int | None:
    """The fused fit's ``maxnreg`` on a GPU of ``capability`` (``target.capability``; None: the interpreter, no
    cap) for values of ``dtype``: float32 values FIT_REGISTER_CAP on sm_90 and newer, else FIT_REGISTERS."""
    if capability is None:
        return None
    return FIT_REGISTER_CAP if capability >= 90 and dtype == torch.float32 else FIT_REGISTERS


def fit_programs_per_sm(register_cap: int | None) -> int:
    """Programs of the fused fit (SEGMENT_WARPS warps each) that an SM's 64 K registers hold at ``register_cap``
    registers per thread (FIT_REGISTERS without a cap). More would be harmless: they start once others end, and
    find the queue empty."""
    return 65536 // (32 * SEGMENT_WARPS * (register_cap or FIT_REGISTERS))


def fit_programs(device: torch.device, register_cap: int | None) -> int:
    """Programs of the fused fit: as many as the SMs hold on CUDA (the SM count read from the device's properties,
    no sync), INTERPRETED_PROGRAMS under the interpreter."""
    if device.type == "cuda":
        return fit_programs_per_sm(register_cap) * torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETED_PROGRAMS


def fit_chunk(n_values: int, programs: int) -> int:
    """Values per work item of the fused fit on a GPU: 2 CHUNK once the values fill every program with a chunk of
    that size, else CHUNK."""
    return 2 * CHUNK if n_values >= 2 * CHUNK * programs else CHUNK


def gmm2_fit(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
             hi: torch.Tensor, outputs: tuple[torch.Tensor, ...], minmax: bool, kmeans: bool, max_iter: int,
             steps: int, bisections: int, tol: float, reg_covar: float, eps: float, max_magnitude: float) -> None:
    """Fills ``outputs`` = (weights, means, variances, log_likelihood, n_iter, converged, degenerate, min, max), the
    fields of a GMM2Fit: one memset of the work queue's counters and one launch of the fused fit. At most
    3 + steps + max_iter passes ("kmeans": histogram, halves, the Lloyd steps, the final split, the EM; "quantile":
    2 + max_iter), each of at most cdiv(n, chunk) + G chunks (``fit_chunk`` values each on a GPU, CHUNK under the
    interpreter).
    "kmeans" takes a scratch copy the size of the sorted values for the Lloyd steps' bands."""
    n_groups, device = count.size(0), count.device
    if n_groups == 0:
        return
    assert bisections >= 4, "a partial row holds the histogram's 2^bisections bins, a pass's 7 statistics and a band"
    capability = target.capability(device)
    register_cap = fit_register_cap(capability, sorted_values.dtype)
    programs = fit_programs(device, register_cap)
    chunk = CHUNK if capability is None else fit_chunk(sorted_values.numel(), programs)
    slots_per_pass = triton.cdiv(sorted_values.numel(), chunk) + n_groups
    passes = (3 + steps if kmeans else 2) + max_iter
    partials = torch.empty((slots_per_pass, 1 << bisections), dtype=torch.float64, device=device)
    bands = torch.empty_like(sorted_values) if kmeans else sorted_values
    state = torch.empty((n_groups, STATE_WIDTH.value), dtype=torch.float64, device=device)
    counters = torch.zeros(2 + 2 * n_groups + slots_per_pass, dtype=torch.int32, device=device)
    _gmm2_fit_kernel[(programs,)](
        sorted_values, offsets, count, lo, hi, *outputs, partials, bands, state, counters, n_groups, slots_per_pass,
        passes * slots_per_pass, n_groups.bit_length() + 1, max_iter, steps, float64_bits(tol),
        float64_bits(reg_covar), float64_bits(eps), float64_bits(LOG_2PI), float64_bits(max_magnitude),
        float64_bits(torch.finfo(sorted_values.dtype).max),
        MINMAX=minmax, KMEANS=kmeans, BISECTIONS=bisections, CHUNK=chunk,
        BLOCK=FLOAT32_FIT_BLOCK if sorted_values.dtype == torch.float32 else BLOCK,
        REVERSED_CLAIMS=REVERSED_CLAIMS, num_warps=SEGMENT_WARPS, maxnreg=register_cap)


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
