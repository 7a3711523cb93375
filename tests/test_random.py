"""The in-kernel sampler (fastmix/kernels/triton/random.py) tested on its own: Philox4x32-10 known answers, the
distributions of its draws against scipy, permutations, and seeds (fastmix._random.draw_seed)."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
from scipy import stats

import triton
import triton.language as tl

from fastmix import _random
from fastmix.kernels.triton import random as sampler

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="runs Triton kernels on CPU tensors: needs TRITON_INTERPRET=1")
UNIFORM, NORMAL, LOG_GAMMA, BETA = range(4)
BLOCK = 256
P_MIN = 1e-3  # every statistical test below runs on fixed seeds, so a pass is reproducible


@triton.jit
def _philox_kernel(out_ptr, seed_ptr, counter_ptr):
    case = tl.program_id(0)
    one = tl.arange(0, 1)
    counter = counter_ptr + 4 * case + one
    words = sampler.philox_words(tl.load(seed_ptr + case), tl.load(counter), tl.load(counter + 1),
                                 tl.load(counter + 2), tl.load(counter + 3))
    for k in tl.static_range(4):
        tl.store(out_ptr + 4 * case + k + one, words[k].to(tl.int64))


@triton.jit
def _draw_kernel(out_ptr, seed_ptr, count, parameter, offset, WHAT: tl.constexpr, BLOCK: tl.constexpr):
    seed = tl.load(seed_ptr)
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if WHAT == 0:
        first, second = sampler.uniform_pair(seed, index, 0, 5, offset)
    elif WHAT == 1:
        first, second = sampler.normal_pair(seed, index, 0, 5, offset)
    elif WHAT == 2:
        first, second = sampler.log_gamma_pair(seed, parameter, index, 5, offset)
    else:
        first = sampler.symmetric_beta(seed, parameter, index, 5, offset)
        second = first
    tl.store(out_ptr + index, first, mask=index < count)
    tl.store(out_ptr + count + index, second, mask=index < count)


@triton.jit
def _rank_kernel(out_ptr, seed_ptr, batch, row_blocks, BLOCK: tl.constexpr):
    """Program p: row block p % row_blocks of the permutation with offset p // row_blocks."""
    repeat = tl.program_id(0) // row_blocks
    rows = (tl.program_id(0) % row_blocks) * BLOCK + tl.arange(0, BLOCK)
    rank = sampler.permutation_rank(tl.load(seed_ptr), rows, batch, 9, repeat, BLOCK)
    tl.store(out_ptr + repeat * batch + rows, rank, mask=rows < batch)


def _seed(value: int) -> torch.Tensor:
    return _random.draw_seed(torch.Generator().manual_seed(value), "cpu")


def _draw(what: int, count: int, seed: torch.Tensor, parameter: float = 1.0, offset: int = 0):
    out = torch.empty(2 * count, dtype=torch.float64)
    _draw_kernel[(triton.cdiv(count, BLOCK),)](out, seed, count, parameter, offset, WHAT=what, BLOCK=BLOCK)
    return out[:count].numpy(), out[count:].numpy()


def _ranks(batch: int, seed: torch.Tensor, repeats: int = 1, block: int = 64) -> torch.Tensor:
    out = torch.empty(repeats * batch, dtype=torch.int64)
    row_blocks = triton.cdiv(batch, block)
    _rank_kernel[(repeats * row_blocks,)](out, seed, batch, row_blocks, BLOCK=block)
    return out.view(repeats, batch)


# Random123 1.14 kat_vectors, philox4x32 with 10 rounds: counter (4 words), key (2 words) -> 4 words.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_philox_matches_the_random123_known_answers():
    counters = torch.tensor([counter for counter, _, _ in PHILOX_KAT], dtype=torch.int64)
    # The key is the seed's two 32-bit halves, low word first: key = (seed mod 2^32, seed >> 32).
    seeds = torch.tensor([np.int64(np.uint64(high << 32 | low)) for _, (low, high), _ in PHILOX_KAT],
                         dtype=torch.int64)
    out = torch.empty(len(PHILOX_KAT) * 4, dtype=torch.int64)
    _philox_kernel[(len(PHILOX_KAT),)](out, seeds, counters)
    assert out.view(-1, 4).tolist() == [list(words) for _, _, words in PHILOX_KAT]


