"""LaMix: the fused target-and-loss vs the reference vs the paper's formula vs the memory floor (forward + backward)."""

import pytest

from conftest import bench_points, run_point
from fastmix.benchcases import lamix


@pytest.mark.parametrize("case,provider", bench_points(lamix.cases))
def test_lamix_loss(benchmark, case, provider):
    run_point(benchmark, case, provider)
