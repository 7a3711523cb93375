"""pytest-benchmark suites: `pytest benchmarks/bench_<op>.py`. Device timings go into each row's extra_info."""

import pytest
import torch

from fastmix.bench import machine, run_case

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_ROWS: dict[int, dict] = {}  # run_case times every provider of a case at once; each case is timed once


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastmix"] = machine(DEVICE)


def bench_points(cases_of):
    """One pytest param per (case, provider) of an op's ``fastmix.benchcases.<op>.cases``."""
    cases = cases_of(DEVICE, quick=DEVICE.type != "cuda")
    return [pytest.param(case, provider, id=f"{'x'.join(map(str, case.shape))}-{str(case.dtype)[6:]}-{provider}")
            for case in cases for provider in case.providers]


def run_point(benchmark, case, provider):
    """Device-timed rows (median, floor, ratios) into extra_info, then pytest-benchmark's own host-clock timing,
    which waits for the device so it measures the work, not the launch."""
    if id(case) not in _ROWS:
        _ROWS[id(case)] = {row["provider"]: row for row in run_case(case, DEVICE, quick=True)}
    benchmark.extra_info.update(_ROWS[id(case)][provider])
    fn = case.providers[provider]
    if DEVICE.type == "cuda":
        def call():
            fn()
            torch.cuda.synchronize(DEVICE)
    else:
        call = fn
    benchmark(call)
