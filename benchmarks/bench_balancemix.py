"""BalanceMix loss (eq. 10), forward + backward: the fused Triton kernel vs the reference vs the memory floor."""

import pytest

from conftest import bench_points, run_point
from fastmix.benchcases import balancemix


@pytest.mark.parametrize("case,provider", bench_points(balancemix.cases))
def test_balancemix_loss(benchmark, case, provider):
    run_point(benchmark, case, provider)
