"""Per-sample Mixup/CutMix: fastmix backends vs the reference vs timm-style and torchvision-style loops vs the floor."""

import pytest

from conftest import bench_points, run_point
from fastmix.benchcases import mix


@pytest.mark.parametrize("case,provider", bench_points(mix.cases))
def test_mix(benchmark, case, provider):
    run_point(benchmark, case, provider)
