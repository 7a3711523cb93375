"""Build fastmix._C with CMake + ninja (the pybind11 cmake_example pattern). No torch needed to build.

Knobs: FASTMIX_BUILD_CUDA=0/1 (default: on when nvcc is found on PATH or under CUDA_HOME),
FASTMIX_CUDA_ARCHS (default "80;86;89;90", PTX added for the newest). CMake's own CUDACXX may name a clang instead of
nvcc: it then compiles the .cu files for the CUDA tree in CUDA_HOME (scripts/cuda12_toolkit.py assembles a CUDA 12
one), with that tree's ptxas and fatbinary.
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


def is_clang(compiler: str) -> bool:
    return Path(compiler).name.startswith("clang")


def cuda_compiler() -> str | None:
    """The CUDA compiler to build with (CUDACXX, else nvcc), or None for a CPU-only build."""
    wanted = os.environ.get("FASTMIX_BUILD_CUDA", "")
    if wanted not in ("", "0", "1"):
        sys.exit(f"FASTMIX_BUILD_CUDA must be 0 or 1, got {wanted!r}")
    if wanted == "0":
        return None
    compiler = os.environ.get("CUDACXX") or find_nvcc()
    if compiler is None:
        if wanted == "1":
            sys.exit("FASTMIX_BUILD_CUDA=1 but no nvcc was found on PATH or under CUDA_HOME")
        return None
    if shutil.which(compiler) is None:
        sys.exit(f"CUDACXX={compiler} is not an executable")
    if is_clang(compiler) and not os.environ.get("CUDA_HOME"):
        sys.exit(f"CUDACXX={compiler} is a clang: set CUDA_HOME to the CUDA tree it compiles for")
    return shutil.which(compiler)


def cuda_version_report(compiler: str) -> str:
    """`nvcc --version`, or clang's `-v` lines, which name the CUDA tree it found and that tree's version."""
    if is_clang(compiler):
        command = [compiler, "-v", f"--cuda-path={os.environ['CUDA_HOME']}"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stderr
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout


CUDA_COMPILER = cuda_compiler()
VERSION = load_version_module()
PACKAGE_VERSION = VERSION.__version__ + VERSION.cuda_local_version(
    cuda_version_report(CUDA_COMPILER) if CUDA_COMPILER else None
)


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
            f"-DFASTMIX_BUILD_CUDA={'ON' if CUDA_COMPILER else 'OFF'}",
            f"-DFASTMIX_CUDA_ARCHS={archs}",
        ]
        if CUDA_COMPILER and is_clang(CUDA_COMPILER):
            tree = Path(os.environ["CUDA_HOME"]).resolve()
            args += [f"-DFASTMIX_CUDA_CLANG={CUDA_COMPILER}", f"-DCUDAToolkit_ROOT={tree}"]
        elif CUDA_COMPILER:
            args.append(f"-DCMAKE_CUDA_COMPILER={CUDA_COMPILER}")
        subprocess.run(["cmake", *args], check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)


setup(
    version=PACKAGE_VERSION,
    packages=find_packages(include=["fastmix", "fastmix.*"]),
    ext_modules=[CMakeExtension("fastmix._C")],
    cmdclass={"build_ext": CMakeBuild},
)
