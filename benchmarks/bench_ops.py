"""Every op's cases from ``fastmix.benchcases`` under pytest-benchmark: ``pytest benchmarks/bench_ops.py``.

One test per (case, provider), the floor included. Each case's providers are first timed interleaved by
``fastmix.bench.run_case`` (device time, paired ratios, ops per call) into ``extra_info`` with the machine (device,
CPU, versions, commit); pytest-benchmark then times the provider with its own host clock, waiting for the device.
``FASTMIX_BENCH_FULL=1`` uses the full sizes of ``python -m fastmix bench`` instead of the quick ones.
"""

import os

import pytest
import torch

from conftest import DEVICE
from fastmix import bench

SETTINGS = bench.settings(quick=os.environ.get("FASTMIX_BENCH_FULL") != "1", device=DEVICE)
CASES = bench.all_cases(DEVICE, SETTINGS)
MACHINE = bench.machine(DEVICE, SETTINGS)
_ROWS: dict[int, dict] = {}  # run_case times all the providers of a case at once: each case is timed once


def case_id(case: bench.Case, provider: str) -> str:
    shape, dtype = "x".join(map(str, case.shape)), str(case.dtype).removeprefix("torch.")
    return f"{case.op.replace(' ', '_')}-{shape}-{dtype}-{provider}"


@pytest.mark.parametrize("case,provider", [pytest.param(case, provider, id=case_id(case, provider))
                                           for case in CASES for provider in (bench.FLOOR, *case.providers)])
def test_op(benchmark, case, provider):
    if id(case) not in _ROWS:
        _ROWS[id(case)] = {row["provider"]: row for row in
                           bench.run_case(case, DEVICE, SETTINGS, torch.get_num_threads())}
    benchmark.extra_info.update(_ROWS[id(case)][provider])
    benchmark.extra_info["machine"] = MACHINE
    fn = case.floor if provider == bench.FLOOR else case.providers[provider]

    def call():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)

    benchmark(call)
