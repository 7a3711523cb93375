"""LUMix: the fused loss vs the reference vs Algorithm 1 vs the memory floor (forward + backward)."""

import pytest

from conftest import bench_points, run_point
from fastmix.benchcases import lumix


@pytest.mark.parametrize("case,provider", bench_points(lumix.cases))
def test_lumix_loss(benchmark, case, provider):
    run_point(benchmark, case, provider)
