"""BalanceMix loss (eq. 10), forward + backward: the fused Triton kernel vs the reference vs the memory floor."""

import pytest
import torch

from conftest import synced
from fastmix.bench import run_case
from fastmix.benchcases import balancemix

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = balancemix.cases(DEVICE, quick=DEVICE.type != "cuda")
POINTS = [(case, provider) for case in CASES for provider in case.providers]


@pytest.mark.parametrize("case,provider", POINTS,
                         ids=[f"{c.shape[0]}x{c.shape[1]}-{str(c.dtype)[6:]}-{p}" for c, p in POINTS])
def test_balancemix_loss(benchmark, case, provider):
    rows = {row["provider"]: row for row in run_case(case, DEVICE, quick=True)}
    benchmark.extra_info.update(rows[provider])
    benchmark(synced(case.providers[provider], DEVICE))
