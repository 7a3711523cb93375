"""Build fastmix._C with CMake + ninja (the pybind11 cmake_example pattern). No torch needed to build.

Knobs: FASTMIX_BUILD_CUDA=0/1 (default: on when nvcc is found on PATH or under CUDA_HOME),
FASTMIX_CUDA_ARCHS (default "80;86;89;90", PTX added for the newest).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def load_version_module():
    spec = importlib.util.spec_from_file_location("fastmix_version", ROOT / "fastmix" / "_version.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def cuda_compiler() -> str | None:
    """The nvcc to build with, or None for a CPU-only build."""
    wanted = os.environ.get("FASTMIX_BUILD_CUDA", "")
    if wanted not in ("", "0", "1"):
        sys.exit(f"FASTMIX_BUILD_CUDA must be 0 or 1, got {wanted!r}")
    if wanted == "0":
        return None
    nvcc = find_nvcc()
    if nvcc is None and wanted == "1":
        sys.exit("FASTMIX_BUILD_CUDA=1 but no nvcc was found on PATH or under CUDA_HOME")
    return nvcc


NVCC = cuda_compiler()
NVCC_VERSION = subprocess.run([NVCC, "--version"], capture_output=True, text=True, check=True).stdout if NVCC else None
VERSION = load_version_module()
PACKAGE_VERSION = VERSION.__version__ + VERSION.cuda_local_version(NVCC_VERSION)


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        archs = os.environ.get("FASTMIX_CUDA_ARCHS", "80;86;89;90").replace(",", ";")
        args = [
            f"-S{ROOT}",
            f"-B{build_dir}",
            "-GNinja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DFASTMIX_BUILD_CUDA={'ON' if NVCC else 'OFF'}",
            f"-DFASTMIX_CUDA_ARCHS={archs}",
        ]
        if NVCC:
            args.append(f"-DCMAKE_CUDA_COMPILER={NVCC}")
        subprocess.run(["cmake", *args], check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)


setup(
    version=PACKAGE_VERSION,
    packages=find_packages(include=["fastmix", "fastmix.*"]),
    ext_modules=[CMakeExtension("fastmix._C")],
    cmdclass={"build_ext": CMakeBuild},
)
