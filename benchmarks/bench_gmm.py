"""BalanceMix GMM fit: fastmix backends vs the reference vs a scikit-learn loop (160 GMMs, 10 EM iterations)."""

import pytest

from conftest import bench_points, run_point
from fastmix.benchcases import gmm


@pytest.mark.parametrize("case,provider", bench_points(gmm.cases))
def test_fit_gmm2(benchmark, case, provider):
    run_point(benchmark, case, provider)
