"""Two-component GMM Triton kernels (BalanceMix paper, eq. 6-8): the k-means init and the EM fit, one persistent launch
each.

The values are sorted by group (a stable sort, once per fit), so each group is a contiguous segment and one program
fits one group: every iteration is one pass over its segment, the statistics summed in BLOCK-wide float64 registers
and reduced in a fixed order (deterministic, no atomics), the M-step and the convergence test on the device.
Same semantics as csrc/gmm.h (scikit-learn's EM, statistics taken around the current means).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG_2PI = math.log(2.0 * math.pi)


@triton.jit
def _component_update(resp_sum, shifted_sum, squared_sum, shift, reg_covar, eps):
    """(nk, mean, variance) of one component from its statistics around ``shift``."""
    nk = resp_sum + 10.0 * eps
    mean = (shifted_sum + shift * resp_sum) / nk
    d = mean - shift
    spread = squared_sum - 2.0 * d * shifted_sum + d * d * resp_sum
    return nk, mean, tl.maximum(spread, 0.0) / nk + reg_covar


@triton.jit
def _gmm2_em_kernel(values_ptr, offsets_ptr, count_ptr, lo_ptr, scale_ptr, weights_ptr, means_ptr, variances_ptr,
                    log_likelihood_ptr, n_iter_ptr, converged_ptr, constants_ptr, max_iter, BLOCK: tl.constexpr):
    """One program per group; ``constants`` holds (tol, reg_covar, eps, log 2 pi) in float64 (a Python float
    argument would arrive as float32)."""
    g = tl.program_id(0)
    tol = tl.load(constants_ptr)
    reg_covar = tl.load(constants_ptr + 1)
    eps = tl.load(constants_ptr + 2)
    log_2pi = tl.load(constants_ptr + 3)
    start = tl.load(offsets_ptr + g)
    end = tl.load(offsets_ptr + g + 1)
    count = tl.load(count_ptr + g)
    lo = tl.load(lo_ptr + g)
    inv_scale = 1.0 / tl.load(scale_ptr + g)
    w0 = tl.load(weights_ptr + 2 * g)
    w1 = tl.load(weights_ptr + 2 * g + 1)
    m0 = tl.load(means_ptr + 2 * g)
    m1 = tl.load(means_ptr + 2 * g + 1)
    v0 = tl.load(variances_ptr + 2 * g)
    v1 = tl.load(variances_ptr + 2 * g + 1)
    previous = tl.full([], -float("inf"), tl.float64)
    done = tl.full([], 0, tl.int32)
    iterations = tl.full([], 0, tl.int64)
    for iteration in range(max_iter):
        if done == 0:
            p0 = 1.0 / tl.sqrt(v0)
            p1 = 1.0 / tl.sqrt(v1)
            offset0 = -0.5 * log_2pi + tl.log(p0) + tl.log(w0)
            offset1 = -0.5 * log_2pi + tl.log(p1) + tl.log(w1)
            log_prob_acc = tl.zeros([BLOCK], dtype=tl.float64)
            r0_acc = tl.zeros([BLOCK], dtype=tl.float64)
            r1_acc = tl.zeros([BLOCK], dtype=tl.float64)
            d0_acc = tl.zeros([BLOCK], dtype=tl.float64)
            d1_acc = tl.zeros([BLOCK], dtype=tl.float64)
            q0_acc = tl.zeros([BLOCK], dtype=tl.float64)
            q1_acc = tl.zeros([BLOCK], dtype=tl.float64)
            for block_start in range(start, end, BLOCK):
                offs = block_start + tl.arange(0, BLOCK)
                in_segment = offs < end
                v = tl.load(values_ptr + offs, mask=in_segment, other=0.0).to(tl.float64)
                ok = in_segment & (tl.abs(v) < float("inf"))  # false for NaN and +-inf
                x = tl.where(ok, (v - lo) * inv_scale, 0.0)
                z0 = x * p0 - m0 * p0
                z1 = x * p1 - m1 * p1
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
                dx0 = x - m0
                dx1 = x - m1
                r0_acc += r0
                r1_acc += r1
                d0_acc += r0 * dx0
                d1_acc += r1 * dx1
                q0_acc += r0 * dx0 * dx0
                q1_acc += r1 * dx1 * dx1
            nk0, m0, v0 = _component_update(tl.sum(r0_acc), tl.sum(d0_acc), tl.sum(q0_acc), m0, reg_covar, eps)
            nk1, m1, v1 = _component_update(tl.sum(r1_acc), tl.sum(d1_acc), tl.sum(q1_acc), m1, reg_covar, eps)
            w0 = nk0 / (nk0 + nk1)
            w1 = nk1 / (nk0 + nk1)
            lower_bound = tl.sum(log_prob_acc) / tl.maximum(count, 1.0)
            tl.store(log_likelihood_ptr + g.to(tl.int64) * max_iter + iteration, lower_bound)
            iterations += 1
            if tl.abs(lower_bound - previous) < tol:
                done = 1
            previous = lower_bound
    tl.store(weights_ptr + 2 * g, w0)
    tl.store(weights_ptr + 2 * g + 1, w1)
    tl.store(means_ptr + 2 * g, m0)
    tl.store(means_ptr + 2 * g + 1, m1)
    tl.store(variances_ptr + 2 * g, v0)
    tl.store(variances_ptr + 2 * g + 1, v1)
    tl.store(n_iter_ptr + g, iterations)
    tl.store(converged_ptr + g, done.to(tl.uint8))


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
        offs = block_start + tl.arange(0, BLOCK)
        in_segment = offs < end
        x = (tl.load(values_ptr + offs, mask=in_segment, other=0.0).to(tl.float64) - lo) * inv_scale
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
def _gmm2_kmeans_kernel(values_ptr, offsets_ptr, count_ptr, lo_ptr, scale_ptr, low_ptr, high_ptr, seeds_ptr,
                        centres_ptr, stats_ptr, steps, HAS_SEEDS: tl.constexpr, BISECTIONS: tl.constexpr,
                        BLOCK: tl.constexpr):
    """One program per group, as csrc/gmm_cpu.cpp's kmeans: the median split's bisection over the 2^BISECTIONS-step
    grid of [low, high] and its halves' means (without seeds), Lloyd steps until the centres stop moving (at most
    ``steps``), the final split's statistics."""
    g = tl.program_id(0)
    start = tl.load(offsets_ptr + g)
    end = tl.load(offsets_ptr + g + 1)
    count = tl.load(count_ptr + g)
    lo = tl.load(lo_ptr + g)
    inv_scale = 1.0 / tl.load(scale_ptr + g)
    grid_steps = tl.full([], 1 << BISECTIONS, tl.float64)
    if HAS_SEEDS:
        c0 = tl.load(seeds_ptr + 2 * g)
        c1 = tl.load(seeds_ptr + 2 * g + 1)
    else:
        low = tl.load(low_ptr + g)
        high = tl.load(high_ptr + g)
        below = tl.zeros([], tl.float64)
        above = grid_steps
        for _ in range(BISECTIONS):
            middle = tl.floor((below + above) / 2.0)
            split = low + middle / grid_steps * (high - low)
            n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, start, end, lo, inv_scale, split, split, split, BLOCK)
            enough = n0 >= count / 2.0
            above = tl.where(enough, middle, above)
            below = tl.where(enough, below, middle)
        split = low + above / grid_steps * (high - low)
        c0 = 0.5 * (low + split)
        c1 = 0.5 * (split + high)
        n0, n1, s0, s1, q0, q1 = _split_sums(values_ptr, start, end, lo, inv_scale, split, c0, c1, BLOCK)
        c0 = tl.where(n0 > 0, c0 + s0 / tl.maximum(n0, 1.0), c0)
        c1 = tl.where(n1 > 0, c1 + s1 / tl.maximum(n1, 1.0), c1)
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
    tl.store(centres_ptr + 2 * g, c0)
    tl.store(centres_ptr + 2 * g + 1, c1)
    row = stats_ptr + 7 * g
    tl.store(row, tl.zeros([], tl.float64))
    tl.store(row + 1, n0)
    tl.store(row + 2, n1)
    tl.store(row + 3, s0)
    tl.store(row + 4, s1)
    tl.store(row + 5, q0)
    tl.store(row + 6, q1)


