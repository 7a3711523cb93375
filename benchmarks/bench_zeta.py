"""zeta-mixup: fastmix backends vs the reference vs the paper's pipeline vs the memory floor."""

import pytest

from conftest import bench_points, run_point
from fastmix.benchcases import zeta


@pytest.mark.parametrize("case,provider", bench_points(zeta.cases))
def test_zeta_mixup(benchmark, case, provider):
    run_point(benchmark, case, provider)
