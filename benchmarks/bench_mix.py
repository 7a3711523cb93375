"""Per-sample Mixup/CutMix: fastmix backends vs the reference vs timm-style and torchvision-style loops vs the floor."""

import pytest
import torch

from conftest import synced
from fastmix.bench import run_case
from fastmix.benchcases import mix

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = mix.cases(DEVICE, quick=DEVICE.type != "cuda")
POINTS = [(case, provider) for case in CASES for provider in case.providers]


@pytest.mark.parametrize("case,provider", POINTS,
                         ids=[f"{c.op}-{c.shape[0]}-{str(c.dtype)[6:]}-{p}" for c, p in POINTS])
def test_mix(benchmark, case, provider):
    rows = {row["provider"]: row for row in run_case(case, DEVICE, quick=True)}
    benchmark.extra_info.update(rows[provider])
    benchmark(synced(case.providers[provider], DEVICE))
