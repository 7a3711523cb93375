"""Two-component GMM EM Triton kernel (paper 001_*, eq. 6-8): the whole fit in one persistent launch.

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