def test_uniforms_have_53_bits_and_are_uniform():
    first, second = _draw(UNIFORM, 20000, _seed(1))
    both = np.concatenate([first, second])
    assert both.min() >= 0.0 and both.max() < 1.0
    scaled = both * 2.0**53
    assert np.array_equal(scaled, np.floor(scaled))  # k / 2^53
    assert 0.45 < np.mean(scaled % 2) < 0.55  # the lowest of the 53 bits is random too
    assert stats.kstest(both, "uniform").pvalue > P_MIN
    assert abs(np.corrcoef(first, second)[0, 1]) < 4 / np.sqrt(first.size)


def test_normals_have_standard_moments():
    first, second = _draw(NORMAL, 20000, _seed(2))
    both = np.concatenate([first, second])
    n = both.size
    assert abs(both.mean()) < 4 / np.sqrt(n)
    assert abs(both.var() - 1) < 4 * np.sqrt(2 / n)
    assert abs(stats.skew(both)) < 4 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(both)) < 4 * np.sqrt(24 / n)
    assert stats.kstest(both, "norm").pvalue > P_MIN
    assert abs(np.corrcoef(first, second)[0, 1]) < 4 / np.sqrt(first.size)


@pytest.mark.parametrize("shape", [1.0, 1.2, 5.0])
def test_gamma_draws_follow_gamma(shape):
    first, second = _draw(LOG_GAMMA, 5000, _seed(3), shape)
    for logs in (first, second):
        assert stats.kstest(np.exp(logs), stats.gamma(shape).cdf).pvalue > P_MIN
    assert abs(np.corrcoef(first, second)[0, 1]) < 4 / np.sqrt(first.size)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_draws_follow_symmetric_beta(alpha):
    lam, _ = _draw(BETA, 5000, _seed(4), alpha)
    assert lam.min() >= 0.0 and lam.max() <= 1.0
    assert stats.kstest(lam, stats.beta(alpha, alpha).cdf).pvalue > P_MIN


def test_beta_with_a_tiny_alpha_reaches_the_ends():
    """Beta(0.02, 0.02) puts most mass near 0 and 1; a sampler that underflows its Gamma draws returns 0.5."""
    alpha = 0.02
    lam, _ = _draw(BETA, 4000, _seed(5), alpha)
    near_ends = np.mean(np.minimum(lam, 1 - lam) < 1e-6)
    expected = 2 * stats.beta(alpha, alpha).cdf(1e-6)
    assert abs(near_ends - expected) < 4 * np.sqrt(expected * (1 - expected) / lam.size)


@pytest.mark.parametrize("batch", [1, 5, 64, 65, 300])
def test_ranks_are_a_permutation(batch):
    ranks = _ranks(batch, _seed(6))[0]
    assert sorted(ranks.tolist()) == list(range(batch))


def test_permutations_of_three_are_uniform():
    """400 draws reject one permutation twice as likely as the others (96% of the time, with P_MIN); the C++ twin
    of the sampler, whose ranks are this kernel's, is tested over 1200 (tests/test_mix.py)."""
    repeats = 400
    ranks = _ranks(3, _seed(7), repeats=repeats)
    counts = {perm: 0 for perm in itertools.permutations(range(3))}
    for row in ranks.tolist():
        counts[tuple(row)] += 1
    assert stats.chisquare(list(counts.values())).pvalue > P_MIN


def test_seeded_generators_reproduce_and_consecutive_calls_draw_fresh_numbers():
    generator = torch.Generator().manual_seed(11)
    seeds = [_random.draw_seed(generator, "cpu") for _ in range(2)]
    again = _random.draw_seed(torch.Generator().manual_seed(11), "cpu")
    assert seeds[0].dtype == torch.int64 and seeds[0].shape == (1,)
    assert torch.equal(seeds[0], again) and not torch.equal(seeds[0], seeds[1])
    assert np.array_equal(_draw(BETA, 300, seeds[0])[0], _draw(BETA, 300, again)[0])
    assert not np.array_equal(_draw(BETA, 300, seeds[0])[0], _draw(BETA, 300, seeds[1])[0])


def test_streams_and_offsets_draw_independent_numbers():
    seed = _seed(12)
    base, _ = _draw(UNIFORM, 4000, seed)
    shifted, _ = _draw(UNIFORM, 4000, seed, offset=1)
    assert abs(np.corrcoef(base, shifted)[0, 1]) < 4 / np.sqrt(base.size)
    assert not np.array_equal(_ranks(50, seed)[0], _ranks(50, _seed(13))[0])
