"""Flow-Mixup: one Mixing module's forward + backward, fastmix backends vs the naive autograd module vs the floor."""

import pytest

from conftest import bench_points, run_point
from fastmix.benchcases import flow


@pytest.mark.parametrize("case,provider", bench_points(flow.cases))
def test_flow_mix(benchmark, case, provider):
    run_point(benchmark, case, provider)