def gmm2_kmeans(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
                scale: torch.Tensor, low: torch.Tensor, high: torch.Tensor, seeds: torch.Tensor | None, steps: int,
                bisections: int, centres: torch.Tensor, stats: torch.Tensor) -> None:
    """Fills ``centres`` (G, 2) and ``stats`` (G, 7), contiguous float64, for every group (one program each)."""
    _gmm2_kmeans_kernel[(count.size(0),)](sorted_values, offsets, count, lo, scale, low, high,
                                          centres if seeds is None else seeds, centres, stats, steps,
                                          HAS_SEEDS=seeds is not None, BISECTIONS=bisections, BLOCK=256, num_warps=4)


def gmm2_em(sorted_values: torch.Tensor, offsets: torch.Tensor, count: torch.Tensor, lo: torch.Tensor,
            scale: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
            log_likelihood: torch.Tensor, n_iter: torch.Tensor, converged: torch.Tensor, max_iter: int, tol: float,
            reg_covar: float, eps: float) -> None:
    """Fits every group in place: ``weights``/``means``/``variances`` (G, 2) float64 hold the initial params.

    ``sorted_values`` holds group g's values at ``offsets[g]:offsets[g + 1]``; ``converged`` is uint8.
    """
    n_groups = count.size(0)
    constants = torch.tensor([tol, reg_covar, eps, LOG_2PI], dtype=torch.float64, device=count.device)
    _gmm2_em_kernel[(n_groups,)](sorted_values, offsets, count, lo, scale, weights, means, variances, log_likelihood,
                                 n_iter, converged, constants, max_iter, BLOCK=256, num_warps=4)
