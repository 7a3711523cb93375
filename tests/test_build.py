"""The build: the wheel's CUDA local version, the driver guard, and `python -m fastmix info`."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from fastmix import _native
from fastmix._version import __version__, cuda_local_version

NVCC_13 = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\n"


def test_local_version_from_nvcc_output():
    assert cuda_local_version(NVCC_13) == "+cu130"
    assert cuda_local_version("Cuda compilation tools, release 12.8, V12.8.93") == "+cu128"
    assert cuda_local_version(None) == ""
    with pytest.raises(ValueError, match="release X.Y"):
        cuda_local_version("no version here")


@pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
def test_installed_version_names_the_cuda_build():
    installed = importlib.metadata.version("fastmix")
    C = _native._C
    suffix = f"+cu{C.cuda_build_version // 1000}{C.cuda_build_version % 1000 // 10}" if C.built_with_cuda else ""
    assert installed == __version__ + suffix


@pytest.mark.parametrize(
    "built,build,driver,devices,expected",
    [
        (False, 0, 0, 0, "built without CUDA"),
        (True, 13000, 0, 0, "no CUDA driver"),
        (True, 13000, 12080, 1, "supports CUDA 12.8, older than the CUDA 13.0"),
        (True, 13000, 13000, 0, "no CUDA device"),
        (True, 13000, 13020, 1, ""),
        (True, 12080, 13000, 2, ""),
    ],
)
def test_driver_guard(built, build, driver, devices, expected):
    reason = _native.cuda_unavailable_reason_for(built, build, driver, devices)
    assert (expected in reason) if expected else reason == ""


def test_info_command_lists_every_backend():
    result = subprocess.run([sys.executable, "-m", "fastmix", "info"], capture_output=True, text=True, check=True)
    for backend in ("cuda@cuda", "triton@cuda", "reference@cuda", "cuda@cpu", "triton@cpu", "reference@cpu"):
        assert backend in result.stdout
    assert "native core fastmix._C" in result.stdout
    if _native._C is not None:
        assert f"vectorised CPU kernels (gmm): {_native._C.gmm2_cpu_isas()[0]}" in result.stdout


def test_info_names_a_forced_cpu_isa_or_why_not():
    if _native._C is None:
        pytest.skip("fastmix._C is not built")
    for isa, expected in (("baseline", "(gmm): baseline"), ("sse9", "FASTMIX_CPU_ISA=sse9 is not one this CPU runs")):
        result = subprocess.run([sys.executable, "-m", "fastmix", "info"], capture_output=True, text=True, check=True,
                                env={**os.environ, "FASTMIX_CPU_ISA": isa})
        assert expected in result.stdout
