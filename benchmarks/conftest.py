"""pytest-benchmark suite setup: the machine (device, CPU, versions, commit) goes into every result."""

import torch

from fastmix.bench import machine

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastmix"] = machine(DEVICE)
