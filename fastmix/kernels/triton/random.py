"""In-kernel random draws for the parameter kernels: Philox4x32-10 (``tl.philox``) and the distributions built on it.

Every draw is Philox4x32-10 under the key ``seed`` (a device int64 drawn by ``fastmix._random.draw_seed``, one
``torch.randint`` per call, so CUDA-graph replays draw fresh numbers) and the counter
``(index, attempt * ROLES + role, stream, offset)``:

- ``index``: the element (sample, pair or permutation key), a 1-D block of integers;
- ``attempt``: the rejection round of a Gamma draw (0 for every other draw);
- ``role``: which independent block of words one draw takes (``GAMMA_NORMAL``, ``GAMMA_ACCEPT``, ``BETA_BOOST``;
  0 for a plain uniform);
- ``stream``: which quantity of a call (a constant the calling kernel picks, one per quantity);
- ``offset``: the caller's free word (0 unless one call draws several independent batches).

Distinct counters give independent words, so no two draws of a call share one.
"""

from __future__ import annotations

import triton
import triton.language as tl

ROLES: tl.constexpr = tl.constexpr(4)
GAMMA_NORMAL: tl.constexpr = tl.constexpr(0)
GAMMA_ACCEPT: tl.constexpr = tl.constexpr(1)
BETA_BOOST: tl.constexpr = tl.constexpr(2)


@triton.jit
def philox_words(seed, index, attempt_role, stream, offset):
    """The four uint32 words of Philox4x32-10 with key ``seed`` (low word first) and counter
    ``(index, attempt_role, stream, offset)``, each counter word taken mod 2^32 and broadcast to ``index``'s shape."""
    zero = index * 0
    return tl.philox(seed, index.to(tl.uint32), (zero + attempt_role).to(tl.uint32),
                     (zero + stream).to(tl.uint32), (zero + offset).to(tl.uint32))


@triton.jit
def _unit_float64(high, low):
    """A float64 in [0, 1) from 27 bits of ``high`` and 26 of ``low``: ``k / 2^53``, every k equally likely."""
    bits = (high >> 5).to(tl.float64) * 67108864.0 + (low >> 6).to(tl.float64)
    return bits * 1.1102230246251565e-16  # 2^-53


@triton.jit
def uniform_pair(seed, index, attempt_role, stream, offset):
    """Two independent float64 uniforms in [0, 1) (53 random bits each) from one Philox block."""
    w0, w1, w2, w3 = philox_words(seed, index, attempt_role, stream, offset)
    return _unit_float64(w0, w1), _unit_float64(w2, w3)


@triton.jit
def normal_pair(seed, index, attempt_role, stream, offset):
    """Two independent float64 standard normals (Box-Muller): ``sqrt(-2 log(1 - u0)) (cos, sin)(2 pi u1)``."""
    u0, u1 = uniform_pair(seed, index, attempt_role, stream, offset)
    radius = tl.sqrt(-2.0 * tl.log(1.0 - u0))  # 1 - u0 lies in (0, 1]
    angle = 6.283185307179586 * u1
    return radius * tl.cos(angle), radius * tl.sin(angle)


@triton.jit
def _marsaglia_tsang(d, c, normal, uniform):
    """One Marsaglia-Tsang (2000) attempt for Gamma(d + 1/3): (accepted, log of the draw ``d v``)."""
    v = 1.0 + c * normal
    v = v * v * v
    positive = v > 0.0
    v = tl.where(positive, v, 1.0)
    log_v = tl.log(v)
    accepted = positive & (tl.log(1.0 - uniform) < 0.5 * normal * normal + d - d * v + d * log_v)
    return accepted, tl.log(d) + log_v


@triton.jit
def log_gamma_pair(seed, shape, index, stream, offset):
    """The logs of two independent Gamma(shape, 1) draws per element of ``index``, float64, for ``shape >= 1``
    (a float64 scalar or a block like ``index``): Marsaglia and Tsang's method (ACM TOMS 26(3), 2000) with an exact
    rejection loop: each round draws every element on fresh counters (attempt = round), the loop ends when no
    element of the block is pending."""
    d = index.to(tl.float64) * 0.0 + (shape - 0.3333333333333333)
    c = 1.0 / tl.sqrt(9.0 * d)
    log_g0 = d * 0.0
    log_g1 = d * 0.0
    pending0 = d == d
    pending1 = pending0
    attempt = 0
    while tl.max((pending0 | pending1).to(tl.int32), axis=0) > 0:
        n0, n1 = normal_pair(seed, index, attempt * ROLES + GAMMA_NORMAL, stream, offset)
        u0, u1 = uniform_pair(seed, index, attempt * ROLES + GAMMA_ACCEPT, stream, offset)
        accepted0, draw0 = _marsaglia_tsang(d, c, n0, u0)
        accepted1, draw1 = _marsaglia_tsang(d, c, n1, u1)
        log_g0 = tl.where(pending0 & accepted0, draw0, log_g0)
        log_g1 = tl.where(pending1 & accepted1, draw1, log_g1)
        pending0 = pending0 & ~accepted0
        pending1 = pending1 & ~accepted1
        attempt += 1
    return log_g0, log_g1


@triton.jit
def symmetric_beta(seed, alpha, index, stream, offset):
    """Beta(alpha, alpha) per element of ``index``, float64, for any ``alpha > 0`` (a float64 scalar or block):
    ``lam = sigmoid(log G1 - log G2)`` with ``log G = log Gamma(alpha + 1) + log(U) / alpha`` (a Gamma(alpha) draw
    boosted from Gamma(alpha + 1); in logs, so a small alpha does not underflow to lam = 0.5)."""
    log_g0, log_g1 = log_gamma_pair(seed, alpha + 1.0, index, stream, offset)
    u0, u1 = uniform_pair(seed, index, BETA_BOOST, stream, offset)
    logit = log_g0 - log_g1 + (tl.log(1.0 - u0) - tl.log(1.0 - u1)) / alpha  # 1 - U lies in (0, 1]
    return 1.0 / (1.0 + tl.exp(-logit))


@triton.jit
def permutation_rank(seed, rows, batch, stream, offset, BLOCK: tl.constexpr):
    """The rank of each of ``rows`` (a 1-D block, entries >= batch ignored) among ``batch`` iid uniform keys, ties
    broken by index: ``rank[i] = #{j : key_j < key_i or (key_j == key_i and j < i)}``. Over all rows this is a
    uniform random permutation of [0, batch), the same in every program; the keys are recomputed per block of
    ``BLOCK`` others, so any batch fits."""
    key, _ = uniform_pair(seed, rows, 0, stream, offset)
    rank = rows * 0
    for start in range(0, batch, BLOCK):
        others = start + tl.arange(0, BLOCK)
        other_key, _ = uniform_pair(seed, others, 0, stream, offset)
        before = (other_key[None, :] < key[:, None]) | ((other_key[None, :] == key[:, None])
                                                        & (others[None, :] < rows[:, None]))
        rank += tl.sum((before & (others[None, :] < batch)).to(rows.dtype), axis=1)
    return rank
