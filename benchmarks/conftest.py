"""pytest-benchmark suites: `pytest benchmarks/bench_<op>.py`. Device timings go into each row's extra_info."""

import torch

from fastmix.bench import machine


def pytest_benchmark_update_machine_info(config, machine_info):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine_info["fastmix"] = machine(device)


def synced(fn, device):
    """pytest-benchmark's own clock is the host's: wait for the device so it measures the work, not the launch."""
    if device.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize(device)

    return call
